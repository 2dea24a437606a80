"""Scale to zero: idle_timeout in the manifest, the supervisor putting idle jobs to sleep, waking."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jobmanifest import ManifestInvalid, validate_manifest
from racetrackd.db import Job, JobStatus, open_database
from racetrackd.docker.runtime import ContainerSpec
from racetrackd.errors import RacetrackError, UpstreamError
from racetrackd.jobs import sleeping, waking
from racetrackd.jobs.addressing import PUBLISHED_PORT, Addressing
from racetrackd.jobs.containers import ContainerReplicas
from racetrackd.jobs.supervisor import Supervisor
from racetrackd.jobs.waker import Waker
from racetrackd.serving import FORWARD, Serving
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


def test_a_job_idle_longer_than_its_timeout_is_paused_and_sleeps(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, job = sleepy
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: time.time() - 120)

    Supervisor(settings, _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == JobStatus.SLEEPING
    # Paused, not stopped: it keeps its memory and wakes without starting again.
    assert runtime.container_state("job-sleepy-v-1-0-0").status == "paused"
    assert "job-sleepy-v-1-0-0" not in runtime.stopped


def test_with_sleep_paused_for_0_an_idle_job_is_stopped_at_once(
    make_settings: Callable[..., Settings],
    sleepy: tuple[Settings, Job],
    runtime: FakeRuntime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, job = sleepy
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: time.time() - 120)

    Supervisor(make_settings(sleep_paused_for="0"), _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    assert runtime.container_state("job-sleepy-v-1-0-0").status == "exited"
    assert not runtime.calls_to("pause_container")


def test_a_job_asleep_longer_than_sleep_paused_for_is_stopped_once(
    make_settings: Callable[..., Settings], sleepy: tuple[Settings, Job], runtime: FakeRuntime
) -> None:
    _, job = sleepy
    Job.update(status=JobStatus.SLEEPING, update_time=time.time() - 700).execute()
    runtime.pause_container(job.container_name)
    supervisor = Supervisor(make_settings(sleep_paused_for="600"), _replicas(runtime), _Deployer())  # type: ignore[arg-type]

    supervisor.check_all()
    supervisor.check_all()

    assert runtime.container_state(job.container_name).status == "exited"  # its memory freed
    assert len(runtime.calls_to("stop_container")) == 1  # not once per supervisor cycle
    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == JobStatus.SLEEPING  # the status name stays


def test_a_job_asleep_for_less_than_sleep_paused_for_stays_paused(
    make_settings: Callable[..., Settings], sleepy: tuple[Settings, Job], runtime: FakeRuntime
) -> None:
    _, job = sleepy
    Job.update(status=JobStatus.SLEEPING, update_time=time.time() - 100).execute()
    runtime.pause_container(job.container_name)

    Supervisor(make_settings(sleep_paused_for="600"), _replicas(runtime), _Deployer()).check_all()  # type: ignore[arg-type]

    assert runtime.container_state(job.container_name).status == "paused"


def test_waking_a_paused_job_unpauses_it_without_starting_it_again(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job = sleepy
    Job.update(status=JobStatus.SLEEPING).execute()
    runtime.pause_container(job.container_name)
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    addressing = Addressing(mode=PUBLISHED_PORT, daemon_host="172.18.0.1", port=7102)

    awake: Any = waking.wake(Job.find("sleepy", "1.0.0"), ContainerReplicas(runtime, addressing), timeout=5)

    assert awake.status == JobStatus.RUNNING
    assert runtime.container_state(job.container_name).status == "running"
    assert runtime.calls_to("unpause_container") == [(job.container_name,)]
    assert not runtime.calls_to("start_container") and not runtime.calls_to("stop_container")


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


@pytest.mark.parametrize(("called_ago", "asleep"), [(120, True), (5, False), (None, True)])
def test_a_job_with_its_own_server_sleeps_by_the_gateways_last_call(
    sleepy: tuple[Settings, Job],
    runtime: FakeRuntime,
    monkeypatch: pytest.MonkeyPatch,
    called_ago: int | None,
    asleep: bool,
) -> None:
    """docker-proxy and docker-image jobs have no last_call_timestamp metric: the gateway's record
    of calls through it (Job.last_call_time) is their idle clock."""
    settings, job = sleepy
    job.serving = Serving(port=7001, path_mode=FORWARD).to_json()
    job.last_call_time = None if called_ago is None else time.time() - called_ago
    job.save()
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    asked: list[str] = []
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: asked.append(address))

    Supervisor(settings, _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == (JobStatus.SLEEPING if asleep else JobStatus.RUNNING)
    assert (runtime.container_state("job-sleepy-v-1-0-0").status == "paused") == asleep  # asleep: paused first
    assert asked == []  # its server has no such metric to ask


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


def test_a_container_that_cannot_be_paused_is_stopped_instead(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, job = sleepy
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: time.time() - 120)

    def unable_to_freeze(name: str) -> None:
        raise RacetrackError(f"pausing container {name}: OCI runtime pause failed: unable to freeze")

    monkeypatch.setattr(runtime, "pause_container", unable_to_freeze)

    Supervisor(settings, _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    row = Job.find("sleepy", "1.0.0")
    assert row is not None and row.status == JobStatus.SLEEPING
    assert runtime.container_state(job.container_name).status == "exited"  # asleep all the same


def test_a_wake_claimed_by_an_http_worker_is_carried_out_by_the_main_processs_waker(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The HTTP worker has no Docker client (building one made its first wake-up take seconds): it
    # claims the wake-up and waits; the main process, whose client is warm, unpauses the job.
    _, job = sleepy
    Job.update(status=JobStatus.SLEEPING).execute()
    runtime.pause_container(job.container_name)
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    addressing = Addressing(mode=PUBLISHED_PORT, daemon_host="172.18.0.1", port=7102)
    worker_runtime = FakeRuntime()  # what the HTTP worker would use: never asked
    waker = Waker(ContainerReplicas(runtime, addressing), timeout=5)
    thread = threading.Thread(target=waker.run_forever, daemon=True)
    thread.start()
    results: list[Any] = []

    def call_from_an_http_worker() -> None:  # another thread: another registry connection
        results.append(
            waking.wake(
                Job.find("sleepy", "1.0.0"), ContainerReplicas(worker_runtime, addressing), timeout=10, start=False
            )
        )

    caller = threading.Thread(target=call_from_an_http_worker)
    caller.start()
    caller.join(timeout=15)
    waker.stop()
    thread.join(timeout=5)

    assert results and results[0].status == JobStatus.RUNNING
    assert runtime.calls_to("unpause_container") == [(job.container_name,)]
    assert not worker_runtime.calls


def test_the_gateways_see_a_job_asleep_before_it_is_paused_and_a_job_woken_meanwhile_is_left_running(
    sleepy: tuple[Settings, Job], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call the gateway still forwarded to a paused container would hang until the next wake-up
    # (found by bench/wake.py: 10 s, until the long-sleeper stop unpaused it). So the supervisor
    # waits out the gateways' routing refresh first, and pauses nothing if a call woke the job.
    settings, job = sleepy
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (200, None))
    monkeypatch.setattr("racetrackd.jobs.supervisor.last_call_timestamp", lambda address: time.time() - 120)
    waited: list[float] = []

    def a_call_comes_during_the_grace(seconds: float) -> None:
        waited.append(seconds)
        row = Job.find("sleepy", "1.0.0")
        assert row is not None and row.status == JobStatus.SLEEPING  # what the gateways see meanwhile
        row.claim_wake()

    monkeypatch.setattr("racetrackd.jobs.sleeping.time.sleep", a_call_comes_during_the_grace)

    Supervisor(settings, _replicas(runtime), _Deployer()).check(job)  # type: ignore[arg-type]

    assert waited == [sleeping.ROUTES_GRACE] and sleeping.ROUTES_GRACE > 0.25  # the routing table's refresh
    assert not runtime.calls_to("pause_container") and not runtime.calls_to("stop_container")
