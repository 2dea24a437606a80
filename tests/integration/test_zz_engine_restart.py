"""Opt-in: jobs survive a restart of the Docker engine itself (RTD_TEST_ENGINE_RESTART=1).

It stops and starts the host's `dockerd` (the one scripts/setup-host.sh started in the background),
so it is off by default and named to run last. The daemon keeps answering meanwhile; afterwards the
job containers are running again (restart policy unless-stopped) and the supervisor has picked up
their new published ports, so calls through the gateway answer again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests.integration.conftest import REPO, Daemon, _remove_labelled, launch_daemon

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("RTD_TEST_ENGINE_RESTART") != "1",
        reason="restarts this host's Docker engine; set RTD_TEST_ENGINE_RESTART=1 to run it",
    ),
]

DOCKERD_LOG = Path("/var/log/racetrackd-dockerd.log")
ENGINE_STOP_TIMEOUT = 60.0
ENGINE_START_TIMEOUT = 60.0
RECOVERY_TIMEOUT = 60.0
_STARTED_ENGINES: list[subprocess.Popen[bytes]] = []  # kept referenced: the engine outlives this test


def _adder(root: Path, name: str, replicas: int = 1) -> Path:
    job_dir = root / name
    job_dir.mkdir()
    shutil.copy(REPO / "samples" / "adder" / "entrypoint.py", job_dir / "entrypoint.py")
    (job_dir / "job.yaml").write_text(
        f"name: {name}\nowner_email: tests@example.com\nversion: 0.0.1\njobtype: python3:latest\n"
        f"replicas: {replicas}\n"
        "jobtype_extra:\n  entrypoint_path: entrypoint.py\n  entrypoint_class: AdderModel\n"
    )
    return job_dir


def _call(daemon: Daemon, name: str) -> Any:
    try:
        response = requests.post(
            f"{daemon.url}/pub/job/{name}/latest/api/v1/perform",
            json={"a": 40, "b": 2},
            headers={"X-Racetrack-Auth": daemon.token},
            timeout=5,
        )
        return response.json() if response.status_code == 200 else f"HTTP {response.status_code}: {response.text}"
    except (requests.RequestException, ValueError) as exc:
        return repr(exc)


def _jobs(daemon: Daemon) -> dict[str, dict[str, Any]]:
    try:
        response = daemon.api("GET", "/lifecycle/api/v1/job")
    except requests.RequestException:
        return {}
    return {job["name"]: job for job in response.json()} if response.status_code == 200 else {}


def _published(container: Any) -> str | None:
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("7000/tcp")
    return f"127.0.0.1:{bindings[0]['HostPort']}" if bindings else None


def _engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has exited; its parent may never reap it


def _restart_engine() -> None:
    """Stop the running dockerd with SIGTERM and start it again with the same command line and environment."""
    pidof = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=False)
    assert pidof.returncode == 0, "no dockerd process on this host (is the engine run some other way?)"
    pids = [int(p) for p in pidof.stdout.split()]
    assert len(pids) == 1, f"more than one dockerd: {pids}"
    pid = pids[0]
    argv = [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    environ = dict(
        entry.decode().split("=", 1)
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if b"=" in entry
    )
    executable = os.readlink(f"/proc/{pid}/exe")
    cwd = os.readlink(f"/proc/{pid}/cwd")

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + ENGINE_STOP_TIMEOUT
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(pid), f"dockerd {pid} did not exit within {ENGINE_STOP_TIMEOUT:g} s of SIGTERM"

    with DOCKERD_LOG.open("ab") as log_file:
        _STARTED_ENGINES.append(
            subprocess.Popen(
                argv,
                executable=executable,
                env=environ,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    deadline = time.monotonic() + ENGINE_START_TIMEOUT
    while not _engine_answers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _engine_answers(), f"dockerd did not answer within {ENGINE_START_TIMEOUT:g} s; see {DOCKERD_LOG}"


def test_jobs_come_back_after_the_docker_engine_restarts(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    own = launch_daemon(tmp_path / "data", docker_client, base_image)
    client = docker_client
    fresh_client: docker.DockerClient | None = None
    stop_polling = threading.Event()
    ready_failures: list[str] = []
    ready_polls: list[int] = []

    def poll_ready() -> None:
        deadline = time.monotonic() + 300  # bounded, whatever happens
        while not stop_polling.is_set() and time.monotonic() < deadline:
            try:
                status = requests.get(own.url + "/ready", timeout=5).status_code
                if status != 200:
                    ready_failures.append(f"/ready answered {status}")
            except requests.RequestException as exc:
                ready_failures.append(repr(exc))
            ready_polls.append(1)
            time.sleep(0.2)

    poller = threading.Thread(target=poll_ready, daemon=True)
    try:
        own.rtd("submit", "-q", str(_adder(tmp_path, "engine-plain")), check=True)
        own.rtd("submit", "-q", str(_adder(tmp_path, "engine-pair", replicas=2)), check=True)
        names = ("engine-plain", "engine-pair")
        assert {name: _call(own, name) for name in names} == {name: 42 for name in names}
        assert len(own.containers()) == 3

        poller.start()
        _restart_engine()
        fresh_client = docker.from_env()  # the old client's pooled connections died with the engine
        fresh_client.ping()
        client = own.docker = fresh_client

        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            jobs = _jobs(own)
            statuses = {name: jobs.get(name, {}).get("status") for name in names}
            containers = own.containers()
            states = sorted((c.name, c.status) for c in containers)
            published = {_published(c) for c in containers if c.status == "running"}
            routed = {address for name in names for address in jobs.get(name, {}).get("replica_internal_names") or []}
            answers = {name: _call(own, name) for name in names}
            recovered = (
                statuses == {name: "running" for name in names}
                and len(containers) == 3
                and all(status == "running" for _, status in states)
                and routed == published
                and answers == {name: 42 for name in names}
            )
            if recovered or time.monotonic() > deadline:
                break
            time.sleep(1)

        assert statuses == {name: "running" for name in names}, jobs
        assert len(states) == 3 and all(status == "running" for _, status in states), states
        assert routed == published, f"the daemon routes to {routed}, the containers are published on {published}"
        assert answers == {name: 42 for name in names}
        stop_polling.set()
        poller.join(timeout=10)
        assert len(ready_polls) > 10
        assert ready_failures == []
    finally:
        stop_polling.set()
        own.stop()
        _remove_labelled(client, own.instance)
        if fresh_client is not None:
            fresh_client.close()
