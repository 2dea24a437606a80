"""The gateway (/pub) as a caller sees it: every method, headers in and out, streams both ways,
redirects, WebSockets, each error the gateway answers itself, async calls and the metrics.

One fixture job, tests/fixtures/jobs/gateway-probe (no requirements, call_timeout 3 s), shows what
reached it: an echo, a held stream, an upload hasher, a redirect, a WebSocket echo, slow endpoints.
It is deployed once on the session daemon. Tests that stop the job's container or kill the daemon
use a private daemon of this module (`private`), whose supervisor only looks at start-up, so a
stopped container stays stopped until the test starts it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import requests
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

from tests.integration.conftest import FIXTURES, Daemon, _remove_labelled, launch_daemon, remove_networks

pytestmark = pytest.mark.integration

PROBE_DIR = FIXTURES / "gateway-probe"
NAME = "gateway-probe"
VERSION = "1.0.0"
LATEST = f"/pub/job/{NAME}/latest"
EXACT = f"/pub/job/{NAME}/{VERSION}"
WEBVIEW = f"{LATEST}/api/v1/webview"
CALL_TIMEOUT = 3.0  # call_timeout in the probe's job.yaml
# On the private daemon the probe gets a longer call_timeout: longer than the 5 s the gateway gives
# a connection to a stopped container's address, and than the 5 s call a daemon crash interrupts.
PRIVATE_CALL_TIMEOUT = 20
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ERROR_FIELDS = {"error", "type", "job_name", "job_version", "request_id"}

# --- helpers ------------------------------------------------------------------------------------


def call(daemon: Daemon, method: str, path: str, **kwargs: Any) -> requests.Response:
    """`daemon.api` on a connection the daemon closes after answering. (A response a test still holds
    keeps its keep-alive connection open, and a daemon being stopped waits for open connections.)"""
    return daemon.api(method, path, headers={"Connection": "close", **kwargs.pop("headers", {})}, **kwargs)


def wait_for(check: Callable[[], Any], timeout: float = 10, interval: float = 0.2) -> Any:
    """Poll until `check()` returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)
        result = check()
    return result


def job_container(daemon: Daemon, name: str = NAME) -> Any:
    return next(c for c in daemon.containers() if c.labels.get("job-name") == name)


def job_record(daemon: Daemon, name: str = NAME, version: str = VERSION) -> dict[str, Any]:
    response = call(daemon, "GET", f"/lifecycle/api/v1/job/{name}/{version}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def echo_of(response: requests.Response) -> dict[str, Any]:
    """The probe's /echo answer, with its headers as a dict (lower-case names; a repeated name fails)."""
    assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}"
    echo = dict(response.json())
    names = [name for name, _ in echo["headers"]]
    assert len(names) == len(set(names)), f"the job received a header twice: {echo['headers']}"
    echo["headers"] = dict(echo["headers"])
    return echo


def error_body(response: requests.Response, status: int) -> dict[str, Any]:
    """A gateway error: the status, JSON with the documented fields, request_id = the tracing header."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = dict(response.json())
    assert ERROR_FIELDS <= body.keys(), f"the error lacks {ERROR_FIELDS - body.keys()}: {body}"
    assert body["request_id"] == response.headers.get("X-Request-Tracing-Id"), (body, response.headers)
    return body


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_samples(daemon: Daemon) -> Samples:
    response = requests.get(daemon.url + "/metrics", timeout=10, headers={"Connection": "close"})
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for line in response.text.splitlines():
        match = SAMPLE_LINE.match(line)
        if match and not line.startswith("#"):
            labels = frozenset(LABEL.findall(match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def poll(daemon: Daemon, task_id: str, wait: float) -> requests.Response:
    return requests.get(
        f"{daemon.url}/pub/async/task/{task_id}/poll",
        params={"wait": wait},
        timeout=wait + 15,
        headers={"X-Racetrack-Auth": daemon.token, "Connection": "close"},
    )


def task_status(daemon: Daemon, task_id: str) -> dict[str, Any]:
    response = call(daemon, "GET", f"/pub/async/task/{task_id}/status")
    assert response.status_code == 200, response.text
    return dict(response.json())


def start_async(daemon: Daemon, path: str, **kwargs: Any) -> str:
    response = call(daemon, "POST", f"/pub/async/new/job/{NAME}/{VERSION}{path}", **kwargs)
    assert response.status_code == 201, f"{response.status_code}: {response.text}"
    created = response.json()
    assert created["status"] == "ongoing", created
    return str(created["task_id"])


def websocket_url(daemon: Daemon, path: str = f"{WEBVIEW}/ws") -> str:
    return daemon.url.replace("http://", "ws://", 1) + path


# --- deployments ------------------------------------------------------------------------------------


def wait_until_served(daemon: Daemon, path: str = f"{WEBVIEW}/echo", timeout: float = 10) -> None:
    """Wait for a 200 from the gateway. Right after `rtd submit` returns, an HTTP worker may still
    answer 503 "starting" until its routing table's watcher notices the change (every 0.1 s)."""
    assert wait_for(lambda: call(daemon, "GET", path).status_code == 200, timeout=timeout, interval=0.05), (
        f"the gateway never served {path}: {call(daemon, 'GET', path).text}"
    )


