"""The e2e tier on a 3-node swarm (marker `swarm_cluster`; `make test-swarm`, which .ci/run calls).

scripts/swarm-lab.sh makes the lab: a manager and two workers, each a container running its own
dockerd (built from Debian packages, nothing pulled), and a password-protected registry
(Debian's docker-registry). racetrackd runs on the host with RACETRACK_ORCHESTRATOR=swarm,
DOCKER_HOST at the manager's socket and RACETRACK_REGISTRY at the lab registry. Measurements
(failed calls while a node dies, redeploy under load) are printed and written to
/tmp/<SWARM_LAB_NAME>-e2e-results.json.

SWARM_LAB_KEEP=1 leaves the lab up after the tests (then `scripts/swarm-lab.sh down`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from racetrackd.docker.runtime import DockerRuntime, RegistryLogin
from racetrackd.settings import SETTINGS
from tests.integration.conftest import FIXTURES, REPO, Daemon, launch_daemon

pytestmark = pytest.mark.swarm_cluster

LAB = REPO / "scripts" / "swarm-lab.sh"
LAB_NAME = os.environ.get("SWARM_LAB_NAME", "rtd-swarm-lab")
LAB_DIR = Path(os.environ.get("SWARM_LAB_DIR", f"/tmp/{LAB_NAME}"))
BASE_IMAGE = "racetrackd/python3-base:bookworm"
PROBE = FIXTURES / "hostname-probe"
RESULTS: dict[str, Any] = {}
HAS_SWARM_BACKEND = any(spec.field == "orchestrator" for spec in SETTINGS)


@dataclasses.dataclass
class Lab:
    env: dict[str, str]  # DOCKER_HOST, RACETRACK_REGISTRY(_USERNAME, _PASSWORD_FILE), RACETRACK_ORCHESTRATOR
    manager: docker.DockerClient  # the manager's engine (the swarm's API)
    host: docker.DockerClient  # the host's engine, where the node containers run

    @property
    def registry(self) -> str:
        return self.env["RACETRACK_REGISTRY"]

    def login(self) -> RegistryLogin:
        return RegistryLogin(
            self.registry, self.env["RACETRACK_REGISTRY_USERNAME"], Path(self.env["RACETRACK_REGISTRY_PASSWORD_FILE"])
        )

    def node_names(self) -> dict[str, str]:
        return {node["ID"]: node["Description"]["Hostname"] for node in self.manager.api.nodes()}

    def wait_nodes_ready(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = [n for n in self.manager.api.nodes() if n["Status"]["State"] == "ready"]
            if len(ready) >= count:
                return
            assert time.monotonic() < deadline, f"only {len(ready)} of {count} swarm nodes ready"
            time.sleep(1)

    def running_tasks(self, service_filter: dict[str, Any]) -> list[dict[str, Any]]:
        tasks = self.manager.api.tasks(filters={**service_filter, "desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    started = time.monotonic()
    subprocess.run([str(LAB), "up"], check=True, timeout=900, stdout=subprocess.PIPE)
    RESULTS["lab_up_seconds"] = round(time.monotonic() - started, 1)
    env = {}
    for line in (LAB_DIR / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    manager = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=120)
    host = docker.from_env()
    found = Lab(env, manager, host)
    try:
        found.wait_nodes_ready(3)
        yield found
    finally:
        manager.close()
        host.close()
        _write_results()
        if os.environ.get("SWARM_LAB_KEEP") != "1":
            subprocess.run([str(LAB), "down"], check=False, timeout=300)


def _write_results() -> None:
    if RESULTS:
        print("\nswarm e2e results:", json.dumps(RESULTS, indent=2))
        if LAB_DIR.is_dir():
            (LAB_DIR.parent / f"{LAB_NAME}-e2e-results.json").write_text(json.dumps(RESULTS, indent=2) + "\n")


# --- the lab itself: images reach every node through the registry ---------------------------------


def _hostname_image_context() -> io.BytesIO:
    dockerfile = (
        f"FROM {BASE_IMAGE}\n"
        'CMD ["python3", "-c", "import http.server, socket\\n'
        "class H(http.server.BaseHTTPRequestHandler):\\n"
        "    def do_GET(self):\\n"
        "        body = socket.gethostname().encode()\\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\\n"
        "        self.wfile.write(body)\\n"
        "http.server.ThreadingHTTPServer(('', 7000), H).serve_forever()\"]\n"
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _get_when_listening(url: str, timeout: float = 30) -> requests.Response:
    """GET once the server is up: a task is `running` as soon as its process starts, before it listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_an_image_pushed_with_the_login_runs_on_every_node_of_the_lab(lab: Lab) -> None:
    """racetrackd's Docker adapter builds on the manager, logs in and pushes; a service created with
    the same client gets the login along (X-Registry-Auth), so workers, which have no credentials of
    their own, pull the private image."""
    client = docker.DockerClient(base_url=lab.env["DOCKER_HOST"], timeout=120)
    runtime = DockerRuntime(lambda: client, registry_login=lab.login())
    ref = f"{lab.registry}/e2e/hostname:{uuid.uuid4().hex[:8]}"
    runtime.build_image(_hostname_image_context(), "Dockerfile", ref, {}, lambda line: None, network="default")
    pushed: list[str] = []
    runtime.push_image(ref, pushed.append)
    service = client.services.create(
        ref,
        name=f"e2e-smoke-{uuid.uuid4().hex[:6]}",
        mode=docker.types.ServiceMode("replicated", replicas=3),
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr", ports=[{"TargetPort": 7000, "PublishMode": "host"}]),
        # one task per node: the test asks each node to pull
        maxreplicas=1,
    )
    try:
        deadline = time.monotonic() + 120
        while len(tasks := lab.running_tasks({"service": service.id})) < 3:
            failed = [t["Status"].get("Err") for t in lab.manager.api.tasks(filters={"service": service.id})]
            assert time.monotonic() < deadline, f"tasks not running after 120 s: {failed}"
            time.sleep(1)
        names = lab.node_names()
        nodes = {t["NodeID"]: names[t["NodeID"]] for t in tasks}
        assert len(nodes) == 3, nodes  # manager and both workers pulled it
        addresses = {n["ID"]: n["Status"]["Addr"] for n in lab.manager.api.nodes()}
        for task in tasks:
            port = task["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
            answer = _get_when_listening(f"http://{addresses[task['NodeID']]}:{port}/")
            assert answer.status_code == 200
            assert answer.text == task["Status"]["ContainerStatus"]["ContainerID"][:12]
        assert any(": digest: sha256:" in line for line in pushed), pushed  # the registry took the manifest
    finally:
        service.remove()
        client.close()


# --- racetrackd in swarm mode on the lab ----------------------------------------------------------

needs_swarm_backend = pytest.mark.skipif(
    not HAS_SWARM_BACKEND, reason="no swarm backend in this checkout (RACETRACK_ORCHESTRATOR, branch swarm-core)"
)


@pytest.fixture(scope="module")
def swarm_daemon(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    network = f"rtd-e2e-{uuid.uuid4().hex[:6]}"
    handle = launch_daemon(
        tmp_path_factory.mktemp("racetrackd-swarm"),
        lab.manager,
        BASE_IMAGE,
        DOCKER_HOST=lab.env["DOCKER_HOST"],
        RACETRACK_ORCHESTRATOR="swarm",
        RACETRACK_NETWORK=network,
        RACETRACK_REGISTRY=lab.registry,
        RACETRACK_REGISTRY_USERNAME=lab.env["RACETRACK_REGISTRY_USERNAME"],
        RACETRACK_REGISTRY_PASSWORD_FILE=lab.env["RACETRACK_REGISTRY_PASSWORD_FILE"],
        RACETRACK_SUPERVISOR_INTERVAL="1",
        RACETRACK_JOB_START_TIMEOUT="180",
        RACETRACK_DRAIN_TIMEOUT="5",  # a replaced release's tasks go within 5 s (its calls are short)
    )
    try:
        yield handle
    finally:
        handle.stop()
        for service in lab.manager.services.list(filters={"label": f"racetrackd.instance={handle.instance}"}):
            service.remove()


@pytest.fixture(scope="module")
def probe(swarm_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hostname-probe with `replicas: 3`, deployed."""
    job = tmp_path_factory.mktemp("probe") / "hostname-probe"
    job.mkdir()
    for name in ("entrypoint.py", "job.yaml"):
        (job / name).write_text((PROBE / name).read_text())
    with (job / "job.yaml").open("a") as manifest:
        manifest.write("replicas: 3\n")
    result = swarm_daemon.rtd("submit", str(job))
    assert result.returncode == 0, result.stdout + result.stderr + swarm_daemon.log_path.read_text()[-3000:]
    return job


def _services_of(lab: Lab, daemon: Daemon) -> list[Any]:
    return lab.manager.services.list(
        filters={"label": [f"racetrackd.instance={daemon.instance}", "job-name=hostname-probe"]}
    )


def _call(daemon: Daemon, timeout: float = 10) -> str | None:
    """One call through the gateway: the hostname that answered, None when it failed."""
    try:
        answer = requests.post(
            f"{daemon.url}/pub/job/hostname-probe/1.0.0/api/v1/perform",
            json={},
            headers={"X-Racetrack-Auth": daemon.token},
            timeout=timeout,
        )
    except requests.RequestException:
        return None
    return str(answer.json()["hostname"]) if answer.status_code == 200 else None


def _container_nodes(lab: Lab, daemon: Daemon) -> dict[str, str]:
    """Short container id (a task's hostname) -> node hostname, over every task of the job's services."""
    names = lab.node_names()
    found = {}
    for service in _services_of(lab, daemon):
        for task in lab.manager.api.tasks(filters={"service": service.id}):
            container = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
            if container:
                found[container[:12]] = names.get(task["NodeID"], task["NodeID"])
    return found


class _CallLoop:
    """Calls the job steadily from a thread: (time, hostname or None) of each call."""

    def __init__(self, daemon: Daemon, interval: float = 0.05) -> None:
        self.daemon = daemon
        self.interval = interval
        self.results: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _CallLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.results.append((time.monotonic(), _call(self.daemon)))
            time.sleep(self.interval)

    def failures(self) -> list[float]:
        return [at for at, host in self.results if host is None]

    def ok_since(self, moment: float) -> int:
        return sum(1 for at, host in self.results if at >= moment and host is not None)


@needs_swarm_backend
def test_three_replicas_spread_over_nodes_and_calls_are_answered_by_several(
    lab: Lab, swarm_daemon: Daemon, probe: Path
) -> None:
    (service,) = _services_of(lab, swarm_daemon)
    tasks = lab.running_tasks({"service": service.id})
    names = lab.node_names()
    assert len(tasks) == 3
    assert len({names[t["NodeID"]] for t in tasks}) >= 2, [names[t["NodeID"]] for t in tasks]
    assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(f"{lab.registry}/")

    answered = [_call(swarm_daemon) for _ in range(200)]

    assert None not in answered
    nodes = _container_nodes(lab, swarm_daemon)
    by_node = Counter(nodes[host] for host in answered if host is not None)
    RESULTS["calls_by_node"] = dict(by_node)
    assert len(by_node) >= 2, by_node


@needs_swarm_backend
def test_a_stopped_worker_node_its_tasks_move_and_the_job_keeps_answering(
    lab: Lab, swarm_daemon: Daemon, probe: Path
) -> None:
    (service,) = _services_of(lab, swarm_daemon)
    names = lab.node_names()
    on_workers = [t for t in lab.running_tasks({"service": service.id}) if "worker" in names[t["NodeID"]]]
    assert on_workers, "no task on a worker to lose"
    victim = names[on_workers[0]["NodeID"]]
    node_container = lab.host.containers.get(victim)  # node containers are named as their hostnames

    with _CallLoop(swarm_daemon) as loop:
        time.sleep(2)
        stopped_at = time.monotonic()
        node_container.stop(timeout=1)
        # Swarm notices the node gone, schedules its tasks elsewhere; the gateway follows.
        deadline = stopped_at + 120
        recovered_at = None
        while time.monotonic() < deadline:
            running = lab.running_tasks({"service": service.id})
            if len(running) == 3 and all(names.get(t["NodeID"]) != victim for t in running):
                recovered_at = recovered_at or time.monotonic()
                if loop.ok_since(recovered_at + 3) >= 20:
                    break
            time.sleep(0.5)
        time.sleep(1)
    try:
        assert recovered_at is not None, "the tasks of the stopped node were not rescheduled within 120 s"
        failures = [at for at in loop.failures() if at >= stopped_at]
        RESULTS["node_loss"] = {
            "calls": sum(1 for at, _ in loop.results if at >= stopped_at),
            "failed_calls": len(failures),
            "failure_window_seconds": round(failures[-1] - failures[0], 1) if failures else 0.0,
            "rescheduled_after_seconds": round(recovered_at - stopped_at, 1),
        }
        assert loop.ok_since(recovered_at + 3) >= 20
        # Answered by the tasks that now run elsewhere, not by a stale address.
        assert all(host is not None for at, host in loop.results if at >= recovered_at + 3)
    finally:
        node_container.start()
        lab.wait_nodes_ready(3, timeout=120)


@needs_swarm_backend
def test_a_forced_redeploy_under_steady_calls_fails_none(lab: Lab, swarm_daemon: Daemon, probe: Path) -> None:
    before = {s.id for s in _services_of(lab, swarm_daemon)}

    with _CallLoop(swarm_daemon) as loop:
        time.sleep(2)
        started = time.monotonic()
        result = swarm_daemon.rtd("submit", "--force", str(probe))
        RESULTS["redeploy_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(3)

    assert result.returncode == 0, result.stdout + result.stderr
    deadline = time.monotonic() + 60  # the old release drains (RACETRACK_DRAIN_TIMEOUT), then goes
    while len(after := {s.id for s in _services_of(lab, swarm_daemon)}) != 1 or not after.isdisjoint(before):
        assert time.monotonic() < deadline, f"services before {before}, now {after}"
        time.sleep(1)
    RESULTS["redeploy_under_load"] = {"calls": len(loop.results), "failed_calls": len(loop.failures())}
    assert loop.failures() == []
    assert len(loop.results) > 20


@needs_swarm_backend
def test_kill_9_of_racetrackd_then_restart_reconciles_without_duplicates(
    lab: Lab, swarm_daemon: Daemon, probe: Path
) -> None:
    (service,) = _services_of(lab, swarm_daemon)

    swarm_daemon.kill()
    swarm_daemon.start()

    deadline = time.monotonic() + 60
    while _call(swarm_daemon) is None:
        assert time.monotonic() < deadline, "the job did not answer within 60 s of the restart"
        time.sleep(0.5)
    services = _services_of(lab, swarm_daemon)
    assert [s.id for s in services] == [service.id]  # adopted, not duplicated
    assert len(lab.running_tasks({"service": service.id})) == 3


# --- a docker-image job whose image only the manager has --------------------------------------------


@needs_swarm_backend
def test_a_docker_image_job_built_only_on_the_manager_runs_on_the_workers_through_the_registry(
    lab: Lab, swarm_daemon: Daemon, tmp_path: Path
) -> None:
    """The everyday case: `docker build -t svc .` on the manager, then deploy that image. racetrackd
    pushes its pin to RACETRACK_REGISTRY, so the workers, which never saw the image, run it too."""
    image = f"e2e-local/hostname:{uuid.uuid4().hex[:8]}"  # no registry in the name: the manager's engine only
    lab.manager.images.build(fileobj=_hostname_image_context(), custom_context=True, tag=image, network_mode="none")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: local-image\nowner_email: tests@example.com\nversion: 1.0.0\njobtype: docker-image:latest\n"
        f"jobtype_extra:\n  image: {image}\n  user_module_port: 7000\n  pull_policy: never\n"
        'replicas: 3\nplacement_constraints: ["node.role == worker"]\n'
    )
    try:
        result = swarm_daemon.rtd("submit", str(job))
        assert result.returncode == 0, result.stdout + result.stderr + swarm_daemon.log_path.read_text()[-3000:]

        (service,) = lab.manager.services.list(
            filters={"label": [f"racetrackd.instance={swarm_daemon.instance}", "job-name=local-image"]}
        )
        pinned = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert pinned.startswith(f"{lab.registry}/") and "/job-local-image:1.0.0-" in pinned, pinned
        names = lab.node_names()
        tasks = lab.running_tasks({"service": service.id})
        assert len(tasks) == 3 and all("worker" in names[t["NodeID"]] for t in tasks), [
            names[t["NodeID"]] for t in tasks
        ]
        for worker in {names[t["NodeID"]] for t in tasks}:  # the worker's engine never had the user's tag
            socket = LAB_DIR / worker.removeprefix(f"{LAB_NAME}-") / "docker.sock"  # hostname: <lab>-worker-N
            worker_engine = docker.DockerClient(base_url=f"unix://{socket}", timeout=60)
            try:
                with pytest.raises(docker.errors.ImageNotFound):
                    worker_engine.images.get(image)
            finally:
                worker_engine.close()
        containers = {(t["Status"].get("ContainerStatus") or {}).get("ContainerID", "")[:12] for t in tasks}
        answered = set()
        for _ in range(30):
            response = requests.get(
                f"{swarm_daemon.url}/pub/job/local-image/1.0.0/api/v1/",
                headers={"X-Racetrack-Auth": swarm_daemon.token},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            answered.add(response.text)
        assert answered <= containers and len(answered) >= 2, (answered, containers)
        RESULTS["docker_image_job_on_workers"] = {"tasks": len(tasks), "answered_by": len(answered)}
    finally:
        swarm_daemon.rtd("delete", "local-image", "--version", "1.0.0")
        lab.manager.images.remove(image, force=True)


# --- chain calls from tasks on worker nodes ---------------------------------------------------------


@needs_swarm_backend
def test_a_job_on_worker_nodes_calls_another_through_the_gateway(
    lab: Lab, swarm_daemon: Daemon, tmp_path: Path
) -> None:
    """call_job inside a task on a worker: PUB_URL must name an address of racetrackd that the node
    reaches, and the callee's replicas (also on workers) answer through the gateway."""
    on_workers = 'replicas: 2\nplacement_constraints: ["node.role == worker"]\n'
    for name, source in (("adder", REPO / "samples" / "adder"), ("chain", FIXTURES / "chain")):
        job = tmp_path / name
        job.mkdir()
        for file in ("entrypoint.py", "job.yaml"):
            (job / file).write_text((source / file).read_text())
        with (job / "job.yaml").open("a") as manifest:
            manifest.write(on_workers)
        result = swarm_daemon.rtd("submit", str(job))
        assert result.returncode == 0, result.stdout + result.stderr + swarm_daemon.log_path.read_text()[-3000:]
    granted = swarm_daemon.api("POST", "/lifecycle/api/v1/auth/allow/job_family/chain/job/adder/scope/call_job")
    assert granted.status_code in (201, 409), granted.text
    try:
        names = lab.node_names()
        for job_name in ("adder", "chain"):
            (service,) = lab.manager.services.list(
                filters={"label": [f"racetrackd.instance={swarm_daemon.instance}", f"job-name={job_name}"]}
            )
            nodes = [names[t["NodeID"]] for t in lab.running_tasks({"service": service.id})]
            assert len(nodes) == 2 and all("worker" in node for node in nodes), (job_name, nodes)

        tracing_ids = [f"chain-{uuid.uuid4().hex[:12]}" for _ in range(10)]
        for number, tracing_id in enumerate(tracing_ids):
            response = swarm_daemon.api(
                "POST",
                "/pub/job/chain/latest/api/v1/perform",
                json={"a": 40, "b": number},
                headers={"X-Request-Tracing-Id": tracing_id},
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"answer": 40 + number, "tracing_id": tracing_id}

        # the callee saw the caller's tracing id: one id follows the call across nodes
        deadline = time.monotonic() + 30
        while tracing_ids[-1] not in (
            logs := swarm_daemon.rtd("logs", "adder", "--version", "0.0.1", "--tail", "0").stdout
        ):
            assert time.monotonic() < deadline, logs[-2000:]
            time.sleep(1)
        RESULTS["chain_calls_on_workers"] = {"calls": len(tracing_ids), "failed": 0}
    finally:
        for job_name, version in (("chain", "0.0.1"), ("adder", "0.0.1")):
            swarm_daemon.rtd("delete", job_name, "--version", version)
