"""Who may call a job through the gateway (/pub): tokens, call_job grants down to one endpoint, open
probe paths, approved public endpoints, failure limits, and what the job learns about its caller."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from racetrackd.auth import access
from racetrackd.auth.access import CALL_JOB, GrantRule
from racetrackd.auth.accounts import Accounts
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import Daemons, LoopClient, Response, Servers, UpstreamServer, add_job

PERFORM = "/pub/job/adder/1.0.0/api/v1/perform"


@pytest.fixture
def job(daemon: Daemons, servers: Servers) -> tuple[LoopClient, UpstreamServer]:
    """A daemon (auth required, 3 failures allowed) and the echo job adder 1.0.0 on a local server."""
    client = daemon(auth_failure_limit="3")
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    return client, server


@pytest.fixture
def accounts(daemon: Daemons, job: tuple[LoopClient, UpstreamServer]) -> Accounts:
    made: Accounts = daemon.accounts
    return made


def token_of(accounts: Accounts, username: str = "bob", *grants: GrantRule, default_grants: bool = False) -> str:
    accounts.create_user(username, default_grants=default_grants)
    for rule in grants:
        accounts.add_grant(access.USER, username, rule, "admin")
    token, _ = accounts.issue_token(access.USER, username)
    return token


def auth(token: str) -> dict[str, str]:
    return {"X-Racetrack-Auth": token}


def seen_headers(response: Response) -> dict[str, list[str]]:
    """The headers the echo job says it received."""
    assert response.status_code == 200, response.data
    headers: dict[str, list[str]] = {}
    for name, value in response.json["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


def assert_refused(response: Response, status: int, error_type: str) -> dict[str, Any]:
    """A JSON refusal naming the job and the request, as the gateway answers every error."""
    assert response.status_code == status, response.data
    assert response.header("content-type") == "application/json"
    body = dict(response.json)
    assert body["type"] == error_type
    assert (body["job_name"], body["job_version"]) == ("adder", "1.0.0")
    assert body["request_id"] and body["request_id"] == response.header("x-request-tracing-id")
    return body


def eventually(check: Callable[[], bool], seconds: float = 2.0) -> None:
    """The routing table follows the registry from a background thread, every 0.1 s."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the gateway did not pick up the change"
        time.sleep(0.05)


# --- no token, bad token, no grant ------------------------------------------------------------------


def test_no_token_is_401_json_naming_the_job_and_request(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job

    response = client.post(PERFORM, b"{}", {"X-Request-Tracing-Id": "trace-1"})

    body = assert_refused(response, 401, "unauthorized")
    assert body["request_id"] == "trace-1"
    assert "X-Racetrack-Auth" in body["error"]
    assert server.requests == []


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.mark.parametrize(
    ("path", "back"),
    [
        ("/pub/job/adder/1.0.0/", "/pub/job/adder/1.0.0/"),
        ("/pub/job/adder/latest/page?x=1&y=%2F", "/pub/job/adder/latest/page?x=1&y=%2F"),
        ("/pub/fatman/adder/1.0.0/a%20b", "/pub/fatman/adder/1.0.0/a%20b"),
    ],
)
@pytest.mark.parametrize("cookie", [None, "X-Racetrack-Auth=rtd_expired"])
def test_a_browser_without_a_login_is_sent_to_the_dashboard_login_and_back(
    job: tuple[LoopClient, UpstreamServer], path: str, back: str, cookie: str | None
) -> None:
    client, server = job
    headers = {**HTML, **({"Cookie": cookie} if cookie else {})}

    for method in ("GET", "HEAD"):
        response = client.request(method, path, b"", headers)

        assert response.status_code == 303, response.data
        location = urlsplit(response.header("location") or "")
        assert location.path == "/dashboard/login"
        assert parse_qs(location.query) == {"next": [back]}
    assert server.requests == []


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),  # an API client
        ("GET", {"Accept": "application/json"}),
        ("POST", HTML),  # a form post: redirecting would lose its body
        ("GET", {**HTML, "X-Racetrack-Auth": "rtd_wrong"}),  # a wrong token is a client's mistake to be told
        ("GET", {**HTML, "Cookie": "X-Racetrack-Auth=rtd_a; X-Racetrack-Auth=rtd_b"}),  # a planted cookie
    ],
)
def test_api_clients_and_wrong_header_tokens_keep_the_401_json(
    job: tuple[LoopClient, UpstreamServer], method: str, headers: dict[str, str]
) -> None:
    client, server = job

    assert_refused(client.request(method, "/pub/job/adder/1.0.0/", b"", headers), 401, "unauthorized")
    assert server.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Racetrack-Auth": "rtd_wrong"},
        {"X-Racetrack-User-Auth": "rtd_wrong"},
        {"Cookie": "X-Racetrack-Auth=rtd_wrong"},
    ],
)
def test_a_wrong_token_is_401(job: tuple[LoopClient, UpstreamServer], headers: dict[str, str]) -> None:
    client, server = job

    body = assert_refused(client.post(PERFORM, b"{}", headers), 401, "unauthorized")

    assert body["error"] == "invalid, expired or revoked auth token"
    assert server.requests == []


