"""The gateway (/pub) through create_asgi_app, forwarding to a real job server on 127.0.0.1."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from racetrackd import db, maintenance
from racetrackd.auth.access import GrantRule
from racetrackd.errors import UpstreamError
from racetrackd.jobs import waking
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.gateway_helpers import (
    Daemons,
    LoopClient,
    Request,
    Response,
    ServerConnection,
    Servers,
    UpstreamServer,
    add_job,
    echo,
    free_port,
    reply,
)

AUTH = {"X-Racetrack-Auth": ADMIN_TOKEN}


@pytest.fixture
def job(daemon: Daemons, servers: Servers) -> tuple[LoopClient, UpstreamServer]:
    """A daemon and the echo job adder 1.0.0 running on a local server."""
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    return client, server


def seen(response: Response) -> dict[str, Any]:
    """What the echo job says it received."""
    assert response.status_code == 200, response.data
    return dict(response.json)


def seen_headers(response: Response) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in seen(response)["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


def assert_error(
    response: Response, status: int, error_type: str, name: str | None = "adder", version: str | None = "1.0.0"
) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.header("content-type") == "application/json"
    body = dict(response.json)
    assert body["type"] == error_type
    assert isinstance(body["error"], str) and body["error"]
    assert (body["job_name"], body["job_version"]) == (name, version)
    assert body["request_id"] == response.header("x-request-tracing-id")
    return body


# --- forwarding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_a_call_is_forwarded_with_its_method_path_query_and_body(
    job: tuple[LoopClient, UpstreamServer], method: str
) -> None:
    client, server = job
    body = b'{"a": 40, "b": 2}' if method != "GET" else b""

    response = client.request(
        method, "/pub/job/adder/1.0.0/api/v1/perform?x=1&y=a%2Fb", body, {**AUTH, "Content-Type": "application/json"}
    )

    got = seen(response)
    assert got["method"] == method
    assert got["target"] == "/pub/job/adder/1.0.0/api/v1/perform?x=1&y=a%2Fb"
    assert got["body"] == body.decode()
    assert len(server.requests) == 1


def test_the_job_side_path_names_the_resolved_version_and_keeps_the_rest_as_sent(
    daemon: Daemons, servers: Servers
) -> None:
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    add_job("adder", "1.2.0", addresses=[server.address])

    latest = seen(client.get("/pub/job/adder/latest/files/a%20b/c%3Fd?q=%C3%A9", AUTH))
    pattern = seen(client.get("/pub/job/adder/1.0.x/x", AUTH))
    legacy = seen(client.get("/pub/fatman/adder/1.x/api/v1/perform", AUTH))

    assert latest["target"] == "/pub/job/adder/1.2.0/files/a%20b/c%3Fd?q=%C3%A9"
    assert pattern["target"] == "/pub/job/adder/1.0.0/x"
    assert legacy["target"] == "/pub/job/adder/1.2.0/api/v1/perform"


def test_a_path_ending_at_the_version_is_forwarded_not_redirected(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job

    response = client.get("/pub/job/adder/latest", AUTH)

    assert seen(response)["target"] == "/pub/job/adder/1.0.0/"
    assert response.header("location") is None


def test_the_job_gets_forwarding_headers_and_the_callers_own(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job

    response = client.request(
        "POST",
        "/pub/job/adder/latest/api/v1/perform",
        b"{}",
        {
            **AUTH,
            "Content-Type": "application/json",
            "Accept": "text/plain",
            "X-Custom": "kept",
            "Host": "racetrack.example.com",
        },
        client=("10.9.8.7", 41000),
    )

    headers = seen_headers(response)
    assert headers["host"] == [server.address]
    assert headers["x-forwarded-for"] == ["10.9.8.7"]
    assert headers["x-forwarded-host"] == ["racetrack.example.com"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-prefix"] == ["/pub/job/adder/latest"]
    assert headers["x-caller-name"] == ["admin"]
    assert headers["x-custom"] == ["kept"] and headers["accept"] == ["text/plain"]
    assert headers["content-type"] == ["application/json"]
    assert headers["content-length"] == ["2"]
    assert headers["x-request-tracing-id"] == [response.header("x-request-tracing-id")]
    uuid.UUID(headers["x-request-tracing-id"][0])  # made up when the caller sent none


def test_forwarding_headers_from_a_proxy_in_front_are_extended(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    headers = seen_headers(
        client.get(
            "/pub/job/adder/1.0.0/",
            {
                **AUTH,
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Host": "public.example.com",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Prefix": "/evil",
            },
        )
    )

    assert headers["x-forwarded-for"] == ["203.0.113.9, 10.1.2.3"]
    assert headers["x-forwarded-host"] == ["public.example.com"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-prefix"] == ["/pub/job/adder/1.0.0"]  # the gateway's own, not the caller's


@pytest.mark.parametrize(
    ("cookie", "forwarded"),
    [
        (f"a=1; X-Racetrack-Auth={ADMIN_TOKEN}; b=2", ["a=1; b=2"]),
        (f"X-Racetrack-Auth={ADMIN_TOKEN}; session=xyz", ["session=xyz"]),
        (f"X-Racetrack-Auth={ADMIN_TOKEN}", None),
        ("theme=dark", ["theme=dark"]),
    ],
)
def test_the_callers_token_does_not_reach_the_job(
    job: tuple[LoopClient, UpstreamServer], cookie: str, forwarded: list[str] | None
) -> None:
    client, _ = job

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/", {**AUTH, "Cookie": cookie}))

    assert headers.get("cookie") == forwarded
    assert not {"x-racetrack-auth", "x-racetrack-user-auth", "x-racetrack-esc-auth"} & set(headers)
    assert not any(ADMIN_TOKEN in value for values in headers.values() for value in values)


@pytest.mark.parametrize("header", ["X-Racetrack-User-Auth", "X-Racetrack-Esc-Auth"])
def test_legacy_auth_headers_authenticate_and_are_not_forwarded(
    job: tuple[LoopClient, UpstreamServer], header: str
) -> None:
    client, _ = job

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/", {header: ADMIN_TOKEN}))

    assert header.lower() not in headers


def test_a_token_in_a_cookie_alone_authenticates(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/", {"Cookie": f"X-Racetrack-Auth={ADMIN_TOKEN}"}))

    assert "cookie" not in headers and headers["x-caller-name"] == ["admin"]


def test_a_job_familys_token_calls_as_that_family(job: tuple[LoopClient, UpstreamServer], daemon: Daemons) -> None:
    client, _ = job
    add_job("caller", "1.0.0")
    token = daemon.accounts.family_token("caller")
    daemon.accounts.add_grant("job_family", "caller", GrantRule("call_job", "adder"), "test")

    headers = seen_headers(client.get("/pub/job/adder/1.0.0/", {"X-Racetrack-Auth": token}))

    assert headers["x-caller-name"] == ["Job family caller"]


def test_hop_by_hop_headers_go_no_further_either_way(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers(
        lambda connection, request: (
            echo(connection, request)
            if request.target.endswith("/in")
            else connection.send(
                reply(
                    200,
                    b"out",
                    [
                        ("X-Job", "yes"),
                        ("Keep-Alive", "timeout=75"),
                        ("Connection", "keep-alive"),
                        ("X-Request-Tracing-Id", "made-up-by-the-job"),
                    ],
                )
            )
        )
    )
    add_job("adder", "1.0.0", addresses=[server.address])

    inbound = seen_headers(
        client.get(
            "/pub/job/adder/1.0.0/in",
            {
                **AUTH,
                "Connection": "keep-alive, X-Private-Hop",
                "X-Private-Hop": "secret",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic Zm9v",
                "X-Caller-Name": "forged",
            },
        )
    )
    outbound = client.get("/pub/job/adder/1.0.0/out", {**AUTH, "X-Request-Tracing-Id": "trace-1"})

    assert not {"connection", "x-private-hop", "keep-alive", "te", "proxy-authorization"} & set(inbound)
    assert inbound["x-caller-name"] == ["admin"]  # not the caller's claim
    assert outbound.status_code == 200 and outbound.data == b"out"
    assert outbound.header("x-job") == "yes"
    assert outbound.header("keep-alive") is None and outbound.header("connection") is None
    assert outbound.all("x-request-tracing-id") == ["trace-1"]


def test_the_callers_tracing_id_is_passed_on_and_echoed(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    response = client.get("/pub/job/adder/1.0.0/", {**AUTH, "X-Request-Tracing-Id": "trace-42"})
    error = client.get("/pub/job/nothing/1.0.0/", {**AUTH, "X-Request-Tracing-Id": "trace-43"})

    assert seen_headers(response)["x-request-tracing-id"] == ["trace-42"]
    assert response.header("x-request-tracing-id") == "trace-42"
    assert error.json["request_id"] == "trace-43" and error.header("x-request-tracing-id") == "trace-43"


def test_the_jobs_status_headers_and_body_come_back(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers(
        lambda connection, request: connection.send(
            reply(
                418,
                b'{"teapot": true}',
                [("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
                reason="I'm a teapot",
            )
        )
    )
    add_job("adder", "1.0.0", addresses=[server.address])

    response = client.get("/pub/job/adder/1.0.0/", AUTH)

    assert response.status_code == 418
    assert response.json == {"teapot": True}
    assert response.all("set-cookie") == ["a=1", "b=2"]
    assert response.header("content-type") == "application/json"


def test_a_chunked_answer_is_streamed_to_the_caller(daemon: Daemons, servers: Servers) -> None:
    def chunked(connection: ServerConnection, request: Request) -> None:
        connection.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"one,", b"two,", b"three"):
            connection.send(b"%x\r\n%b\r\n" % (len(piece), piece))
            time.sleep(0.02)
        connection.send(b"0\r\n\r\n")

    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers(chunked).address])

    response = client.get("/pub/job/adder/1.0.0/stream", AUTH)

    assert response.status_code == 200 and response.data == b"one,two,three"
    assert len(response.chunks) > 1  # passed on as it came, not gathered first
    assert response.header("transfer-encoding") is None  # the ASGI server frames it anew


def test_an_answer_that_ends_when_the_job_closes_the_connection_arrives_whole(
    daemon: Daemons, servers: Servers
) -> None:
    def until_close(connection: ServerConnection, request: Request) -> bool:
        connection.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nall ")
        time.sleep(0.02)
        connection.send(b"of it")
        return False

    client = daemon()
    add_job("adder", "1.0.0", addresses=[servers(until_close).address])

    responses = [client.get("/pub/job/adder/1.0.0/", AUTH) for _ in range(2)]

    assert [(r.status_code, r.data) for r in responses] == [(200, b"all of it")] * 2


def test_large_and_chunked_request_bodies_are_streamed_to_the_job(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job
    big = [bytes([65 + i % 26]) * 50_000 for i in range(4)]  # 200 kB: more than the gateway reads whole

    sized = client.request(
        "POST", "/pub/job/adder/1.0.0/upload", headers={**AUTH, "Content-Length": "200000"}, chunks=big
    )
    chunked = client.request(
        "POST",
        "/pub/job/adder/1.0.0/upload",
        headers={**AUTH, "Transfer-Encoding": "chunked"},
        chunks=[b"part1-", b"", b"part2"],
    )

    assert sized.status_code == 200 and chunked.status_code == 200
    assert server.requests[0].body == b"".join(big) and server.requests[0].header("content-length") == "200000"
    assert server.requests[1].body == b"part1-part2" and server.requests[1].chunked


def test_a_head_call_answers_the_jobs_headers_and_keeps_the_connection(daemon: Daemons, servers: Servers) -> None:
    def head_or_echo(connection: ServerConnection, request: Request) -> None:
        if request.method == "HEAD":
            connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nContent-Type: text/csv\r\n\r\n")
        else:
            echo(connection, request)

    client = daemon()
    server = servers(head_or_echo)
    add_job("adder", "1.0.0", addresses=[server.address])

    head = client.request("HEAD", "/pub/job/adder/1.0.0/export", headers=AUTH)
    after = client.get("/pub/job/adder/1.0.0/after", AUTH)

    assert head.status_code == 200 and head.data == b""
    assert head.header("content-length") == "5000" and head.header("content-type") == "text/csv"
    assert seen(after)["target"] == "/pub/job/adder/1.0.0/after"
    assert server.accepts == 1


@pytest.mark.parametrize("size", [100, 200_000], ids=["small", "streamed"])
def test_a_caller_gone_mid_upload_gets_no_answer_and_the_job_no_whole_request(
    job: tuple[LoopClient, UpstreamServer], size: int
) -> None:
    client, server = job
    sent: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"x" * (size // 2), "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/pub/job/adder/1.0.0/upload",
        "raw_path": b"/pub/job/adder/1.0.0/upload",
        "query_string": b"",
        "headers": [(b"x-racetrack-auth", ADMIN_TOKEN.encode()), (b"content-length", str(size).encode())],
        "client": ("10.1.2.3", 5000),
        "server": ("127.0.0.1", 7102),
    }

    async def call() -> None:
        try:
            await client.app(scope, receive, send)
        except UpstreamError:
            pass  # the ASGI server drops the connection; there is nobody to answer

    client.run(call())
    time.sleep(0.05)

    assert sent == []
    assert server.requests == []


def test_calls_to_one_job_share_a_pooled_connection(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job

    statuses = [client.get("/pub/job/adder/1.0.0/", AUTH).status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert server.accepts == 1


def test_calls_spread_over_the_jobs_replicas(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    replicas = [servers(), servers()]
    add_job("adder", "1.0.0", addresses=[replica.address for replica in replicas])

    for _ in range(6):
        assert client.get("/pub/job/adder/1.0.0/", AUTH).status_code == 200

    assert [len(replica.requests) for replica in replicas] == [3, 3]


# --- redirects -----------------------------------------------------------------------------------


def _redirecting(server_address: Callable[[], str]) -> Callable[[ServerConnection, Request], None]:
    def redirect(connection: ServerConnection, request: Request) -> None:
        location = parse_qs(urlsplit(request.target).query)["to"][0].replace("{self}", server_address())
        connection.send(reply(302, b"", [("Location", location)], reason="Found"))

    return redirect


@pytest.mark.parametrize(
    ("location", "called", "expected"),
    [
        ("http://{self}/pub/job/adder/1.2.0/docs", "latest", "/pub/job/adder/latest/docs"),
        ("/pub/job/adder/1.2.0/docs?page=2", "latest", "/pub/job/adder/latest/docs?page=2"),
        ("/pub/job/adder/1.2.0", "1.x", "/pub/job/adder/1.x"),
        ("/pub/job/adder/1.2.0?x=1", "1.2.0", "/pub/job/adder/1.2.0?x=1"),
        ("http://{self}", "latest", "/"),
        (
            "https://elsewhere.example.com/pub/job/adder/1.2.0/docs",
            "latest",
            "https://elsewhere.example.com/pub/job/adder/1.2.0/docs",
        ),
        ("/pub/job/adder/1.2.0x/docs", "latest", "/pub/job/adder/1.2.0x/docs"),  # only the job's own prefix
        ("/other/path", "latest", "/other/path"),
    ],
)
def test_redirects_are_rewritten_under_the_path_the_caller_used(
    daemon: Daemons, servers: Servers, location: str, called: str, expected: str
) -> None:
    client = daemon()
    holder: list[UpstreamServer] = []
    server = servers(_redirecting(lambda: holder[0].address))
    holder.append(server)
    add_job("adder", "1.2.0", addresses=[server.address])

    response = client.get(f"/pub/job/adder/{called}/r?to={location}", AUTH)

    assert response.status_code == 302
    assert response.header("location") == expected


def test_redirects_of_legacy_fatman_paths_stay_under_fatman(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers(_redirecting(lambda: ""))
    add_job("adder", "1.2.0", addresses=[server.address])

    response = client.get("/pub/fatman/adder/latest/r?to=/pub/job/adder/1.2.0/docs", AUTH)

    assert response.header("location") == "/pub/fatman/adder/latest/docs"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Racetrack-Auth": "wrong"}, {"Cookie": "X-Racetrack-Auth=wrong"}])
def test_a_call_without_a_good_token_is_401_and_never_reaches_the_job(
    job: tuple[LoopClient, UpstreamServer], headers: dict[str, str]
) -> None:
    client, server = job

    response = client.post("/pub/job/adder/1.0.0/api/v1/perform", b"{}", headers)

    assert_error(response, 401, "unauthorized")
    assert server.requests == []


def test_without_auth_required_a_call_needs_no_token(daemon: Daemons, servers: Servers) -> None:
    client = daemon(auth_required="false")
    add_job("adder", "1.0.0", addresses=[servers().address])

    response = client.get("/pub/job/adder/1.0.0/")

    assert "x-caller-name" not in seen_headers(response)


@pytest.mark.parametrize(
    ("path", "name", "version"),
    [
        ("/pub/job/nothing/1.0.0/api/v1/perform", "nothing", "1.0.0"),
        ("/pub/job/adder/9.9.9/api/v1/perform", "adder", "9.9.9"),
        ("/pub/job/adder/3.x/", "adder", "3.x"),
    ],
)
def test_an_unknown_job_or_version_is_404_job_not_found(
    job: tuple[LoopClient, UpstreamServer], path: str, name: str, version: str
) -> None:
    client, server = job

    assert_error(client.get(path, AUTH), 404, "job-not-found", name, version)
    assert server.requests == []


@pytest.mark.parametrize("path", ["/pub", "/pub/", "/pub/job/adder", "/pub/nothing/adder/1.0.0/x"])
def test_paths_outside_the_gateways_routes_are_404(job: tuple[LoopClient, UpstreamServer], path: str) -> None:
    client, _ = job

    response = client.get(path, AUTH)

    assert response.status_code == 404 and response.json["type"] == "not-found"


def test_a_job_that_refuses_connections_is_502_with_its_status(daemon: Daemons) -> None:
    client = daemon()
    add_job("adder", "1.0.0", db.JobStatus.RUNNING, [f"127.0.0.1:{free_port()}"])

    body = assert_error(client.get("/pub/job/adder/1.0.0/", AUTH), 502, "job-unreachable")

    assert body["job_status"] == "running"
    assert "refused" in body["error"]
    assert "job status: running" in body["hint"]


def test_a_job_that_dies_before_answering_is_502(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    add_job("adder", "1.0.0", db.JobStatus.CRASHED, [servers(lambda connection, request: False).address])
    db.Job.update(error="exit code 137").execute()

    body = assert_error(client.get("/pub/job/adder/1.0.0/", AUTH), 502, "job-unreachable")

    assert body["job_status"] == "crashed"
    assert body["hint"] == "job status: crashed; last error: exit code 137"


def test_a_starting_job_is_503_with_its_status(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    server = servers()
    add_job("adder", "1.0.0", db.JobStatus.STARTING, [server.address])

    body = assert_error(client.get("/pub/job/adder/1.0.0/", AUTH), 503, "job-unavailable")

    assert body["job_status"] == "starting"
    assert server.requests == []


def test_a_running_job_without_an_address_is_503(daemon: Daemons) -> None:
    client = daemon()
    add_job("adder", "1.0.0", db.JobStatus.RUNNING, [])

    assert_error(client.get("/pub/job/adder/1.0.0/", AUTH), 503, "job-unavailable")


def test_a_job_slower_than_its_call_timeout_is_504(daemon: Daemons, servers: Servers) -> None:
    client = daemon()
    holder: list[UpstreamServer] = []

    def slow(connection: ServerConnection, request: Request) -> None:
        holder[0].stopping.wait(3)

    server = servers(slow)
    holder.append(server)
    add_job("adder", "1.0.0", addresses=[server.address], call_timeout=1)  # the job's own, not the daemon's 600 s

    started = time.monotonic()
    body = assert_error(client.get("/pub/job/adder/1.0.0/", AUTH), 504, "job-timeout")
    took = time.monotonic() - started

    assert "call_timeout of 1 s" in body["error"]
    assert 0.9 < took < 2.0


def test_the_daemons_call_timeout_holds_when_the_job_sets_none(daemon: Daemons, servers: Servers) -> None:
    client = daemon(call_timeout="0.2")
    holder: list[UpstreamServer] = []
    server = servers(lambda connection, request: holder[0].stopping.wait(3) and None)
    holder.append(server)
    add_job("adder", "1.0.0", addresses=[server.address])

    body = assert_error(client.get("/pub/job/adder/1.0.0/", AUTH), 504, "job-timeout")

    assert "call_timeout of 0.2 s" in body["error"]


def test_a_job_added_after_the_first_call_is_found_at_once(
    job: tuple[LoopClient, UpstreamServer], servers: Servers
) -> None:
    client, _ = job
    assert client.get("/pub/job/adder/1.0.0/", AUTH).status_code == 200  # the routes are loaded
    time.sleep(0.15)  # past the rate limit of reloads on a miss

    add_job("fresh", "1.0.0", addresses=[servers().address])

    assert seen(client.get("/pub/job/fresh/latest/x", AUTH))["target"] == "/pub/job/fresh/1.0.0/x"


def test_with_the_lifespan_started_a_status_change_reaches_the_gateway(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job
    client.startup()
    assert client.get("/pub/job/adder/1.0.0/", AUTH).status_code == 200

    db.Job.update(status=db.JobStatus.STARTING).execute()
    deadline = time.monotonic() + 1.5
    while client.get("/pub/job/adder/1.0.0/", AUTH).status_code != 503:
        assert time.monotonic() < deadline, "the routing watcher did not pick up the change"
        time.sleep(0.05)


# --- maintenance mode ----------------------------------------------------------------------------


def until_gateway_sees(client: LoopClient, status: int, path: str = "/pub/job/adder/1.0.0/api/v1/perform") -> Response:
    """The routing table picks maintenance mode up on its next refresh (every 0.1 s)."""
    deadline = time.monotonic() + 3
    while True:
        response = client.post(path, b"{}", AUTH)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_in_maintenance_mode_job_calls_are_answered_503_as_racetrack_does(
    job: tuple[LoopClient, UpstreamServer],
) -> None:
    client, server = job
    client.startup()  # the routing table follows the registry from now on
    maintenance.switch(True, "engine upgrade until 15:00", "admin")

    refused = until_gateway_sees(client, 503)
    answered_before = len(server.requests)  # calls sent before the table's refresh saw the switch

    body = assert_error(refused, 503, "maintenance-mode")
    assert "maintenance mode" in body["error"] and "engine upgrade until 15:00" in body["error"]
    assert_error(client.get("/pub/job/adder/1.0.0/health", AUTH), 503, "maintenance-mode")
    assert_error(client.post("/pub/async/new/job/adder/1.0.0/api/v1/perform", b"{}", AUTH), 503, "maintenance-mode")
    assert len(server.requests) == answered_before  # the job saw none of the refused calls
    # Polls stay open, so a call accepted before maintenance still hands its result over.
    assert client.get("/pub/async/task/no-such-task/status", AUTH).status_code == 404

    maintenance.switch(False, "", "admin")
    assert seen(until_gateway_sees(client, 200))["method"] == "POST"


def test_maintenance_blocks_calls_false_keeps_jobs_serving(daemon: Daemons, servers: Servers) -> None:
    client = daemon(maintenance_blocks_calls="false")
    server = servers()
    add_job("adder", "1.0.0", addresses=[server.address])
    client.startup()
    maintenance.switch(True, "", "admin")
    time.sleep(0.6)  # past two refreshes of the routing table

    assert seen(client.post("/pub/job/adder/1.0.0/api/v1/perform", b"{}", AUTH))["method"] == "POST"


def test_the_gateway_reads_maintenance_mode_from_memory_not_the_registry_per_call(
    job: tuple[LoopClient, UpstreamServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = job
    client.startup()
    maintenance.switch(True, "", "admin")
    until_gateway_sees(client, 503)
    reads: list[int] = []
    real = maintenance.current

    def counted() -> maintenance.Maintenance:
        reads.append(1)
        return real()

    monkeypatch.setattr(maintenance, "current", counted)

    for _ in range(20):
        assert client.post("/pub/job/adder/1.0.0/api/v1/perform", b"{}", AUTH).status_code == 503

    assert len(reads) <= 2  # only the routing table's background refreshes, if any


# --- sleeping jobs -------------------------------------------------------------------------------


def test_a_call_to_a_sleeping_job_wakes_it_and_is_answered(
    daemon: Daemons, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = daemon()
    server = servers()
    add_job("sleepy", "1.0.0", db.JobStatus.SLEEPING, [])
    woken: list[tuple[str, str, float]] = []

    def wake(job: db.Job, orchestrator: Any, timeout: float) -> db.Job:
        woken.append((job.name, job.version, timeout))
        db.Job.update(status=db.JobStatus.RUNNING, replica_addresses=(server.address,)).execute()
        return job

    monkeypatch.setattr(waking, "wake", wake)

    response = client.get("/pub/job/sleepy/latest/api/v1/perform", AUTH)
    again = client.get("/pub/job/sleepy/latest/api/v1/perform", AUTH)

    assert seen(response)["target"] == "/pub/job/sleepy/1.0.0/api/v1/perform"
    assert again.status_code == 200
    assert woken == [("sleepy", "1.0.0", daemon.settings.job_start_timeout)]  # once: it is awake now


def test_a_sleeping_job_that_does_not_wake_is_a_json_error(daemon: Daemons, monkeypatch: pytest.MonkeyPatch) -> None:
    client = daemon()
    add_job("sleepy", "1.0.0", db.JobStatus.SLEEPING, [])

    def wake(job: db.Job, orchestrator: Any, timeout: float) -> db.Job:
        raise UpstreamError("job sleepy 1.0.0 did not wake up within 180 s")

    monkeypatch.setattr(waking, "wake", wake)

    body = assert_error(client.get("/pub/job/sleepy/1.0.0/", AUTH), 502, "job-unreachable", "sleepy", "1.0.0")

    assert "did not wake up" in body["error"]


# --- the control plane beside it -----------------------------------------------------------------


def test_everything_outside_pub_is_the_control_plane(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, server = job

    jobs = client.get("/lifecycle/api/v1/job", AUTH)
    unauthorized = client.get("/lifecycle/api/v1/job")
    live = client.get("/live")

    assert jobs.status_code == 200 and [j["name"] for j in jobs.json] == ["adder"]
    assert unauthorized.status_code == 401
    assert live.json["live"] is True
    assert server.requests == []


def test_the_lifespan_starts_and_stops_cleanly(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    client.startup()
    assert client.get("/pub/job/adder/1.0.0/", AUTH).status_code == 200
    client.shutdown()


# --- last call time --------------------------------------------------------------------------------


def test_calls_are_noted_in_memory_and_flushed_to_the_api_in_one_write(
    job: tuple[LoopClient, UpstreamServer],
) -> None:
    client, _ = job
    statements: list[str] = []
    db.database.connection().set_trace_callback(statements.append)
    before = time.time()

    for _ in range(20):
        assert client.post("/pub/job/adder/latest/api/v1/perform", b"{}", AUTH).status_code == 200
    unflushed = client.get("/lifecycle/api/v1/job/adder/1.0.0", AUTH).json["last_call_time"]
    written = client.app.gateway.last_calls.flush()
    again = client.app.gateway.last_calls.flush()
    shown = client.get("/lifecycle/api/v1/job/adder/1.0.0", AUTH).json["last_call_time"]

    db.database.connection().set_trace_callback(None)
    # No registry write per call: twenty calls, one UPDATE of the job row, at the flush.
    assert unflushed is None
    assert len([s for s in statements if s.lstrip().upper().startswith("UPDATE") and '"job"' in s]) == 1
    assert (written, again) == (1, 0)
    assert shown is not None and int(before) <= shown <= time.time()


def test_a_flush_never_moves_the_last_call_back(job: tuple[LoopClient, UpstreamServer]) -> None:
    from racetrackd.gateway.lastcall import LastCalls

    client, _ = job
    assert client.post("/pub/job/adder/1.0.0/api/v1/perform", b"{}", AUTH).status_code == 200
    client.app.gateway.last_calls.flush()
    latest = db.Job.get(db.Job.name == "adder").last_call_time
    stale = LastCalls()  # another HTTP worker whose last call to adder was earlier
    stale._latest[("adder", "1.0.0")] = latest - 60

    stale.flush()

    assert db.Job.get(db.Job.name == "adder").last_call_time == latest


def test_the_lifespan_shutdown_writes_the_last_calls_left(job: tuple[LoopClient, UpstreamServer]) -> None:
    client, _ = job

    client.startup()
    assert client.get("/pub/job/adder/1.0.0/", AUTH).status_code == 200
    client.shutdown()

    assert db.Job.get(db.Job.name == "adder").last_call_time is not None


def test_tracing_ids_are_version_4_uuids_unique_across_forked_workers() -> None:
    from racetrackd.gateway.app import new_tracing_id

    made = [new_tracing_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for tracing_id in made[:50]:
        parsed = uuid.UUID(tracing_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == tracing_id
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker forked from the master: its ids are not the master's
        os.write(write_end, new_tracing_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 100).decode()
    os.close(read_end)
    os.close(write_end)
    assert child != new_tracing_id()


def test_the_call_deadline_raises_timeout_and_lets_other_cancellations_through() -> None:
    import asyncio

    from racetrackd.gateway.app import _Deadline

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with _Deadline(loop.time() + 0.01):
                await asyncio.sleep(1)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # the task is whole again

        async def cancelled_from_outside() -> None:
            async with _Deadline(loop.time() + 10):
                await asyncio.sleep(1)

        task = asyncio.ensure_future(cancelled_from_outside())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # the caller went: not a timeout
            await task
        async with _Deadline(loop.time() + 0.01):
            pass
        await asyncio.sleep(0.03)  # its timer was cancelled with the block: nothing fires afterwards

    asyncio.run(main())
