"""Adversarial tests of the gateway's path and header handling (no Docker: a local echo job).

Item 2: a path the gateway authorises as one endpoint must never reach the job as another
(encoded slashes, dot segments, double encoding, ...), for HTTP, WebSocket and async calls.
Item 9: a job's answer must never set or clear the daemon's cookies, and the job never sees them.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from racetrackd import db
from racetrackd.auth import access
from racetrackd.auth.access import CALL_JOB, GrantRule
from racetrackd.auth.accounts import Accounts
from racetrackd.errors import AmbiguousPath
from racetrackd.gateway import pathmapping
from racetrackd.plugins.jobtypes import FORWARD, Serving
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import (
    Daemons,
    Handler,
    LoopClient,
    Request,
    ServerConnection,
    Servers,
    UpstreamServer,
    add_job,
    reply,
)

pytestmark = pytest.mark.security

PREFIX = "/pub/job/adder/1.0.0"
PUBLIC = "/api/v1/perform"


@pytest.fixture
def job(daemon: Daemons, servers: Servers) -> tuple[LoopClient, UpstreamServer, Accounts]:
    """A daemon with auth on, the echo job adder 1.0.0 whose only public endpoint is /api/v1/perform."""
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    accounts: Accounts = daemon.accounts
    accounts.request_public_endpoints("adder", "1.0.0", [PUBLIC])
    accounts.set_public_endpoint(accounts.public_endpoints("adder", "1.0.0")[0].id, True, "admin")
    return client, server, accounts


def esc_token(accounts: Accounts, endpoint: str = "/api/v1/other") -> str:
    """An ESC allowed to call one endpoint of adder."""
    esc = accounts.create_esc("billing")
    accounts.add_grant(access.ESC, esc.id, GrantRule(CALL_JOB, "adder", endpoint=endpoint), "admin")
    token, _ = accounts.issue_token(access.ESC, esc.id)
    return token


@pytest.fixture
def esc_granted_public(job: tuple[LoopClient, UpstreamServer, Accounts]) -> dict[str, str]:
    """The headers of an ESC granted call_job on /api/v1/perform only (made once per test, not per example)."""
    return {"X-Racetrack-Auth": esc_token(job[2], PUBLIC)}


# --- item 2: the issue's reproduction --------------------------------------------------------------


def test_encoded_slashes_do_not_carry_an_anonymous_call_past_a_public_endpoint(
    job: tuple[LoopClient, UpstreamServer, Accounts],
) -> None:
    client, server, _ = job

    response = client.get(f"{PREFIX}%2Fapi%2Fv1%2Fperform/metrics")

    assert response.status_code == 400, response.data
    assert response.json["type"] == "ambiguous-path"
    assert "encoded '/' (%2F)" in response.json["error"]
    assert server.requests == []  # the job's metrics were never asked for


def test_an_esc_granted_one_endpoint_cannot_reach_another_through_encoded_slashes(
    job: tuple[LoopClient, UpstreamServer, Accounts],
) -> None:
    client, server, accounts = job
    token = esc_token(accounts, "/api/v1/other")

    allowed = client.get(f"{PREFIX}/api/v1/other", {"X-Racetrack-Auth": token})
    smuggled = client.get(f"{PREFIX}%2Fapi%2Fv1%2Fother/metrics", {"X-Racetrack-Auth": token})

    assert allowed.status_code == 200
    assert smuggled.status_code == 400
    assert [request.target for request in server.requests] == [f"{PREFIX}/api/v1/other"]


@pytest.mark.parametrize(
    ("rest", "named"),
    [
        ("/api%2Fv1%2Fperform/../metrics", "%2F"),
        ("/api/v1/perform%2F..%2Fmetrics", "%2F"),
        ("/api/v1/perform%2f..%2fmetrics", "%2F"),
        ("/api/v1/perform%5C..%5Cmetrics", "%5C"),
        ("/api/v1/perform/%252E%252E/metrics", "%25"),
        ("/api/v1/perform/%2E%2E/metrics", "'..'"),
        ("/api/v1/perform/.%2e/metrics", "'..'"),
        ("/api/v1/perform/../metrics", "'..'"),
        ("/api/v1/perform/./x", "'.'"),
        ("/api/v1/perform/..;/metrics", "'..;'"),
        ("/api/v1/perform%00/x", "control character (%00)"),
        ("/api/v1/perform%0A", "control character (%0A)"),
        ("/api/v1/perform%7f", "control character (%7F)"),
        ("/api/v1/perform//x", "empty segment"),
        ("/api/v1/perform/%zz", "malformed escape"),
        ("/api/v1/perform/%2", "malformed escape"),
        ("/api/v1/perform/%FF", "UTF-8"),
    ],
)
def test_ambiguous_paths_are_refused_with_400_naming_what(
    job: tuple[LoopClient, UpstreamServer, Accounts], rest: str, named: str
) -> None:
    client, server, _ = job

    response = client.get(PREFIX + rest)

    assert response.status_code == 400, response.data
    assert response.json["type"] == "ambiguous-path"
    assert named in response.json["error"]
    assert server.requests == []


@pytest.mark.parametrize("raw", [b"/api/v1/perform\\..\\metrics", b"/api/v1/perform/\x01", b"/api/v1/perform/\xc3\xa9"])
def test_raw_bytes_a_job_could_read_otherwise_are_refused(
    job: tuple[LoopClient, UpstreamServer, Accounts], raw: bytes
) -> None:
    client, server, _ = job

    response = client.request("GET", PREFIX + "/x", raw_path=PREFIX.encode() + raw)

    assert response.status_code == 400 and response.json["type"] == "ambiguous-path", response.data
    assert server.requests == []


def test_plain_encodings_still_reach_the_job_as_sent(job: tuple[LoopClient, UpstreamServer, Accounts]) -> None:
    client, server, _ = job

    response = client.get(f"{PREFIX}/api/v1/perform/a%20b%3Fc%23d/%C3%A9.json/")

    assert response.status_code == 200, response.data
    assert server.requests[0].target == f"{PREFIX}/api/v1/perform/a%20b%3Fc%23d/%C3%A9.json/"


def test_the_job_name_is_read_from_the_same_decoded_path(job: tuple[LoopClient, UpstreamServer, Accounts]) -> None:
    client, server, _ = job

    response = client.get("/pub/job/ad%64er/1.0.0/api/v1/perform")

    assert response.status_code == 200, response.data
    assert server.requests[0].target == f"{PREFIX}/api/v1/perform"


def test_a_proxied_jobs_metrics_are_not_reached_through_encoded_slashes(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("web", "1.0.0", addresses=[server.address], serving=Serving(port=8080, path_mode=FORWARD).to_json())
    accounts: Accounts = daemon.accounts
    accounts.request_public_endpoints("web", "1.0.0", [PUBLIC])
    accounts.set_public_endpoint(accounts.public_endpoints("web", "1.0.0")[0].id, True, "admin")

    smuggled = client.get("/pub/job/web/1.0.0%2Fapi%2Fv1%2Fperform/metrics")
    closed = client.get("/pub/job/web/1.0.0/metrics")

    assert smuggled.status_code == 400, smuggled.data
    assert closed.status_code == 401  # the daemon answers /metrics for a proxied job, to callers allowed it
    assert server.requests == []


def test_without_a_raw_path_from_the_server_the_decoded_one_is_encoded_again_and_checked() -> None:
    assert pathmapping.raw_path("/pub/job/a/1/x y/é", b"") == b"/pub/job/a/1/x%20y/%C3%A9"
    with pytest.raises(AmbiguousPath, match="%25"):  # a '%' left after the server decoded: refused
        pathmapping.checked_path(pathmapping.raw_path("/pub/job/a/1%2Fapi", None))


# --- item 2: WebSockets and async calls ---------------------------------------------------------------


def websocket_call(client: LoopClient, raw_path: bytes) -> list[dict[str, Any]]:
    """Open a WebSocket at `raw_path` without a token; the messages the gateway sent back."""
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"racetrack.test:7102")],
        "client": ("10.1.2.3", 50000),
        "server": ("127.0.0.1", 7102),
        "subprotocols": [],
    }
    sent: list[dict[str, Any]] = []
    inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await asyncio.sleep(5)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    client.run(client.app(scope, receive, send))
    return sent


def test_a_websocket_with_encoded_slashes_is_closed_before_the_job_is_reached(
    job: tuple[LoopClient, UpstreamServer, Accounts],
) -> None:
    client, server, _ = job

    sent = websocket_call(client, f"{PREFIX}%2Fapi%2Fv1%2Fperform/ws".encode())

    assert [message["type"] for message in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008 and "%2F" in sent[0]["reason"]
    assert server.requests == []


def test_an_async_call_with_encoded_slashes_is_refused_and_not_stored(
    job: tuple[LoopClient, UpstreamServer, Accounts],
) -> None:
    client, _, _ = job

    response = client.post("/pub/async/new/job/adder/1.0.0%2Fapi%2Fv1%2Fperform/metrics")

    assert response.status_code == 400, response.data
    assert db.AsyncTask.select().count() == 0


def test_an_async_call_stores_exactly_the_path_it_authorised(job: tuple[LoopClient, UpstreamServer, Accounts]) -> None:
    client, _, _ = job

    response = client.post("/pub/async/new/job/adder/1.0.0/api/v1/perform/a%20b")

    assert response.status_code == 201, response.data
    assert db.AsyncTask.get().target == f"{PREFIX}/api/v1/perform/a%20b"


# --- item 2: properties over arbitrary paths ---------------------------------------------------------

# Pieces that make paths interesting to a gateway: separators and their encodings, dots, escapes of
# escapes, path parameters, controls, non-ASCII, the public endpoint's own segments.
PIECES = [
    "/",
    "%2F",
    "%2f",
    "%5C",
    "\\",
    "%25",
    "%252F",
    "%2E",
    "%2e",
    ".",
    "..",
    ";",
    "%3B",
    "%00",
    "%0A",
    "%",
    "%G0",
    "%C3%A9",
    "%FF",
    "\xe9",
    "api",
    "v1",
    "perform",
    "metrics",
    "health",
    "x",
    "%20",
    "%3F",
    "~",
]
raw_rests = st.lists(st.sampled_from(PIECES), max_size=10).map(lambda pieces: "".join(pieces).encode("latin-1"))
# The version segment too: the issue's bypass hid the endpoint in it.
VERSIONS = [
    "1.0.0",
    "latest",
    "1.x",
    "1.0.0%2Fapi%2Fv1%2Fperform",
    "1.0.0%2fapi%2fv1",
    "1.0.0%252Fapi",
    "1.0.0;x",
    "1.0.0/api/v1/perform",
    "1.0.0/api/v1/perform/",
    "1.0.0/api/v1/perform/..",
    "1.0.0/health",
]
raw_paths = st.tuples(st.sampled_from(VERSIONS), raw_rests).map(
    lambda parts: b"/pub/job/adder/" + parts[0].encode() + b"/" + parts[1]
)


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def readings(target: str) -> list[str]:
    """The ways a job's server might read the path it is sent: decoded once (the python3 and Go
    wrappers), then cleaned of dot segments (Go's ServeMux, many frameworks), of `;params` (Java
    servers), or decoded twice (a framework behind a server that already decoded)."""
    once = unquote(target)
    unparameterised = "/".join(segment.partition(";")[0] for segment in once.split("/"))
    return [once, posixpath.normpath(once), posixpath.normpath(unparameterised), posixpath.normpath(unquote(once))]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=40) | raw_rests)
def test_checked_paths_decode_segment_for_segment(raw: bytes) -> None:
    """Any bytes: either refused (400) or decoded so that raw and decoded split into the same segments."""
    full = b"/pub/job/adder/1.0.0/" + raw
    try:
        path = pathmapping.checked_path(full)
    except AmbiguousPath:
        return
    raw_segments = full.split(b"/")
    assert [unquote_to_bytes(segment).decode() for segment in raw_segments] == path.split("/")
    call = pathmapping.parse_job_call(path, full, 2)
    assert call is not None
    target = pathmapping.job_path("wrapper", "adder", "1.0.0", call)
    assert target is not None and unquote(target.decode()) == PREFIX + call.endpoint


@pytest.mark.parametrize("caller", ["anonymous", "esc"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=raw_paths)
def test_no_path_authorised_as_one_endpoint_reaches_the_job_as_another(
    job: tuple[LoopClient, UpstreamServer, Accounts], esc_granted_public: dict[str, str], caller: str, raw: bytes
) -> None:
    """Through the gateway, with no token (the public endpoint and probes are open) or an ESC's
    (granted /api/v1/perform): refused (never 500, never forwarded), or forwarded to a path every
    reading of which stays within the public endpoint or a probe."""
    client, server, _ = job
    headers = esc_granted_public if caller == "esc" else {}
    server.requests.clear()

    response = client.request("GET", PREFIX + "/x", headers=headers, raw_path=raw)

    assert response.status_code in (200, 400, 401, 403, 404), response.data
    if response.status_code != 200:
        assert server.requests == []
        return
    [request] = server.requests
    open_prefixes = [PREFIX + endpoint for endpoint in (PUBLIC, *access.OPEN_JOB_PATHS)]
    for reading in readings(request.target):
        assert any(_within(reading.rstrip("/") or "/", prefix) for prefix in open_prefixes), (request.target, reading)


# --- item 9: the daemon's cookies never come from a job, nor go to one ------------------------------

DAEMON_SET_COOKIES = [
    "X-Racetrack-Auth=rtd_attackers_token; Path=/",
    "X-Racetrack-Auth=; Path=/; Max-Age=0",  # forced logout
    "X-Racetrack-Auth=rtd_attackers_token; Path=/dashboard; HttpOnly",
    "x-racetrack-auth=rtd_attackers_token",
    "X-RACETRACK-AUTH=x; Path=/lifecycle",
    " X-Racetrack-Auth =x",
    "=X-Racetrack-Auth=rtd_attackers_token; Path=/",  # nameless: browsers send the value alone
    "__Host-session=x; Path=/; Secure",
    "__HOST-csrf=x; Path=/; Secure",
]


def cookie_job(set_cookies: list[str]) -> Handler:
    """A job handler answering with these Set-Cookie headers and a harmless one of its own."""

    def handler(connection: ServerConnection, request: Request) -> None:
        headers = [("Set-Cookie", value) for value in set_cookies] + [
            ("Set-Cookie", "job_theme=dark; Path=/pub/job/adder")
        ]
        connection.send(reply(200, b"{}", [("Content-Type", "application/json"), *headers]))

    return handler


def test_a_jobs_set_cookie_for_the_daemons_cookies_never_reaches_the_browser(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers(cookie_job(DAEMON_SET_COOKIES))
    add_job("adder", "1.0.0", addresses=[server.address])

    response = client.get(f"{PREFIX}/api/v1/perform", {"X-Racetrack-Auth": ADMIN_TOKEN})

    assert response.status_code == 200, response.data
    assert response.all("set-cookie") == ["job_theme=dark; Path=/pub/job/adder"]


def test_an_async_answer_does_not_replay_the_daemons_cookies_either(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers().address])
    task = db.AsyncTask.create(
        job_name="adder",
        job_version="1.0.0",
        method="POST",
        target=f"{PREFIX}/api/v1/perform",
        request_headers="[]",
        request_body=b"",
        caller="admin",
        state=db.TaskState.COMPLETED,
        response_status=200,
        response_body=b"{}",
        response_headers=json.dumps([["set-cookie", value] for value in DAEMON_SET_COOKIES] + [["set-cookie", "a=1"]]),
        ended_at=db.now(),
    )

    response = client.get(f"/pub/async/task/{task.id}/poll", {"X-Racetrack-Auth": ADMIN_TOKEN})

    assert response.status_code == 200, response.data
    assert response.all("set-cookie") == ["a=1"]


@pytest.mark.parametrize(
    "cookie",
    [
        "X-Racetrack-Auth={token}; theme=dark",
        "theme=dark;x-racetrack-auth={token}",
        "theme=dark; __Host-X-Racetrack-Auth={token}",
        "theme=dark; X-Racetrack-Auth ={token}",
    ],
)
def test_the_job_never_sees_the_daemons_cookies(daemon: Daemons, servers: Servers, cookie: str) -> None:
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    response = client.get(
        f"{PREFIX}/api/v1/perform", {"X-Racetrack-Auth": ADMIN_TOKEN, "Cookie": cookie.format(token=ADMIN_TOKEN)}
    )

    assert response.status_code == 200, response.data
    assert server.requests[0].all("cookie") == ["theme=dark"]


def test_a_jobs_answer_cannot_clear_the_origins_cookies_or_widen_a_service_worker(
    daemon: Daemons, servers: Servers
) -> None:
    def handler(connection: ServerConnection, request: Request) -> None:
        connection.send(
            reply(
                200,
                b"self.onfetch = steal",
                [
                    ("Content-Type", "text/javascript"),
                    ("Clear-Site-Data", '"cookies", "storage"'),
                    ("Service-Worker-Allowed", "/"),
                    ("Cache-Control", "no-cache"),
                ],
            )
        )

    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers(handler).address])

    response = client.get(f"{PREFIX}/api/v1/webview/sw.js", {"X-Racetrack-Auth": ADMIN_TOKEN})

    assert response.status_code == 200, response.data
    assert response.header("clear-site-data") is None  # would log the user out of the dashboard
    assert response.header("service-worker-allowed") is None  # a worker scoped to / would control the dashboard
    assert response.header("cache-control") == "no-cache"  # the job's other headers pass


def test_a_second_auth_cookie_planted_by_a_page_is_refused_not_obeyed(daemon: Daemons, servers: Servers) -> None:
    """A job's page can set X-Racetrack-Auth with a narrower path (its own token); browsers then send
    both, the planted one first. Obeying it would log the visitor in as the attacker."""
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])

    response = client.get(
        f"{PREFIX}/api/v1/perform", {"Cookie": f"X-Racetrack-Auth=attackers-token; X-Racetrack-Auth={ADMIN_TOKEN}"}
    )

    assert response.status_code == 401, response.data
    assert "several different X-Racetrack-Auth cookies" in json.loads(response.data)["error"]
    assert server.requests == []
    same_twice = client.get(
        f"{PREFIX}/api/v1/perform", {"Cookie": f"X-Racetrack-Auth={ADMIN_TOKEN}; X-Racetrack-Auth={ADMIN_TOKEN}"}
    )
    assert same_twice.status_code == 200, same_twice.data
