"""Readiness of a job whose server does not follow the wrapper contract (docker-proxy, and a
`dockerfile` job whose server does not speak it): real HTTP servers on loopback, one that handles
only POST, as Python's http.server does with only do_POST, and one answering scripted statuses."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from racetrackd import db
from racetrackd.deploy import jobsecrets
from racetrackd.docker.runtime import ContainerSpec
from racetrackd.errors import JobStartError
from racetrackd.jobs.probes import ContractOrServer, ServerAnswers, StartFailed, WrapperStarted, check_ready
from racetrackd.manifest import accept_manifest
from racetrackd.plugins.jobtypes import discover, resolve
from racetrackd.serving import CONTRACT, FORWARD, SERVER, Serving
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.fakes import FakeRuntime, sample_manifest
from tests.unit.test_security_isolation import _deployer

DEPLOYED = 1_700_000_000  # the deployment timestamp a contract-speaking server echoes


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


# --- `dockerfile` jobs: the wrapper contract when the server speaks it, else any HTTP answer ----------


class Scripted(BaseHTTPRequestHandler):
    """Answers GET <path> with the (status, JSON body) the test scripted for it; 404 elsewhere."""

    answers: dict[str, tuple[int, object]] = {}

    def do_GET(self) -> None:
        status, body = self.answers.get(self.path, (404, {"detail": "Not Found"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, dict[str, tuple[int, object]]]]:
    answers: dict[str, tuple[int, object]] = {}
    handler = type("Handler", (Scripted,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def dockerfile_serving(extra: dict[str, object] | None = None) -> Serving:
    return resolve("dockerfile:latest", discover([BUILTIN_PLUGINS_DIR])).serving_for(extra or {})


def test_a_dockerfile_server_that_handles_only_post_is_ready_and_recorded_as_not_speaking_the_contract(
    post_only_server: str,
) -> None:
    start = ContractOrServer(post_only_server, dockerfile_serving(), DEPLOYED)

    assert dockerfile_serving().detecting
    assert check_ready(post_only_server, dockerfile_serving()) is None
    assert start.passed()
    assert start.decided.probes == SERVER and not start.decided.contract
    assert Serving.from_json(start.decided.to_json()) == start.decided  # what the job's record keeps


def test_a_dockerfile_server_without_live_is_ready_at_any_answer(scripted: tuple[str, dict[str, Any]]) -> None:
    address, _ = scripted  # every path 404 with a JSON body that is not the contract's

    start = ContractOrServer(address, dockerfile_serving(), DEPLOYED)

    assert start.passed()
    assert start.decided.probes == SERVER


def test_a_dockerfile_jobs_probe_path_must_answer_below_500(post_only_server: str) -> None:
    serving = dockerfile_serving({"probe_path": "/healthz"})

    start = ContractOrServer(post_only_server, serving, DEPLOYED)

    assert not start.passed()
    assert "/healthz" in (check_ready(post_only_server, serving) or "")
    assert "/healthz" in start.timeout_reason(5) and "501" in start.timeout_reason(5)


def test_a_dockerfile_server_speaking_the_contract_waits_for_its_timestamp_and_ready(
    scripted: tuple[str, dict[str, Any]],
) -> None:
    address, answers = scripted
    answers["/live"] = (200, {"live": True, "deployment_timestamp": DEPLOYED})
    answers["/ready"] = (500, {"ready": False})
    start = ContractOrServer(address, dockerfile_serving(), DEPLOYED)

    starting = start.passed()
    not_ready = check_ready(address, start.decided)
    answers["/ready"] = (200, {"ready": True})

    assert not starting and start.decided.contract
    assert not_ready is not None and "/ready 500" in not_ready
    assert start.passed()


def test_a_dockerfile_server_speaking_the_contract_fails_fast_on_its_init_error(
    scripted: tuple[str, dict[str, Any]],
) -> None:
    address, answers = scripted
    answers["/live"] = (500, {"error": "ModuleNotFoundError: No module named 'numpy'", "live": False})
    start = ContractOrServer(address, dockerfile_serving(), DEPLOYED)

    with pytest.raises(StartFailed, match="job initialization error: ModuleNotFoundError"):
        start.passed()
    assert start.decided.contract


def test_the_supervisor_keeps_to_the_recorded_choice(scripted: tuple[str, dict[str, Any]]) -> None:
    address, answers = scripted
    answers["/"] = (200, {"hello": "world"})
    contract = dataclasses.replace(dockerfile_serving(), probes=CONTRACT)
    server = dataclasses.replace(dockerfile_serving(), probes=SERVER)

    assert check_ready(address, server) is None
    assert "/live 404" in (check_ready(address, contract) or "")  # a contract job that lost its /live is not ready


# --- the deployer records the choice ------------------------------------------------------------------


@pytest.fixture
def deployed(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[db.Job | None, db.Deployment]]:
    """Deploys a `dockerfile` job (FakeRuntime) whose server answers GET <path> as `answers` says."""

    def deploy(answers: dict[str, tuple[int, object]], **manifest: object) -> tuple[db.Job | None, db.Deployment]:
        settings = make_settings()
        deployer = _deployer(settings, runtime)

        def fake_probe(address: str, path: str) -> tuple[int | None, object]:
            (spec,) = runtime.containers.values()
            status, body = answers.get(path, (501, None))  # http.server without do_GET
            if body == "echo":
                body = {"live": True, "deployment_timestamp": int(spec.env["JOB_DEPLOYMENT_TIMESTAMP"])}
            return status, body

        monkeypatch.setattr("racetrackd.jobs.probes.probe", fake_probe)
        job_type = resolve("dockerfile:latest", discover([BUILTIN_PLUGINS_DIR]))
        written = sample_manifest(jobtype="dockerfile:latest", jobtype_extra={}, **manifest)
        deployment = db.Deployment.create(job_name="adder", job_version="0.0.1", manifest_yaml="x")
        deployer._start(deployment, accept_manifest(written, settings), job_type, "img", jobsecrets.NONE)
        return db.Job.find("adder", "0.0.1"), db.Deployment.get_by_id(deployment.id)

    return deploy


def test_a_dockerfile_job_without_the_contract_is_recorded_so_and_its_idle_timeout_taken_without_a_warning(
    deployed: Callable[..., tuple[db.Job | None, db.Deployment]],
) -> None:
    # Its idle time comes from the gateway's last_call_time, as for docker-proxy jobs (supervisor).
    job, deployment = deployed({}, idle_timeout="10m")

    assert job is not None and job.status == db.JobStatus.RUNNING
    assert Serving.from_json(job.serving).probes == SERVER
    assert "idle_timeout" not in (deployment.warnings or "")


def test_a_dockerfile_job_speaking_the_contract_is_recorded_so(
    deployed: Callable[..., tuple[db.Job | None, db.Deployment]],
) -> None:
    job, deployment = deployed({"/live": (200, "echo"), "/ready": (200, {"ready": True})}, idle_timeout="10m")

    assert job is not None and Serving.from_json(job.serving).contract
    assert "idle_timeout" not in (deployment.warnings or "")


def test_a_dockerfile_job_speaking_the_contract_fails_its_deployment_fast_on_an_init_error(
    deployed: Callable[..., tuple[db.Job | None, db.Deployment]],
) -> None:
    started = time.monotonic()
    with pytest.raises(JobStartError, match="job initialization error: boom"):
        deployed({"/live": (500, {"error": "boom", "live": False}), "/ready": (500, {"ready": False})})

    assert time.monotonic() - started < 5  # not the start timeout
    assert db.Job.find("adder", "0.0.1") is None  # a first deployment leaves no record behind


# --- a starting replica is noticed ready within a fine step, not a poll tick ------------------------


class FakeClock:
    """The deployer's `time` in a test: time moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return DEPLOYED + self.now

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


