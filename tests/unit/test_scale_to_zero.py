"""Scale to zero: idle_timeout in the manifest, the supervisor putting idle jobs to sleep, waking."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from jobmanifest import ManifestInvalid, validate_manifest
from racetrackd.db import Job, JobStatus, open_database
from racetrackd.docker.runtime import ContainerSpec
from racetrackd.errors import UpstreamError
from racetrackd.jobs import waking
from racetrackd.jobs.addressing import PUBLISHED_PORT, Addressing
from racetrackd.jobs.containers import ContainerReplicas
from racetrackd.jobs.supervisor import Supervisor
from racetrackd.settings import Settings
from tests.unit.fakes import FakeRuntime, sample_manifest


@pytest.mark.parametrize(("written", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), (600, 600)])
def test_idle_timeout_takes_durations(written: object, seconds: int) -> None:
    assert validate_manifest(sample_manifest(idle_timeout=written)).idle_timeout == seconds


@pytest.mark.parametrize("written", ["soon", "1d", "2s", True, [5]])
def test_a_bad_idle_timeout_names_the_field(written: object) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        validate_manifest(sample_manifest(idle_timeout=written))

    assert [error.path for error in caught.value.errors] == ["idle_timeout"]


class _Deployer:
    def recreate(self, job: Job) -> None:
        raise AssertionError("nothing is lost here")


def _replicas(runtime: FakeRuntime) -> ContainerReplicas:
    addressing = Addressing(mode=PUBLISHED_PORT, daemon_host="172.18.0.1", port=7102)
    return ContainerReplicas(runtime, addressing, address_of=lambda container, port: f"127.0.0.1:{port + 1}")


@pytest.fixture
def sleepy(make_settings: Callable[..., Settings], runtime: FakeRuntime) -> tuple[Settings, Job]:
    settings = make_settings()
    open_database(settings.database_path)
    job = Job.create(
        name="sleepy",
        version="1.0.0",
        status=JobStatus.RUNNING,
        manifest_yaml="name: sleepy\n",
        job_type_version="python3:1.0.0",
        image_name="img",
        container_name="job-sleepy-v-1-0-0",
        internal_name="127.0.0.1:7001",
        deployment_timestamp=int(time.time()) - 600,
        idle_timeout=60,
    )
    runtime.run_container(
        ContainerSpec(name=job.container_name, image="img", env={}, labels={}, network="racetrack", publish_port=True)
    )
    return settings, job


def test_a_job_idle_longer_than_its_timeout_is_stopped_and_sleeps(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, job = sleepy
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: time.time() - 120)

    Supervisor(settings, _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == JobStatus.SLEEPING
    assert "job-sleepy-v-1-0-0" in runtime.stopped


def test_a_recently_called_job_stays_awake(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, job = sleepy
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: time.time() - 5)

    Supervisor(settings, _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == JobStatus.RUNNING
    assert not runtime.stopped


def test_waking_starts_the_containers_and_returns_the_running_job(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job = sleepy
    Job.update(status=JobStatus.SLEEPING).execute()
    runtime.stopped.add(job.container_name)
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    addressing = Addressing(mode=PUBLISHED_PORT, daemon_host="172.18.0.1", port=7102)

    awake: Any = waking.wake(Job.find("sleepy", "1.0.0"), ContainerReplicas(runtime, addressing), timeout=5)

    assert awake.status == JobStatus.RUNNING
    assert ("start_container", (job.container_name,)) in runtime.calls
    assert awake.deployment_timestamp >= int(time.time()) - 1  # the idle clock starts again


def test_a_job_that_does_not_wake_in_time_is_a_clear_gateway_error(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    Job.update(status=JobStatus.SLEEPING).execute()
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (503, None))
    addressing = Addressing(mode=PUBLISHED_PORT, daemon_host="172.18.0.1", port=7102)

    with pytest.raises(UpstreamError):
        waking.wake(Job.find("sleepy", "1.0.0"), ContainerReplicas(runtime, addressing), timeout=0.3)  # type: ignore[arg-type]

    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == JobStatus.CRASHED and "waking up failed" in (row.error or "")