@pytest.mark.parametrize(
    "path",
    ["/pub/job/ghost/1.0.0/api/v1/perform", "/pub/job/ghost/latest/health", "/pub/job/adder/9.9.9/api/v1/perform"],
)
def test_an_unknown_job_is_401_without_a_valid_token_so_strangers_learn_no_job_names(
    job: tuple[LoopClient, UpstreamServer], path: str
) -> None:
    client, _ = job

    anonymous = client.post(path, b"{}", {})
    wrong = client.post(path, b"{}", auth("rtd_wrong"))
    known = client.post(path, b"{}", auth(ADMIN_TOKEN))

    assert (anonymous.status_code, wrong.status_code, known.status_code) == (401, 401, 404)
    assert anonymous.json["type"] == wrong.json["type"] == "unauthorized"
    assert known.json["type"] == "job-not-found"


def test_a_user_without_call_job_is_403_naming_the_scope(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, server = job
    token = token_of(accounts, "bob", GrantRule(access.READ_JOB))

    body = assert_refused(client.post(PERFORM, b"{}", auth(token)), 403, "forbidden")

    assert body["error"] == ("bob may not call job adder 1.0.0 (endpoint /api/v1/perform): it lacks the call_job scope")
    assert "rtd grant add user:bob call_job --job adder" in body["hint"]
    assert server.requests == []


def test_a_new_user_may_call_every_job(job: tuple[LoopClient, UpstreamServer], accounts: Accounts) -> None:
    client, _ = job
    token = token_of(accounts, "bob", default_grants=True)

    assert seen_headers(client.post(PERFORM, b"{}", auth(token)))["x-caller-name"] == ["bob"]


def test_a_call_job_grant_on_another_family_does_not_reach_this_one(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, _ = job
    token = token_of(accounts, "bob", GrantRule(CALL_JOB, "other"))

    assert_refused(client.get("/pub/job/adder/1.0.0/", auth(token)), 403, "forbidden")


def test_a_version_grant_follows_the_alias_to_its_version(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts, servers: Servers
) -> None:
    client, _ = job
    add_job("adder", "2.0.0", addresses=[servers().address])
    token = token_of(accounts, "bob", GrantRule(CALL_JOB, "adder", "1.0.0"))

    assert client.get("/pub/job/adder/1.0.0/x", auth(token)).status_code == 200
    assert client.get("/pub/job/adder/1.x/x", auth(token)).status_code == 200
    assert client.get("/pub/job/adder/2.0.0/x", auth(token)).status_code == 403
    assert client.get("/pub/job/adder/latest/x", auth(token)).status_code == 403  # latest is 2.0.0


# --- endpoint grants ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/perform", 200),
        ("/api/v1/perform/", 200),
        ("/api/v1/perform/deeper?x=1", 200),
        ("/api/v1/other", 403),
        ("/api/v1/performance", 403),
        ("/api/v1", 403),
        ("/", 403),
        ("/api/v1/perform/../other", 400),  # ambiguous paths are refused before any check (pathmapping.checked_path)
        ("/api/v1/perform/%2e%2e/other", 400),
        ("/api/v1/perform/..%2Fother", 400),
    ],
)
def test_an_endpoint_grant_allows_that_endpoint_only(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts, path: str, status: int
) -> None:
    client, server = job
    token = token_of(accounts, "bob", GrantRule(CALL_JOB, "adder", endpoint="/api/v1/perform"))

    response = client.get(f"/pub/job/adder/1.0.0{path}", auth(token))

    assert response.status_code == status, response.data
    assert len(server.requests) == (1 if status == 200 else 0)