@pytest.fixture
def waiting(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> Callable[[float, float], None]:
    """Waits (the deployer's wait for a starting replica, on a fake clock) for container job-1 whose
    server is ready at `ready_at` seconds, giving up after `timeout`."""
    clock = FakeClock()
    monkeypatch.setattr("racetrackd.deploy.deployer.time", clock)
    runtime.run_container(ContainerSpec("job-1", "img", {}, {}, "net", publish_port=False))

    def wait(ready_at: float, timeout: float) -> None:
        deployer = _deployer(make_settings(JOB_START_TIMEOUT=str(timeout)), runtime)
        monkeypatch.setattr(
            "racetrackd.deploy.deployer.ServerAnswers", lambda address, serving: ReadyAt(clock, ready_at)
        )
        deployer._wait_until_ready(None, "job-1", 0, 1, DEPLOYED, Serving(port=7001, path_mode=FORWARD))

    wait.clock = clock  # type: ignore[attr-defined]
    return wait


def test_a_starting_container_is_noticed_ready_within_a_fine_step_not_a_poll_tick(
    waiting: Callable[[float, float], None], runtime: FakeRuntime
) -> None:
    # A redeploy or a woken call waits for the job's first answer: each tick between that answer and
    # our noticing it is waiting for nothing (it was 0.1 s, as much again as a by-hand curl loop).
    ready_at = 0.731

    waiting(ready_at, 10)

    assert ready_at <= waiting.clock.now <= ready_at + 0.025  # type: ignore[attr-defined]
    # Docker is asked about the container far less often than the job is probed.
    assert 1 <= len(runtime.calls_to("container_state")) <= 5


def test_a_container_that_exits_while_starting_fails_at_the_next_look(
    waiting: Callable[[float, float], None], runtime: FakeRuntime
) -> None:
    runtime.stopped.add("job-1")

    with pytest.raises(JobStartError, match=r"the job's container exited \(code 0\)"):
        waiting(5, 10)
    assert waiting.clock.now < 0.3  # type: ignore[attr-defined]


def test_a_container_never_ready_fails_with_the_checks_reason_after_the_timeout(
    waiting: Callable[[float, float], None],
) -> None:
    with pytest.raises(JobStartError, match="not ready within 3 s"):
        waiting(99, 3)


def test_an_entrypoint_that_fails_after_live_passed_fails_the_start_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The entrypoint loads after the wrapper's server starts: a fine-grained probe can see /live
    # pass before the import fails. The start must still fail at once, with the error, not wait
    # out the start timeout on a /ready that answers 500.
    loaded = {"failed": False}

    def wrapper(address: str, path: str) -> tuple[int | None, object]:
        if not loaded["failed"]:
            return (200, {"live": True, "deployment_timestamp": DEPLOYED}) if path == "/live" else (503, None)
        if path == "/live":
            return 500, {"live": False, "deployment_timestamp": DEPLOYED, "error": "ModuleNotFoundError: no x"}
        return 500, {"ready": False}

    monkeypatch.setattr("racetrackd.jobs.probes.probe", wrapper)
    check = WrapperStarted("job:7000", DEPLOYED)

    assert check.passed() is False  # /live passed, /ready not yet
    loaded["failed"] = True
    with pytest.raises(StartFailed, match="job initialization error: ModuleNotFoundError: no x"):
        check.passed()