@pytest.fixture(scope="module")
def probe(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", "--force", str(PROBE_DIR), check=True)
    wait_until_served(daemon)
    return daemon


@pytest.fixture(scope="module")
def private(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    """A daemon of this module's own: its supervisor checks only at start-up (the interval is an hour),
    async calls are retried 1 s apart, twice; the probe runs with a call_timeout of 20 s.

    On a Docker network of its own: the address of a container stopped here must stay unused (on a
    shared network another daemon's new container may be given it, and calls would reach that one)."""
    network = f"rtd-gateway-test-{uuid.uuid4().hex[:8]}"
    docker_client.networks.create(network, driver="bridge")
    try:
        handle = launch_daemon(
            tmp_path_factory.mktemp("gateway-private"),
            docker_client,
            base_image,
            RACETRACK_NETWORK=network,
            RACETRACK_SUPERVISOR_INTERVAL="3600",
            RACETRACK_ASYNC_RETRY_INTERVAL="1",
            RACETRACK_ASYNC_MAX_ATTEMPTS="2",
        )
        try:
            handle.rtd("submit", str(PROBE_DIR), "-e", f"call_timeout={PRIVATE_CALL_TIMEOUT}s", check=True)
            wait_until_served(handle)
            yield handle
        finally:
            handle.stop()
            _remove_labelled(docker_client, handle.instance)
    finally:
        remove_networks(docker_client, network)


def bring_back(daemon: Daemon, container: Any) -> None:
    """Start a stopped job container again; restart the daemon so that its start-up reconcile (its
    supervisor's only check) records the job as running at its current address; wait until it serves."""
    container.reload()
    if container.status == "running":
        return
    container.start()
    # The reconcile probes the job once (this daemon's supervisor interval is an hour): on a loaded
    # machine a restart can reach it before the job's server is up, so wait until it answers itself.
    assert wait_for(lambda: _answers_live(daemon, container), timeout=60), "the job's server never came up"
    daemon.stop()
    daemon.start()
    assert wait_for(
        lambda: job_record(daemon)["status"] == "running" and call(daemon, "GET", f"{WEBVIEW}/echo").status_code == 200,
        timeout=30,
    ), f"the job never served again: {job_record(daemon)}"


def _answers_live(daemon: Daemon, container: Any) -> bool:
    container.reload()
    network = daemon.env.get("RACETRACK_NETWORK", "racetrack")
    address = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    try:
        return requests.get(f"http://{address}:7000/live", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def stopped_probe(private: Daemon) -> Iterator[Any]:
    """The private daemon's probe with its container stopped (docker stop), brought back afterwards."""
    container = job_container(private)
    container.stop(timeout=1)
    container.reload()
    assert container.status == "exited", container.status
    try:
        yield container
    finally:
        bring_back(private, container)


# --- methods, query strings, headers -------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_reaches_the_job_with_its_query_string_and_body(probe: Daemon, method: str) -> None:
    query = "a=1&b=two&b=three&empty=&enc=%2Fslash%20space%26amp"
    body = b"" if method in ("GET", "OPTIONS") else json.dumps({"method": method}).encode()

    response = call(probe, method, f"{WEBVIEW}/echo?{query}", data=body)

    echo = echo_of(response)
    assert echo["method"] == method
    assert echo["path"] == "/echo"
    assert echo["root_path"] == f"{LATEST}/api/v1/webview"
    assert echo["query_string"] == query, "the query string did not arrive byte for byte"
    assert echo["query"] == {"a": "1", "b": "three", "empty": "", "enc": "/slash space&amp"}
    assert echo["body"] == body.decode()
    assert echo["body_length"] == len(body)
    if body:
        assert echo["headers"].get("content-length") == str(len(body)), echo["headers"]


def test_head_gets_the_jobs_headers_and_no_body(probe: Daemon) -> None:
    head = call(probe, "HEAD", f"{WEBVIEW}/echo?x=1")
    follow_up = call(probe, "GET", f"{WEBVIEW}/echo?x=2")  # the gateway's pooled connection to the job is intact

    assert head.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["X-Probe-Answer"] == "echo"
    assert int(head.headers["Content-Length"]) > 0, "HEAD should announce the length a GET would have"
    assert echo_of(follow_up)["query_string"] == "x=2"


def test_tracing_id_is_generated_when_absent_and_kept_when_sent(probe: Daemon) -> None:
    generated = call(probe, "GET", f"{WEBVIEW}/echo")
    mine = f"trace-{uuid.uuid4().hex}"
    sent = call(probe, "GET", f"{WEBVIEW}/echo", headers={"X-Request-Tracing-Id": mine})
    failed = call(probe, "GET", f"/pub/job/{NAME}/9.9.9/anything", headers={"X-Request-Tracing-Id": mine})

    generated_id = generated.headers.get("X-Request-Tracing-Id", "")
    assert UUID.match(generated_id), f"no generated tracing id on the answer: {generated.headers}"
    assert echo_of(generated)["headers"]["x-request-tracing-id"] == generated_id, "the job saw another id"
    assert sent.headers["X-Request-Tracing-Id"] == mine
    assert echo_of(sent)["headers"]["x-request-tracing-id"] == mine
    assert error_body(failed, 404)["request_id"] == mine, "a gateway error must carry the caller's id too"


def test_the_job_learns_the_caller_and_how_it_was_reached(probe: Daemon) -> None:
    host = probe.url.removeprefix("http://")

    plain = echo_of(call(probe, "GET", f"{WEBVIEW}/echo"))["headers"]
    spoofed = echo_of(
        call(
            probe,
            "GET",
            f"{WEBVIEW}/echo",
            headers={
                "X-Caller-Name": "mallory",
                "X-Forwarded-For": "10.1.2.3",
                "X-Forwarded-Prefix": "/somewhere/else",
            },
        )
    )["headers"]

    assert plain["x-caller-name"] == "admin"
    assert plain["x-forwarded-for"] == "127.0.0.1"
    assert plain["x-forwarded-host"] == host
    assert plain["x-forwarded-proto"] == "http"
    assert plain["x-forwarded-prefix"] == LATEST, "the prefix must be the one the caller used (latest)"
    assert plain["host"] != host, "Host should name the job, not the daemon"
    assert spoofed["x-caller-name"] == "admin", "a caller must not choose the name the job sees"
    assert spoofed["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert spoofed["x-forwarded-prefix"] == LATEST


def test_the_callers_token_never_reaches_the_job(probe: Daemon) -> None:
    as_headers = echo_of(
        call(
            probe,
            "GET",
            f"{WEBVIEW}/echo",
            headers={
                "X-Racetrack-User-Auth": probe.token,
                "X-Racetrack-Esc-Auth": probe.token,
            },
        )
    )["headers"]
    as_cookie = echo_of(
        requests.get(
            probe.url + f"{WEBVIEW}/echo",
            timeout=10,
            headers={
                "Connection": "close",
                "Cookie": f"theme=dark; X-Racetrack-Auth={probe.token}; lang=en",
            },
        )
    )["headers"]

    assert not [name for name in as_headers if "racetrack" in name and "auth" in name], as_headers
    assert probe.token not in json.dumps(as_headers)
    assert as_cookie["x-caller-name"] == "admin", "the token in a cookie should authenticate"
    assert as_cookie["cookie"].replace(" ", "") == "theme=dark;lang=en", "other cookies must pass untouched"
    assert probe.token not in json.dumps(as_cookie)


def test_the_jobs_headers_come_back_and_hop_by_hop_headers_stop_at_the_gateway(probe: Daemon) -> None:
    response = call(
        probe, "GET", f"{WEBVIEW}/echo", headers={"Connection": "keep-alive, X-Hop", "X-Hop": "1", "X-Passed": "yes"}
    )

    received = echo_of(response)["headers"]
    assert response.headers["X-Probe-Answer"] == "echo"
    assert response.headers["Set-Cookie"] == "probe=seen; Path=/"
    assert received["x-passed"] == "yes"
    assert "x-hop" not in received, "a header the caller named in Connection is hop-by-hop"
    assert "connection" not in received


# --- bodies: streamed both ways ---------------------------------------------------------------------


def test_a_streamed_answer_arrives_chunk_by_chunk(probe: Daemon) -> None:
    """The probe holds its answer after the first chunk until /release is called: the caller can read
    that chunk only if the gateway passes it on at once."""
    hold = uuid.uuid4().hex
    started = time.monotonic()
    with requests.get(
        probe.url + f"{WEBVIEW}/stream?chunks=4&delay=0.05&id={hold}",
        stream=True,
        timeout=10,
        headers={"X-Racetrack-Auth": probe.token},
    ) as response:
        assert response.status_code == 200, response.text
        assert response.headers.get("Transfer-Encoding") == "chunked", response.headers
        assert "Content-Length" not in response.headers
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        first_after = time.monotonic() - started
        release = call(probe, "GET", f"{WEBVIEW}/release?id={hold}")
        rest = b"".join(chunks)

    assert first == b"chunk 0\n"
    assert first_after < 2.0, f"the first chunk took {first_after:.2f} s: it waited for the rest"
    assert release.json() == {"released": hold, "was_waiting": True}, "the job was no longer holding the stream"
    assert rest == b"chunk 1\nchunk 2\nchunk 3\nreleased=true\n", "the job gave up waiting: the stream was buffered"


def _blocks(count: int, digest: Any) -> Iterator[bytes]:
    """`count` distinct 1 MiB blocks, made as they are sent, hashed on the way."""
    base = os.urandom(1 << 20)
    for index in range(count):
        block = index.to_bytes(8, "big") + base[8:]
        digest.update(block)
        yield block


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_large_upload_streams_through_whole(probe: Daemon, framing: str) -> None:
    mebibytes = 100 if framing == "chunked" else 20
    digest = hashlib.sha256()
    body: Any = _blocks(mebibytes, digest)  # a generator: requests sends it chunked
    if framing == "content-length":
        body = b"".join(body)

    started = time.monotonic()
    response = call(probe, "POST", f"{WEBVIEW}/upload", data=body)
    seconds = time.monotonic() - started

    assert response.status_code == 200, f"{response.status_code} after {seconds:.1f} s: {response.text[:500]}"
    result = response.json()
    assert result["bytes"] == mebibytes << 20
    assert result["sha256"] == digest.hexdigest(), "the job received other bytes than were sent"
    assert result["messages"] > 1, "the job got the body in one piece: it was not streamed"


# --- redirects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("absolute", [False, True], ids=["path", "absolute-url"])
@pytest.mark.parametrize("version", ["latest", "1.x", VERSION])
def test_a_redirect_to_the_jobs_own_prefix_follows_the_path_the_caller_used(
    probe: Daemon, version: str, absolute: bool
) -> None:
    prefix = f"/pub/job/{NAME}/{version}"
    query = "?absolute=1" if absolute else ""

    response = call(probe, "GET", f"{prefix}/api/v1/webview/redirect{query}", allow_redirects=False)
    followed = call(probe, "GET", f"{prefix}/api/v1/webview/redirect{query}")

    assert response.status_code == 302, response.text
    assert response.headers["Location"] == f"{prefix}/api/v1/webview/echo?from=redirect", (
        "the job redirected to /pub/job/<name>/1.0.0/...; the caller should be sent on under its own prefix"
    )
    echo = echo_of(followed)
    assert followed.url == f"{probe.url}{prefix}/api/v1/webview/echo?from=redirect"
    assert echo["query"] == {"from": "redirect"}


# --- WebSockets ---------------------------------------------------------------------------------------


def test_a_websocket_echoes_text_and_binary_and_closes_cleanly(probe: Daemon) -> None:
    tracing_id = f"ws-{uuid.uuid4().hex}"
    headers = {"X-Racetrack-Auth": probe.token, "X-Request-Tracing-Id": tracing_id}
    with connect(websocket_url(probe), additional_headers=headers, open_timeout=10, close_timeout=5) as ws:
        assert ws.response is not None
        assert ws.response.headers.get("X-Request-Tracing-Id") == tracing_id
        ws.send("hello, job")
        text = ws.recv(timeout=5)
        payload = bytes(range(256)) * 1024  # 256 KiB, every byte value
        ws.send(payload)
        binary = ws.recv(timeout=5)
        ws.send("headers")
        handshake = json.loads(ws.recv(timeout=5))
        ws.close()

    assert text == "hello, job"
    assert binary == payload and isinstance(binary, bytes)
    seen = dict(handshake["headers"])
    assert handshake["path"] == "/ws"
    assert seen["x-caller-name"] == "admin"
    assert seen["x-forwarded-prefix"] == LATEST
    assert seen["x-request-tracing-id"] == tracing_id
    assert "x-racetrack-auth" not in seen
    assert ws.close_code == 1000, f"not a clean close: {ws.close_code} {ws.close_reason!r}"


def test_a_websocket_closed_by_the_job_reaches_the_caller_with_its_code_and_reason(probe: Daemon) -> None:
    with connect(
        websocket_url(probe), additional_headers={"X-Racetrack-Auth": probe.token}, open_timeout=10, close_timeout=5
    ) as ws:
        ws.send("close")
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)

    assert (ws.close_code, ws.close_reason) == (1000, "bye")


def test_a_websocket_without_a_valid_token_is_refused(probe: Daemon) -> None:
    for headers in ({}, {"X-Racetrack-Auth": "wrong-token"}):
        with pytest.raises(InvalidStatus) as refused:
            with connect(websocket_url(probe), additional_headers=headers, open_timeout=10):
                pass
        assert refused.value.response.status_code == 403, refused.value


# --- errors the gateway answers itself ----------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["without-token", "wrong-token"])
def test_a_call_without_a_valid_token_is_401_json(probe: Daemon, token: str | None) -> None:
    headers = {"Connection": "close", **({"X-Racetrack-Auth": token} if token else {})}
    calls = [
        requests.post(f"{probe.url}{EXACT}/api/v1/perform", json={}, headers=headers, timeout=10),
        requests.post(
            f"{probe.url}/pub/async/new/job/{NAME}/{VERSION}/api/v1/perform", json={}, headers=headers, timeout=10
        ),
        requests.get(f"{probe.url}/pub/async/task/{uuid.uuid4()}/poll?wait=0", headers=headers, timeout=10),
    ]

    for response in calls:
        body = error_body(response, 401)
        assert body["type"] == "unauthorized", body
        assert body["error"], body
    assert (calls[0].json()["job_name"], calls[0].json()["job_version"]) == (NAME, VERSION)


@pytest.mark.parametrize(
    ("name", "version"),
    [("no-such-job", "latest"), (NAME, "9.9.9"), (NAME, "2.x")],
    ids=["unknown-job", "unknown-version", "unmatched-wildcard"],
)
def test_an_unknown_job_or_version_is_404_json_naming_it(probe: Daemon, name: str, version: str) -> None:
    response = call(probe, "POST", f"/pub/job/{name}/{version}/api/v1/perform", json={})

    body = error_body(response, 404)
    assert body["type"] == "job-not-found", body
    assert (body["job_name"], body["job_version"]) == (name, version)
    assert name in body["error"] and version in body["error"], body


def test_a_path_outside_the_gateways_routes_is_404_json(probe: Daemon) -> None:
    response = call(probe, "GET", "/pub/nothing/here")

    assert response.status_code == 404, response.text
    assert response.json()["type"] == "not-found"
    assert "/pub/job/<name>/<version>/<path>" in response.json()["hint"]


def test_a_job_that_is_still_starting_is_503_json_then_serves(daemon: Daemon) -> None:
    """A copy of the probe whose __init__ sleeps 6 s, called while its deployment waits for /ready."""
    name = "gateway-probe-starting"
    path = f"/pub/job/{name}/{VERSION}/api/v1/perform"
    deployed: list[Any] = []
    deploying = threading.Thread(
        target=lambda: deployed.append(
            daemon.rtd(
                "submit",
                "--force",
                "-q",
                str(PROBE_DIR),
                "-e",
                f"name={name}",
                "-e",
                'runtime_env.PROBE_INIT_SLEEP="6"',
            )
        )
    )
    deploying.start()
    try:
        seen: list[tuple[float, int, str]] = []  # (seconds, gateway status, registry status): for the failure message
        began = time.monotonic()

        def first_answer_but_404() -> list[requests.Response]:  # a list: a 503 Response is falsy
            alive = deploying.is_alive()  # read first: a deployment that ends now still gets one more look
            response = call(daemon, "POST", path, json={"value": "up"})
            record = call(daemon, "GET", f"/lifecycle/api/v1/job/{name}/{VERSION}")
            seen.append(
                (
                    round(time.monotonic() - began, 2),
                    response.status_code,
                    record.json()["status"] if record.status_code == 200 else "-",
                )
            )
            if response.status_code == 404 and not alive:
                raise AssertionError(f"the deployment ended before the job answered: {deployed[0].stderr}")
            return [response] if response.status_code != 404 else []

        answers = wait_for(first_answer_but_404, timeout=180, interval=0.1)
        assert answers, "the job never appeared in the gateway within 180 s"
        changes = [entry for i, entry in enumerate(seen) if i == 0 or entry[1:] != seen[i - 1][1:]]
        body = error_body(answers[0], 503)
        assert body["type"] == "job-unavailable", body
        assert body["job_status"] == "starting", (body, changes)
        assert "starting" in body["error"] and body["hint"], body
    finally:
        deploying.join(timeout=240)
    try:
        assert deployed and deployed[0].returncode == 0, deployed and deployed[0].stderr
        wait_until_served(daemon, path=f"/pub/job/{name}/{VERSION}/api/v1/webview/echo", timeout=5)
        after = call(daemon, "POST", path, json={"value": "up"})
        assert after.status_code == 200, after.text
        assert after.json()["value"] == "up"
    finally:
        call(daemon, "DELETE", f"/lifecycle/api/v1/job/{name}/{VERSION}")


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/webview/slow?seconds=10", {}),
        ("POST", "/api/v1/sleep", {"json": {"seconds": 10}}),
    ],
    ids=["asgi-webview", "auxiliary-endpoint-in-a-thread"],
)
def test_a_call_past_the_jobs_call_timeout_is_504_json_at_the_timeout(
    probe: Daemon, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    before = metric_samples(probe)
    started = time.monotonic()
    response = call(probe, method, f"{EXACT}{path}", **kwargs)
    seconds = time.monotonic() - started
    after = call(probe, "GET", f"{EXACT}/api/v1/webview/echo")
    timeouts = {"job_name": NAME, "job_version": VERSION, "kind": "timeout"}
    counted = wait_for(
        lambda: (
            sample(metric_samples(probe), "racetrackd_gateway_errors_total", **timeouts)
            - sample(before, "racetrackd_gateway_errors_total", **timeouts)
        ),
        timeout=5,
    )

    body = error_body(response, 504)
    assert body["type"] == "job-timeout", body
    assert "call_timeout of 3 s" in body["error"], body
    assert (body["job_name"], body["job_version"]) == (NAME, VERSION)
    assert CALL_TIMEOUT - 0.2 <= seconds < CALL_TIMEOUT + 2, f"answered after {seconds:.2f} s (the job sleeps 10 s)"
    assert after.status_code == 200, f"the job stopped serving after a timeout: {after.text}"
    assert counted == 1, "racetrackd_gateway_errors_total{kind=timeout} should count the timeout once"


def test_a_stopped_job_is_502_json_with_its_status_and_serves_once_started_again(
    private: Daemon, stopped_probe: Any
) -> None:
    started = time.monotonic()
    response = call(private, "GET", f"{EXACT}/api/v1/webview/echo")
    seconds = time.monotonic() - started
    recorded = job_record(private)["status"]

    body = error_body(response, 502)
    assert body["type"] == "job-unreachable", body
    assert (body["job_name"], body["job_version"]) == (NAME, VERSION)
    assert body["job_status"] == recorded, f"job_status should be the registry's ({recorded}): {body}"
    assert f"job status: {recorded}" in body["hint"], body
    assert seconds < PRIVATE_CALL_TIMEOUT, f"a 502 should not wait for the call_timeout ({seconds:.1f} s)"

    bring_back(private, stopped_probe)
    assert call(private, "GET", f"{EXACT}/api/v1/webview/echo").status_code == 200


# --- async calls ---------------------------------------------------------------------------------------


def test_an_async_call_is_201_then_202_while_running_then_200_with_the_jobs_answer(probe: Daemon) -> None:
    task_id = start_async(probe, "/api/v1/perform", json={"seconds": 2, "value": "later"})
    assert wait_for(lambda: task_status(probe, task_id)["state"] == "running", timeout=5), task_status(probe, task_id)

    running = poll(probe, task_id, wait=0.3)
    during = task_status(probe, task_id)
    done = poll(probe, task_id, wait=15)
    after = task_status(probe, task_id)

    assert running.status_code == 202, f"{running.status_code}: {running.text}"
    assert running.json()["status"] == "ongoing"
    assert running.json()["task_id"] == task_id
    assert during["status"] == "ongoing"
    assert (during["job_name"], during["job_version"]) == (NAME, VERSION)
    assert done.status_code == 200, f"{done.status_code}: {done.text}"
    assert done.headers["Content-Type"] == "application/json"
    assert done.json()["value"] == "later"
    assert done.json()["slept"] == 2
    assert after["status"] == "completed", after
    assert after["response_status"] == 200
    assert after["attempts"] == 1
    assert after["caller"] == "admin"


def test_an_async_answer_keeps_the_jobs_status_headers_and_body(probe: Daemon) -> None:
    task_id = start_async(probe, "/api/v1/webview/status?code=418", data=b"tea, please")

    answer = poll(probe, task_id, wait=15)

    assert answer.status_code == 418, answer.text
    assert answer.headers["X-Probe-Status"] == "418"
    assert answer.json() == {"code": 418, "got": "tea, please"}
    assert task_status(probe, task_id)["status"] == "completed"


def test_an_unknown_async_task_or_job_is_404_json(probe: Daemon) -> None:
    unknown_task = call(probe, "GET", f"/pub/async/task/{uuid.uuid4()}/poll", params={"wait": 0})
    unknown_status = call(probe, "GET", f"/pub/async/task/{uuid.uuid4()}/status")
    unknown_job = call(probe, "POST", "/pub/async/new/job/no-such-job/latest/api/v1/perform", json={})

    for response in (unknown_task, unknown_status):
        assert response.status_code == 404, response.text
        assert response.json()["type"] == "not-found"
    assert error_body(unknown_job, 404)["type"] == "job-not-found"


def test_an_async_call_to_an_unreachable_job_fails_after_its_attempts_and_is_retried_by_hand(
    private: Daemon, stopped_probe: Any
) -> None:
    task_id = start_async(private, "/api/v1/perform", json={"value": "retried"})

    failed = poll(private, task_id, wait=40)  # 2 attempts of up to 5 s each, 1 s apart

    assert failed.status_code == 500, f"{failed.status_code}: {failed.text}"
    report = failed.json()
    assert (report["task_id"], report["status"], report["attempts"]) == (task_id, "failed", 2), report
    assert "after 2 attempt(s)" in report["error"], report
    listed = call(private, "GET", "/lifecycle/api/v1/async/tasks", params={"state": "failed"}).json()
    assert [t["task_id"] for t in listed if t["task_id"] == task_id] == [task_id], listed
    assert not [t for t in listed if t["state"] != "failed"], listed

    bring_back(private, stopped_probe)
    retried = call(private, "POST", f"/lifecycle/api/v1/async/tasks/{task_id}/retry")
    answer = poll(private, task_id, wait=20)

    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "ongoing" and retried.json()["attempts"] == 0, retried.json()
    assert answer.status_code == 200, f"{answer.status_code}: {answer.text}"
    assert answer.json()["value"] == "retried"
    assert task_status(private, task_id)["attempts"] == 1
    again = call(private, "POST", f"/lifecycle/api/v1/async/tasks/{task_id}/retry")
    assert again.status_code == 409, f"a completed task must not be retried: {again.text}"


def test_an_async_call_survives_a_daemon_crash_in_the_middle(private: Daemon) -> None:
    task_id = start_async(private, "/api/v1/perform", json={"seconds": 5, "value": "survivor"})
    assert wait_for(lambda: task_status(private, task_id)["state"] == "running", timeout=10), task_status(
        private, task_id
    )

    private.kill()
    killed_at = time.time()
    private.start()
    answer = poll(private, task_id, wait=30)

    assert answer.status_code == 200, f"{answer.status_code}: {answer.text}"
    assert answer.json()["value"] == "survivor"
    assert answer.json()["started"] > killed_at, "the answer should come from the attempt after the restart"
    status = task_status(private, task_id)
    assert status["status"] == "completed"
    assert status["attempts"] == 1, f"the attempt the crash interrupted should not count: {status}"


# --- metrics ----------------------------------------------------------------------------------------------


def test_the_daemons_metrics_count_calls_latency_and_errors(probe: Daemon) -> None:
    calls = 5
    labels = {"job_name": NAME, "job_version": VERSION}
    before = metric_samples(probe)

    for index in range(calls):
        assert call(probe, "GET", f"{WEBVIEW}/echo?n={index}").status_code == 200
    assert call(probe, "GET", f"/pub/job/{NAME}/9.9.9/").status_code == 404
    assert requests.get(f"{probe.url}{LATEST}/", timeout=10, headers={"Connection": "close"}).status_code == 401

    def moved() -> Samples | None:
        after = metric_samples(probe)
        done = sample(after, "racetrackd_gateway_requests_total", **labels, status_code="200")
        return (
            after
            if done >= sample(before, "racetrackd_gateway_requests_total", **labels, status_code="200") + calls
            else None
        )

    after = wait_for(moved, timeout=5) or metric_samples(probe)

    def rise(name: str, **extra: str) -> float:
        return sample(after, name, **extra) - sample(before, name, **extra)

    assert rise("racetrackd_gateway_requests_total", **labels, status_code="200") == calls, (
        "the requests counter (labelled with the resolved version, not `latest`) should rise by the calls made"
    )
    assert rise("racetrackd_gateway_job_seconds_count", **labels) == calls
    assert rise("racetrackd_gateway_job_seconds_sum", **labels) > 0
    assert rise("racetrackd_gateway_job_seconds_bucket", **labels, le="+Inf") == calls
    assert rise("racetrackd_gateway_overhead_seconds_count") >= calls
    assert rise("racetrackd_gateway_errors_total", job_name=NAME, job_version="9.9.9", kind="not_found") == 1
    assert rise("racetrackd_auth_failures_total", area="gateway") >= 1
    assert sample(after, "racetrackd_jobs", status="running") >= 1
    assert sample(after, "racetrackd_gateway_in_flight", job_name=NAME) == 0


# --- calls over time -------------------------------------------------------------------------


def test_calls_through_the_gateway_show_in_the_jobs_series_of_calls_over_time(probe: Daemon) -> None:
    def totals() -> dict[str, Any]:
        response = call(probe, "GET", f"/lifecycle/api/v1/job/{NAME}/latest/stats?since=-900")
        assert response.status_code == 200, response.text
        return dict(response.json()["totals"])

    before = totals()
    for code in (200, 200, 200, 302, 404, 503, 503):
        assert call(probe, "GET", f"{WEBVIEW}/status?code={code}", allow_redirects=False).status_code == code

    # Each HTTP worker adds its counts to the registry every few seconds, not once per call, and the
    # workers flush apart: wait until every kind of answer made here has arrived (counts of earlier
    # tests' calls may arrive meanwhile too, so calls alone could grow enough before this test's do).
    def grown() -> dict[str, Any] | None:
        now = totals()
        arrived = (
            now["calls"] - before["calls"] >= 7
            and now["errors"] - before["errors"] >= 2
            and now["redirects"] - before["redirects"] >= 1
            and now["client_errors"] - before["client_errors"] >= 1
        )
        return now if arrived else None

    after = wait_for(grown, timeout=20) or totals()

    def series_with_totals() -> tuple[dict[str, Any], dict[str, Any]] | None:
        series = call(probe, "GET", f"/lifecycle/api/v1/job/{NAME}/{VERSION}/stats?since=-900&step=300").json()
        now = totals()  # read around the series: a flush between the two would make them differ
        return (series, now) if sum(point["calls"] for point in series["points"]) == now["calls"] else None

    consistent = wait_for(series_with_totals, timeout=20)

    assert after["calls"] - before["calls"] >= 7, (before, after)
    assert after["errors"] - before["errors"] >= 2, (before, after)
    assert after["redirects"] - before["redirects"] >= 1 and after["client_errors"] - before["client_errors"] >= 1
    assert after["latency_p50"] is not None and after["latency_p95"] >= after["latency_p50"]
    assert consistent is not None, "the series never added up to the totals"
    series, _ = consistent
    assert series["step"] == 300 and len(series["points"]) in (3, 4)


# --- last call time ----------------------------------------------------------------------------


def test_a_call_shows_as_the_last_call_in_the_api_and_rtd_status(probe: Daemon) -> None:
    before = int(time.time())

    assert call(probe, "GET", f"{WEBVIEW}/echo").status_code == 200

    # Each HTTP worker writes its last calls every few seconds, not once per call.
    shown = wait_for(lambda: (job_record(probe)["last_call_time"] or 0) >= before, timeout=20)
    status = probe.rtd("status", NAME, "--version", VERSION, check=True).stdout
    assert shown, job_record(probe)
    last_call = next(line for line in status.splitlines() if line.strip().startswith("last call:"))
    assert last_call.split(":", 1)[1].strip() != "-", status