def test_an_endpoint_grant_covers_the_legacy_fatman_path_too(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, _ = job
    token = token_of(accounts, "bob", GrantRule(CALL_JOB, "adder", endpoint="/api/v1/perform"))

    assert client.post("/pub/fatman/adder/1.0.0/api/v1/perform", b"{}", auth(token)).status_code == 200
    assert client.post("/pub/fatman/adder/1.0.0/api/v1/other", b"{}", auth(token)).status_code == 403


# --- job families and ESCs ------------------------------------------------------------------------------


def test_a_family_to_family_grant_lets_a_jobs_token_call(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts, servers: Servers
) -> None:
    client, _ = job
    add_job("caller", "1.0.0")
    add_job("third", "1.0.0", addresses=[servers().address])
    token = accounts.family_token("caller")
    assert_refused(client.get("/pub/job/adder/1.0.0/", auth(token)), 403, "forbidden")

    accounts.add_grant(access.JOB_FAMILY, "caller", GrantRule(CALL_JOB, "adder"), "admin")

    assert seen_headers(client.get("/pub/job/adder/1.0.0/", auth(token)))["x-caller-name"] == ["Job family caller"]
    assert client.get("/pub/job/third/1.0.0/", auth(token)).status_code == 403


def test_an_esc_is_named_to_the_job(job: tuple[LoopClient, UpstreamServer], accounts: Accounts) -> None:
    client, _ = job
    esc = accounts.create_esc("billing", "billing-1")
    accounts.add_grant(access.ESC, esc.id, GrantRule(CALL_JOB, "adder"), "admin")
    token, _ = accounts.issue_token(access.ESC, esc.id)

    assert seen_headers(client.get("/pub/job/adder/1.0.0/", auth(token)))["x-caller-name"] == ["ESC billing-1"]


# --- open paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/live", "/ready", "/ready?verbose=1"])
def test_a_jobs_probe_paths_are_open_without_a_token(job: tuple[LoopClient, UpstreamServer], path: str) -> None:
    client, server = job

    headers = seen_headers(client.get(f"/pub/job/adder/1.0.0{path}"))

    assert "x-caller-name" not in headers
    assert len(server.requests) == 1


@pytest.mark.parametrize("path", ["/healthz", "/liveness", "/api/v1/health", "/health/details", "/ready/admin"])
def test_paths_that_only_look_like_probes_are_closed(job: tuple[LoopClient, UpstreamServer], path: str) -> None:
    client, server = job

    assert_refused(client.get(f"/pub/job/adder/1.0.0{path}"), 401, "unauthorized")
    assert server.requests == []


@pytest.mark.parametrize("path", ["/health/../api/v1/perform", "/health/%2e%2e/api/v1/perform"])
def test_dot_segments_after_a_probe_path_are_refused(job: tuple[LoopClient, UpstreamServer], path: str) -> None:
    client, server = job

    response = client.get(f"/pub/job/adder/1.0.0{path}")

    assert response.status_code == 400 and response.json["type"] == "ambiguous-path", response.data
    assert server.requests == []


def test_a_probe_path_with_a_good_token_names_the_caller(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    assert seen_headers(client.get("/pub/job/adder/1.0.0/health", auth(ADMIN_TOKEN)))["x-caller-name"] == ["admin"]


def test_a_probe_path_with_a_bad_token_is_still_open(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/health", auth("rtd_wrong")))

    assert "x-caller-name" not in headers
    assert "x-racetrack-auth" not in headers


def test_a_public_endpoint_is_closed_until_approved_and_after_it_is_closed_again(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts, servers: Servers
) -> None:
    client, server = job
    add_job("adder", "2.0.0", addresses=[servers().address])
    client.startup()  # the routing table follows the registry from now on
    accounts.request_public_endpoints("adder", "1.0.0", ["/api/v1/public"])
    accounts.request_public_endpoints("adder", "2.0.0", ["/api/v1/public"])
    time.sleep(0.4)  # a request alone opens nothing, even once the table has reloaded
    assert_refused(client.get("/pub/job/adder/1.0.0/api/v1/public"), 401, "unauthorized")

    request_id = accounts.public_endpoints("adder", "1.0.0")[0].id
    accounts.set_public_endpoint(request_id, True, "admin")

    eventually(lambda: client.get("/pub/job/adder/1.0.0/api/v1/public/item").status_code == 200)
    assert client.get("/pub/job/adder/1.0.0/api/v1/public").status_code == 200
    assert client.get("/pub/job/adder/1.0.0/api/v1/perform").status_code == 401
    assert client.get("/pub/job/adder/1.0.0/api/v1/public/../perform").status_code == 400
    assert client.get("/pub/job/adder/1.0.0/api/v1/publicity").status_code == 401
    assert client.get("/pub/job/adder/2.0.0/api/v1/public").status_code == 401  # approved for 1.0.0 only

    accounts.set_public_endpoint(request_id, False, "admin")

    eventually(lambda: client.get("/pub/job/adder/1.0.0/api/v1/public").status_code == 401)


# --- changes take effect at once ---------------------------------------------------------------------


def test_a_revoked_token_is_refused_on_the_very_next_call(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, server = job
    accounts.create_user("bob")
    token, row = accounts.issue_token(access.USER, "bob")
    assert client.get("/pub/job/adder/1.0.0/", auth(token)).status_code == 200

    accounts.revoke_token(row.id)

    assert_refused(client.get("/pub/job/adder/1.0.0/", auth(token)), 401, "unauthorized")
    assert len(server.requests) == 1


def test_a_removed_grant_is_refused_on_the_very_next_call(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, _ = job
    token = token_of(accounts, "bob")
    grant = accounts.add_grant(access.USER, "bob", GrantRule(CALL_JOB, "adder"), "admin")
    assert client.get("/pub/job/adder/1.0.0/", auth(token)).status_code == 200

    accounts.remove_grant(grant.id)

    assert_refused(client.get("/pub/job/adder/1.0.0/", auth(token)), 403, "forbidden")


def test_a_deactivated_user_is_refused_on_the_very_next_call(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, _ = job
    token = token_of(accounts, "bob", default_grants=True)
    assert client.get("/pub/job/adder/1.0.0/", auth(token)).status_code == 200

    accounts.update_user("bob", {"is_active": False})

    assert_refused(client.get("/pub/job/adder/1.0.0/", auth(token)), 401, "unauthorized")


# --- too many failures -----------------------------------------------------------------------------------


def test_429_with_retry_after_once_an_address_failed_too_often(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job
    assert client.get("/pub/job/adder/1.0.0/", auth(ADMIN_TOKEN)).status_code == 200  # known good
    for attempt in range(3):
        assert_refused(client.get("/pub/job/adder/1.0.0/", auth(f"rtd_guess-{attempt}")), 401, "unauthorized")

    response = client.get("/pub/job/adder/1.0.0/", auth("rtd_guess-3"))

    body = assert_refused(response, 429, "too-many-auth-failures")
    retry_after = int(response.header("retry-after") or "0")
    assert 0 < retry_after <= 61
    assert f"{retry_after} s" in body["error"]
    assert len(server.requests) == 1
    assert client.get("/pub/job/adder/1.0.0/", auth(ADMIN_TOKEN)).status_code == 200
    assert (
        client.request("GET", "/pub/job/adder/1.0.0/", headers=auth("rtd_typo"), client=("10.9.9.9", 1234)).status_code
        == 401
    )  # another address: a plain 401


def test_a_blocked_address_may_still_call_open_paths(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job
    for attempt in range(4):
        client.get("/pub/job/adder/1.0.0/", auth(f"rtd_guess-{attempt}"))

    assert client.get("/pub/job/adder/1.0.0/health").status_code == 200
    assert client.get("/pub/job/adder/1.0.0/health", auth("rtd_guess")).status_code == 200


# --- what the job learns about its caller ------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Racetrack-Auth", "X-Racetrack-User-Auth", "X-Racetrack-Esc-Auth"])
def test_the_callers_token_never_reaches_the_job_in_a_header(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts, header: str
) -> None:
    client, server = job
    token = token_of(accounts, "bob", default_grants=True)

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/", {header: token, "X-Other": "kept"}))

    assert headers["x-other"] == ["kept"]
    assert header.lower() not in headers
    assert token not in server.requests[0].body.decode()
    assert not any(token in value for _, value in server.requests[0].headers)


def test_the_callers_token_never_reaches_the_job_in_a_cookie(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, server = job
    token = token_of(accounts, "bob", default_grants=True)

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/", {"Cookie": f"theme=dark; X-Racetrack-Auth={token}"}))

    assert headers["cookie"] == ["theme=dark"]
    assert headers["x-caller-name"] == ["bob"]
    assert not any(token in value for _, value in server.requests[0].headers)


def test_x_caller_name_names_the_user_and_cannot_be_forged(
    job: tuple[LoopClient, UpstreamServer], accounts: Accounts
) -> None:
    client, _ = job
    token = token_of(accounts, "bob", default_grants=True)

    forged = seen_headers(client.get("/pub/job/adder/1.0.0/", {**auth(token), "X-Caller-Name": "admin"}))
    anonymous = seen_headers(client.get("/pub/job/adder/1.0.0/health", {"X-Caller-Name": "admin"}))

    assert forged["x-caller-name"] == ["bob"]
    assert "x-caller-name" not in anonymous


def test_with_auth_off_a_known_token_still_names_the_caller(daemon: Daemons, servers: Servers) -> None:
    client = daemon(auth_required="false")
    add_job("adder", "1.0.0", addresses=[servers().address])
    daemon.accounts.create_user("bob", default_grants=False)
    token, _ = daemon.accounts.issue_token(access.USER, "bob")

    assert seen_headers(client.get("/pub/job/adder/1.0.0/", auth(token)))["x-caller-name"] == ["bob"]
    assert "x-caller-name" not in seen_headers(client.get("/pub/job/adder/1.0.0/", auth("rtd_unknown")))
