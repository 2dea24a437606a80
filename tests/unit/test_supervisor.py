"""The supervisor: statuses that follow Docker, orphans removed, lost jobs brought back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from racetrackd import naming
from racetrackd.db import Deployment, Job, JobStatus
from racetrackd.docker.runtime import ContainerSpec, ContainerState
from racetrackd.jobs.addressing import PUBLISHED_PORT, Addressing
from racetrackd.jobs.containers import ContainerReplicas
from racetrackd.jobs.supervisor import Supervisor
from racetrackd.plugins.jobtypes import FORWARD, Serving
from racetrackd.settings import Settings
from tests.unit.fakes import FakeRuntime

MANIFEST = (
    "name: adder\nowner_email: a@example.com\nversion: 1.0.0\njobtype: python3:latest\n"
    "jobtype_extra:\n  entrypoint_path: entrypoint.py\n"
)


class _FakeDeployer:
    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.recreated: list[str] = []

    def recreate(self, job: Job) -> None:
        self.recreated.append(job.container_name)
        self.runtime.run_container(_spec(job.container_name, "main"))

    def replica_names(self, job: Job) -> list[str]:
        return [naming.replica_container_name(job.container_name, i) for i in range(job.replicas)]

    def address_of(self, container: str, port: int) -> str:
        return f"127.0.{port - 7000}.1:{40000 + len(container)}"


def _spec(name: str, instance: str) -> ContainerSpec:
    return ContainerSpec(
        name=name, image="img", env={}, labels={naming.LABEL_INSTANCE: instance}, network="racetrack", publish_port=True
    )


@pytest.fixture
def world(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> tuple[Supervisor, FakeRuntime, _FakeDeployer, dict[str, Any]]:
    from racetrackd.db import open_database

    settings = make_settings()
    open_database(settings.database_path)
    deployer = _FakeDeployer(runtime)
    probes: dict[str, Any] = {"live": 200, "ready": 200}
    monkeypatch.setattr("racetrackd.jobs.probes.probe", lambda address, path: (probes[path.strip("/")], None))
    addressing = Addressing(mode=PUBLISHED_PORT, daemon_host="172.18.0.1", port=7102)
    replicas = ContainerReplicas(runtime, addressing, address_of=deployer.address_of)
    supervisor = Supervisor(settings, replicas, deployer)  # type: ignore[arg-type]
    return supervisor, runtime, deployer, probes


def _job(container: str = "job-adder-v-1-0-0", status: str = JobStatus.RUNNING) -> Job:
    return Job.create(
        name="adder",
        version="1.0.0",
        status=status,
        manifest_yaml=MANIFEST,
        job_type_version="python3:1.0.0",
        image_name="img",
        container_name=container,
        internal_name="127.0.0.1:1",
        deployment_timestamp=1,
    )


def test_a_missing_container_makes_the_job_lost_then_it_is_created_again(world: Any) -> None:
    supervisor, _, deployer, _ = world
    job = _job()

    supervisor.check(job)
    lost = Job.find("adder", "1.0.0")
    assert lost is not None
    supervisor.check(lost)

    assert lost.status == JobStatus.LOST and "missing" in lost.error
    assert deployer.recreated == ["job-adder-v-1-0-0"]
    back = Job.find("adder", "1.0.0")
    assert back is not None and back.status == JobStatus.RUNNING


def test_a_job_deleted_during_the_check_is_not_brought_back(world: Any) -> None:
    supervisor, _, deployer, _ = world
    job = _job()
    Job.delete().execute()  # deleted through the API while the supervisor held the old row

    supervisor.check(job)

    assert deployer.recreated == []


def test_a_crashed_container_reports_its_log_and_crash_count(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    supervisor, runtime, _, _ = world
    job = _job()
    runtime.run_container(_spec(job.container_name, "main"))
    runtime.logs[job.container_name] = "Traceback...\nMemoryError"
    monkeypatch.setattr(runtime, "container_state", lambda name: ContainerState(name, "restarting", 137, 3))

    supervisor.check(job)

    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.CRASHED
    assert row.crash_count == 3
    assert "MemoryError" in row.error


def test_failing_probes_make_the_job_error_and_passing_ones_running_again(world: Any) -> None:
    supervisor, runtime, _, probes = world
    job = _job()
    runtime.run_container(_spec(job.container_name, "main"))
    probes["ready"] = 500

    supervisor.check(job)
    failing = Job.find("adder", "1.0.0")
    probes["ready"] = 200
    assert failing is not None
    supervisor.check(failing)
    healthy = Job.find("adder", "1.0.0")

    assert failing.status == JobStatus.ERROR and "/ready 500" in failing.error
    assert healthy is not None and healthy.status == JobStatus.RUNNING and healthy.error is None
    assert healthy.internal_name == f"127.0.0.1:{40000 + len(job.container_name)}"  # re-resolved


def test_a_proxied_jobs_server_is_probed_on_its_own_port_and_path(world: Any) -> None:
    supervisor, runtime, _, probes = world
    job = _job()
    Job.update(serving=Serving(port=7001, path_mode=FORWARD, probe_path="/").to_json()).where(
        Job.id == job.id
    ).execute()
    runtime.run_container(_spec(job.container_name, "main"))
    probes[""] = None  # nothing answers at / yet; /live and /ready would say 200, but are not asked

    supervisor.check(job)
    failing = Job.find("adder", "1.0.0")
    probes[""] = 404  # any answer below 500: a server is listening
    assert failing is not None
    supervisor.check(failing)
    healthy = Job.find("adder", "1.0.0")

    assert failing.status == JobStatus.ERROR
    assert "probe failing: / on port 7001 unreachable" in failing.error
    assert healthy is not None and healthy.status == JobStatus.RUNNING
    assert healthy.internal_name == f"127.0.1.1:{40000 + len(job.container_name)}"  # the server's port


def test_reconcile_brings_back_lost_jobs_and_removes_orphans(world: Any) -> None:
    supervisor, runtime, deployer, _ = world
    _job()
    runtime.run_container(_spec("job-forgotten-v-0-0-1", "main"))
    runtime.run_container(_spec("job-someone-elses", "another-instance"))

    supervisor.reconcile()

    assert deployer.recreated == ["job-adder-v-1-0-0"]
    assert "job-forgotten-v-0-0-1" not in runtime.containers
    assert "job-someone-elses" in runtime.containers
    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.RUNNING


def test_jobs_being_deployed_are_left_to_the_deployer(world: Any) -> None:
    supervisor, _, _, _ = world
    _job()
    Deployment.create(job_name="adder", job_version="1.0.0", manifest_yaml=MANIFEST)

    supervisor.check_all()

    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.RUNNING


def test_a_stopped_container_is_started_again_and_counted_as_a_crash(world: Any) -> None:
    supervisor, runtime, _, _ = world
    job = _job()
    runtime.run_container(_spec(job.container_name, "main"))
    runtime.stopped.add(job.container_name)  # killed from outside: Docker's restart policy won't help

    supervisor.check(job)

    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.CRASHED and row.crash_count == 1
    assert ("start_container", (job.container_name,)) in runtime.calls
    supervisor.check(row)
    recovered = Job.find("adder", "1.0.0")
    assert recovered is not None and recovered.status == JobStatus.RUNNING and recovered.crash_count == 1


def test_replicas_are_checked_each_and_only_ready_ones_receive_calls(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor, runtime, deployer, _ = world
    job = _job()
    Job.update(replicas=3).where(Job.name == "adder").execute()
    job = Job.find("adder", "1.0.0")
    for index in range(3):
        runtime.run_container(_spec(naming.replica_container_name(job.container_name, index), "main"))
    runtime.stopped.add("job-adder-v-1-0-0-2")  # one replica was killed

    supervisor.check(job)

    row = Job.find("adder", "1.0.0")
    assert row is not None and row.status == JobStatus.CRASHED
    assert row.ready_addresses() == [
        deployer.address_of("job-adder-v-1-0-0", 7000),
        deployer.address_of("job-adder-v-1-0-0-1", 7000),
    ]
    assert ("start_container", ("job-adder-v-1-0-0-2",)) in runtime.calls
    supervisor.check(row)
    healed = Job.find("adder", "1.0.0")
    assert healed is not None and healed.status == JobStatus.RUNNING and len(healed.ready_addresses()) == 3


def test_each_cycle_is_logged_and_one_slower_than_the_interval_is_a_warning(
    world: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor, runtime, _, _ = world
    job = _job()
    runtime.run_container(_spec(job.container_name, "main"))
    clock = iter([100.0, 100.2, 200.0, 205.0])
    monkeypatch.setattr("racetrackd.jobs.supervisor.time.perf_counter", lambda: next(clock))
    stops = iter([False, False, False, False, True])  # two cycles (asked before and after each wait), then stop
    monkeypatch.setattr(supervisor.stopping, "is_set", lambda: next(stops))
    monkeypatch.setattr(supervisor.orchestrator, "wait_for_change", lambda interval, stop: None)
    monkeypatch.setattr(supervisor, "reconcile", lambda: None)
    caplog.set_level("DEBUG", logger="racetrackd.jobs.supervisor")

    supervisor.run_forever(3.0)

    messages = [(r.levelname, r.getMessage()) for r in caplog.records if "supervisor cycle" in r.getMessage()]
    assert messages == [
        ("DEBUG", "supervisor cycle: 1 jobs checked in 0.200 s"),
        ("DEBUG", "supervisor cycle: 1 jobs checked in 5.000 s"),
        ("WARNING", "supervisor cycle took 5.0 s for 1 jobs, longer than supervisor_interval (3 s)"),
    ]
