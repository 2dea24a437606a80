"""Lifecycle through the real daemon: redeploys without failed calls."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import yaml

from cli.packing import pack
from tests.integration.conftest import FIXTURES, REPO, Daemon, _remove_labelled, launch_daemon
from tests.integration.steady import adder_status, steady_calls

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def steady_job(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Path:
    job_dir = tmp_path_factory.mktemp("steady")
    shutil.copy(REPO / "samples" / "adder" / "entrypoint.py", job_dir / "entrypoint.py")
    (job_dir / "job.yaml").write_text(
        "name: steady\nowner_email: tests@example.com\nversion: 1.0.0\njobtype: python3:latest\n"
        "jobtype_extra:\n  entrypoint_path: entrypoint.py\n"
    )
    daemon.rtd("submit", str(job_dir), check=True)
    return job_dir


def test_a_forced_redeploy_under_load_fails_no_call(daemon: Daemon, steady_job: Path) -> None:
    calls = adder_status(f"{daemon.url}/pub/job/steady/latest/api/v1/perform", daemon.token)
    with steady_calls(calls) as results:
        time.sleep(0.5)
        redeploy = daemon.rtd("submit", "--force", "-q", str(steady_job))
        time.sleep(1.0)
        # A code-only redeploy takes seconds now: on a busy machine the callers may not have made
        # enough calls by then to judge by; the new version serves the rest.
        enough = time.monotonic() + 15
        while len(results) <= 50 and time.monotonic() < enough:
            time.sleep(0.1)

    assert redeploy.returncode == 0, redeploy.stderr
    assert len(results) > 50
    assert [code for code in results if code != 200] == []
    # The replaced container finishes its calls in the background, then goes.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        names = [c.name for c in daemon.containers() if c.labels["job-name"] == "steady"]
        if names == [f"{daemon.instance}-job-steady-v-1-0-0"]:
            break
        time.sleep(0.5)
    assert names == [f"{daemon.instance}-job-steady-v-1-0-0"]


def test_rollback_restores_the_previous_release_without_a_build(daemon: Daemon, steady_job: Path) -> None:
    entrypoint = steady_job / "entrypoint.py"
    original = entrypoint.read_text()
    entrypoint.write_text(original.replace("return a + b", "return a + b + 1000"))
    try:
        daemon.rtd("submit", "--force", "-q", str(steady_job), check=True)
        changed = daemon.api("POST", "/pub/job/steady/1.0.0/api/v1/perform", json={"a": 40, "b": 2}).json()

        rolled_back = daemon.rtd("rollback", "steady", "--version", "1.0.0")
        restored = daemon.api("POST", "/pub/job/steady/1.0.0/api/v1/perform", json={"a": 40, "b": 2}).json()
    finally:
        entrypoint.write_text(original)

    assert changed == 1042
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert restored == 42
    latest = daemon.api("GET", "/lifecycle/api/v1/deploy", params={"job_name": "steady", "limit": 1}).json()[0]
    assert latest["kind"] == "rollback"
    assert [p["name"] for p in latest["phases"]] == ["starting Job server", "initializing Job entrypoint"]
    history = daemon.rtd("deployments", "steady", check=True).stdout
    assert "rollback" in history and "deploy" in history
    audit = daemon.rtd("audit", "steady", check=True).stdout
    assert "Job steady 1.0.0 rolled back by admin" in audit
    assert "Job steady 1.0.0 redeployed by admin" in audit


def test_logs_show_the_jobs_own_output(daemon: Daemon, steady_job: Path) -> None:
    tracing_id = "logs-test-0001"
    daemon.api(
        "POST",
        "/pub/job/steady/1.0.0/api/v1/perform",
        json={"a": 1, "b": 2},
        headers={"X-Request-Tracing-Id": tracing_id},
    )
    time.sleep(0.5)  # the job's access log is flushed every 0.2 s

    logs = daemon.rtd("logs", "steady", "--tail", "50", check=True).stdout

    assert tracing_id in logs


def _job(daemon: Daemon, name: str, version: str) -> dict[str, object]:
    return daemon.api("GET", f"/lifecycle/api/v1/job/{name}/{version}").json()


def test_a_killed_job_gives_502_json_then_is_brought_back(daemon: Daemon, steady_job: Path) -> None:
    # The serving container, not one an earlier redeploy retired (it drains in the background).
    container = next(c for c in daemon.containers() if c.labels["job-name"] == "steady" and "-retiring-" not in c.name)
    before = _job(daemon, "steady", "1.0.0")

    # Stopped (not killed): Docker's restart policy would start a killed container again at once,
    # at the same address, and the gateway's retry on a fresh connection would then answer 200.
    container.stop(timeout=0)
    down = daemon.api("POST", "/pub/job/steady/1.0.0/api/v1/perform", json={"a": 40, "b": 2})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = _job(daemon, "steady", "1.0.0")
        if (
            after["status"] == "running"
            and after["infrastructure_stats"]["crash_count"] > before["infrastructure_stats"]["crash_count"]
        ):  # type: ignore[index]
            break
        time.sleep(0.5)
    up = daemon.api("POST", "/pub/job/steady/1.0.0/api/v1/perform", json={"a": 40, "b": 2})

    # Down: a JSON error; unless the supervisor (checking every second here) had already started
    # it again at the same address while the gateway was still connecting.
    assert down.status_code in (502, 503) or down.json() == 42, down.text
    if down.status_code != 200:
        assert down.json()["type"] in ("job-unreachable", "job-unavailable")
    assert after["status"] == "running"
    assert up.json() == 42


def test_a_daemon_killed_mid_deployment_recovers_on_restart(
    docker_client: docker.DockerClient, base_image: str, tmp_path: Path
) -> None:
    own = launch_daemon(tmp_path / "data", docker_client, base_image)
    try:
        own.rtd("submit", str(REPO / "samples" / "adder"), check=True)
        adder = next(c for c in own.containers() if c.labels["job-name"] == "adder")
        adder_port = adder.attrs["NetworkSettings"]["Ports"]["7000/tcp"][0]["HostPort"]
        deployment_id = own.api(
            "POST",
            "/lifecycle/api/v1/deploy",
            json={
                "manifest": yaml.safe_load((FIXTURES / "slow-init" / "job.yaml").read_text()),
                "build_context": pack(FIXTURES / "slow-init"),
            },
        ).json()["id"]
        _wait_for_phase(own, deployment_id, "initializing Job entrypoint")

        own.kill()
        served_while_down = requests.post(
            f"http://127.0.0.1:{adder_port}/api/v1/perform", json={"a": 40, "b": 2}, timeout=10
        ).json()
        own.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(c.labels["job-name"] == "slow-init" for c in own.containers()):
            time.sleep(0.5)
        deployment = own.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}").json()
        after_restart = own.api("POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 40, "b": 2})

        assert served_while_down == 42
        assert deployment["status"] == "failed"
        assert deployment["error"].startswith("interrupted")
        assert [c.labels["job-name"] for c in own.containers()] == ["adder"]  # no orphans
        assert adder.id == next(c for c in own.containers() if c.labels["job-name"] == "adder").id
        assert after_restart.json() == 42
    finally:
        own.stop()
        _remove_labelled(docker_client, own.instance)


def _wait_for_phase(daemon: Daemon, deployment_id: str, phase: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if daemon.api("GET", f"/lifecycle/api/v1/deploy/{deployment_id}").json()["phase"] == phase:
            return
        time.sleep(0.2)
    raise AssertionError(f"deployment {deployment_id} never reached {phase!r}")


def test_replicas_share_the_calls(daemon: Daemon, tmp_path: Path) -> None:
    shutil.copy(REPO / "samples" / "adder" / "entrypoint.py", tmp_path / "entrypoint.py")
    (tmp_path / "job.yaml").write_text(
        "name: replicated\nowner_email: tests@example.com\nversion: 1.0.0\njobtype: python3:latest\n"
        "replicas: 2\njobtype_extra:\n  entrypoint_path: entrypoint.py\n"
    )
    daemon.rtd("submit", "-q", str(tmp_path), check=True)

    answers = [
        daemon.api("POST", "/pub/job/replicated/1.0.0/api/v1/perform", json={"a": 40, "b": 2}).json() for _ in range(20)
    ]

    containers = sorted((c for c in daemon.containers() if c.labels["job-name"] == "replicated"), key=lambda c: c.name)
    assert [c.name for c in containers] == [
        f"{daemon.instance}-job-replicated-v-1-0-0",
        f"{daemon.instance}-job-replicated-v-1-0-0-1",
    ]
    assert answers == [42] * 20
    time.sleep(0.5)  # access lines are flushed every 0.2 s
    calls_per_replica = [c.logs().decode().count("POST /api/v1/perform") for c in containers]
    assert all(count >= 5 for count in calls_per_replica), calls_per_replica
    job = daemon.api("GET", "/lifecycle/api/v1/job/replicated/1.0.0").json()
    assert job["replicas"] == 2 and len(job["replica_internal_names"]) == 2


def _sleepy_job(daemon: Daemon, directory: Path, name: str) -> Any:
    """`name` (samples/adder, idle_timeout 5s) deployed; its container."""
    shutil.copy(REPO / "samples" / "adder" / "entrypoint.py", directory / "entrypoint.py")
    (directory / "job.yaml").write_text(
        f"name: {name}\nowner_email: tests@example.com\nversion: 1.0.0\njobtype: python3:latest\n"
        "idle_timeout: 5s\njobtype_extra:\n  entrypoint_path: entrypoint.py\n"
    )
    daemon.rtd("submit", "-q", str(directory), check=True)
    return next(c for c in daemon.containers() if c.labels["job-name"] == name)


def _wait_container(container: Any, status: str, deadline: float) -> None:
    while time.monotonic() < deadline and container.status != status:
        time.sleep(0.2)
        container.reload()


def test_an_idle_job_is_paused_and_the_next_call_unpauses_it(daemon: Daemon, tmp_path: Path) -> None:
    container = _sleepy_job(daemon, tmp_path, "sleepy")
    started_at = container.attrs["State"]["StartedAt"]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _job(daemon, "sleepy", "1.0.0")["status"] != "sleeping":
        time.sleep(0.5)
    asleep = _job(daemon, "sleepy", "1.0.0")
    _wait_container(container, "paused", deadline)
    woken = daemon.api("POST", "/pub/job/sleepy/latest/api/v1/perform", json={"a": 40, "b": 2})
    container.reload()

    assert asleep["status"] == "sleeping"
    assert woken.status_code == 200 and woken.json() == 42
    assert _job(daemon, "sleepy", "1.0.0")["status"] == "running"
    # Unpaused, not started again: the same process served the wake-up call.
    assert container.status == "running" and container.attrs["State"]["StartedAt"] == started_at


def test_a_job_asleep_longer_than_sleep_paused_for_is_stopped_and_a_call_starts_it(
    tmp_path: Path, docker_client: docker.DockerClient, base_image: str
) -> None:
    daemon = launch_daemon(tmp_path / "data", docker_client, base_image, RACETRACK_SLEEP_PAUSED_FOR="2")
    try:
        (tmp_path / "job").mkdir()
        container = _sleepy_job(daemon, tmp_path / "job", "longsleeper")
        deadline = time.monotonic() + 60
        _wait_container(container, "paused", deadline)
        paused = container.status
        _wait_container(container, "exited", deadline)
        asleep = _job(daemon, "longsleeper", "1.0.0")
        woken = daemon.api("POST", "/pub/job/longsleeper/latest/api/v1/perform", json={"a": 40, "b": 2})

        assert paused == "paused" and container.status == "exited"  # paused first, then stopped
        assert asleep["status"] == "sleeping"
        assert woken.status_code == 200 and woken.json() == 42
        assert _job(daemon, "longsleeper", "1.0.0")["status"] == "running"
    finally:
        daemon.stop()
        _remove_labelled(docker_client, daemon.instance)


def test_rollback_of_a_version_with_one_release_goes_back_to_the_older_version(daemon: Daemon, tmp_path: Path) -> None:
    shutil.copy(REPO / "samples" / "adder" / "entrypoint.py", tmp_path / "entrypoint.py")
    (tmp_path / "job.yaml").write_text(
        "name: stepback\nowner_email: tests@example.com\nversion: 1.0.0\njobtype: python3:latest\n"
        "jobtype_extra:\n  entrypoint_path: entrypoint.py\n"
    )
    daemon.rtd("submit", "-q", str(tmp_path), check=True)
    entrypoint = tmp_path / "entrypoint.py"
    entrypoint.write_text(entrypoint.read_text().replace("return a + b", "return a + b + 1000"))
    daemon.rtd("submit", "-q", "-e", "version=2.0.0", str(tmp_path), check=True)

    def latest() -> object:
        return daemon.api("POST", "/pub/job/stepback/latest/api/v1/perform", json={"a": 40, "b": 2}).json()

    assert latest() == 1042
    back = daemon.rtd("rollback", "stepback")
    assert back.returncode == 0, back.stderr
    assert "stepback 2.0.0 runs the release of deployment" in back.stdout and "from version 1.0.0" in back.stdout
    assert latest() == 42
    # 2.0.0 now has two releases: rolling back again returns to its own.
    again = daemon.rtd("rollback", "stepback")
    assert again.returncode == 0, again.stderr
    assert latest() == 1042
