"""Readiness of a job whose server does not follow the wrapper contract (docker-proxy): a real
HTTP server on loopback that handles only POST, as Python's http.server does with only do_POST."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from racetrackd.docker.runtime import ContainerSpec
from racetrackd.jobs.probes import ServerAnswers, StartFailed, check_ready, wait_until_started
from racetrackd.plugins.jobtypes import discover, resolve
from racetrackd.serving import FORWARD, Serving
from racetrackd.settings import BUILTIN_PLUGINS_DIR
from tests.unit.fakes import FakeRuntime


class PostOnly(BaseHTTPRequestHandler):
    """GET (any path) is answered 501 Unsupported method by http.server itself."""

    def do_POST(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"posted")

    def log_message(self, format: str, *args: object) -> None:  # quiet in test output
        pass


@pytest.fixture
def post_only_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PostOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def not_http_server() -> Iterator[str]:
    """Accepts connections and answers bytes that are not HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def proxy_serving(extra: dict[str, object] | None = None) -> Serving:
    return resolve("docker-proxy:latest", discover([BUILTIN_PLUGINS_DIR])).serving_for(extra or {})


def test_a_server_answering_get_with_501_is_ready(post_only_server: str) -> None:
    serving = proxy_serving()

    assert check_ready(post_only_server, serving) is None
    assert ServerAnswers(post_only_server, serving).passed()


def test_a_probe_path_named_by_the_manifest_must_answer_below_500(post_only_server: str) -> None:
    serving = proxy_serving({"probe_path": "/healthz"})

    failure = check_ready(post_only_server, serving)

    assert failure is not None
    assert "/healthz" in failure and "501" in failure
    assert not ServerAnswers(post_only_server, serving).passed()


def test_a_server_that_does_not_speak_http_is_not_ready(not_http_server: str) -> None:
    assert check_ready(not_http_server, proxy_serving()) is not None


def test_nothing_listening_is_not_ready() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    failure = check_ready(address, Serving(port=7001, path_mode=FORWARD))

    assert failure is not None and "unreachable" in failure


class FakeClock:
    """time.monotonic and time.sleep of a test: time moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ReadyAt:
    """A start check that passes from `ready_at` seconds on (the job's server came up then)."""

    def __init__(self, clock: FakeClock, ready_at: float) -> None:
        self.clock = clock
        self.ready_at = ready_at

    def passed(self) -> bool:
        return self.clock.now >= self.ready_at

    def timeout_reason(self, timeout: float) -> str:
        return f"not ready within {timeout:g} s"


def test_a_starting_container_is_noticed_ready_within_a_fine_step_not_a_poll_tick() -> None:
    # A redeploy or a woken call waits for the job's first answer: each tick between that answer and
    # our noticing it is waiting for nothing (it was 0.1 s, as much again as a by-hand curl loop).
    runtime, clock = FakeRuntime(), FakeClock()
    runtime.run_container(ContainerSpec("job-1", "img", {}, {}, "net", publish_port=False))
    ready_at = 0.731

    wait_until_started(runtime, "job-1", ReadyAt(clock, ready_at), 10, clock=clock, sleep=clock.sleep)

    assert ready_at <= clock.now <= ready_at + 0.025
    # Docker is asked about the container far less often than the job is probed.
    assert 1 <= len(runtime.calls_to("container_state")) <= 5


def test_a_container_that_exits_while_starting_fails_at_the_next_look() -> None:
    runtime, clock = FakeRuntime(), FakeClock()
    runtime.run_container(ContainerSpec("job-1", "img", {}, {}, "net", publish_port=False))
    runtime.stopped.add("job-1")

    with pytest.raises(StartFailed, match=r"the job's container exited \(code 0\)"):
        wait_until_started(runtime, "job-1", ReadyAt(clock, 5), 10, clock=clock, sleep=clock.sleep)
    assert clock.now < 0.3


def test_a_container_never_ready_fails_with_the_checks_reason_after_the_timeout() -> None:
    runtime, clock = FakeRuntime(), FakeClock()
    runtime.run_container(ContainerSpec("job-1", "img", {}, {}, "net", publish_port=False))

    with pytest.raises(StartFailed, match="not ready within 3 s"):
        wait_until_started(runtime, "job-1", ReadyAt(clock, 99), 3, clock=clock, sleep=clock.sleep)
