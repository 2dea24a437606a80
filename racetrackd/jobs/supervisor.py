"""Keep Docker and the registry in step: statuses that stay true, and a reconcile at start-up.

Docker is the truth about what runs; the registry is the record of what was asked. Every few
seconds the supervisor looks at each job's container and probes it, and writes the job's status
(running, error, crashed, lost), last error, crash count and current address when they change.
At start-up it also brings back jobs whose containers are gone and removes containers labelled
by this daemon that no job owns.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import peewee

from racetrackd import naming
from racetrackd.db import Deployment, DeploymentStatus, Job, JobStatus
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import RacetrackError
from racetrackd.jobs.logtail import with_log_tail
from racetrackd.jobs.probes import check_ready, last_call_timestamp
from racetrackd.serving import Serving
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

IDLE_STOP_SECONDS = 1
# When replicas disagree, the job shows the worst of their states.
_SEVERITY = [JobStatus.RUNNING, JobStatus.ERROR, JobStatus.CRASHED, JobStatus.LOST]


def _worse(current: str, other: str) -> str:
    return max(current, other, key=_SEVERITY.index)


class JobContainers(Protocol):
    """What the supervisor needs of whoever starts job containers (deploy.deployer.Deployer).

    A protocol, so that jobs/ does not import deploy/, which sits above it.
    """

    def replica_names(self, job: Job) -> list[str]: ...

    def recreate(self, job: Job) -> None: ...

    def address_of(self, container: str, port: int) -> str: ...


class Supervisor:
    def __init__(self, settings: Settings, runtime: Runtime, deployer: JobContainers) -> None:
        self.settings = settings
        self.runtime = runtime
        self.deployer = deployer
        self.stopping = threading.Event()

    def reconcile(self) -> None:
        """At start-up: remove orphans, bring back lost jobs, then refresh every status."""
        self._remove_orphans()
        # Rows are read whole before anything is written: in WAL mode a connection that still has a
        # read open cannot start a write once another process wrote ("database is locked" at once).
        for job in list(Job.select()):
            if job.status == JobStatus.STARTING and self._deploying(job):
                continue
            if any(self.runtime.container_state(name).status == "missing" for name in self.deployer.replica_names(job)):
                log.warning(
                    "job %s %s is missing containers: starting them again from %s",
                    job.name,
                    job.version,
                    job.image_name,
                )
                try:
                    self.deployer.recreate(job)
                except RacetrackError as exc:
                    log.error("could not bring back job %s %s: %s", job.name, job.version, exc.message)
        self.check_all()

    def _remove_orphans(self) -> None:
        known = {name for job in Job.select() for name in self.deployer.replica_names(job)}
        busy = [
            d.id[:8] for d in Deployment.select(Deployment.id).where(Deployment.status == DeploymentStatus.IN_PROGRESS)
        ]
        for name in self.runtime.list_containers({naming.LABEL_INSTANCE: self.settings.instance}):
            if name in known or any(name.endswith(f"-{short}") for short in busy):
                continue
            log.warning("removing orphan container %s (no job owns it)", name)
            self.runtime.remove_container(name)

    def check_all(self) -> int:
        """Check every job the supervisor owns now; returns how many were checked."""
        checked = 0
        for job in list(Job.select()):
            if job.status in (JobStatus.STARTING, JobStatus.SLEEPING, JobStatus.WAKING) or self._deploying(job):
                continue  # the deployer owns a job while it deploys it; a sleeping job is stopped on purpose
            checked += 1
            try:
                self.check(job)
            except RacetrackError as exc:
                log.warning("cannot check job %s %s: %s", job.name, job.version, exc.message)
        return checked

    @staticmethod
    def _report_cycle(checked: int, seconds: float, interval: float) -> None:
        # Each cycle at debug level (bench/scale.py reads it); a warning when the checks take
        # longer than the pause between them, i.e. a job's status is older than the interval says.
        log.debug("supervisor cycle: %d jobs checked in %.3f s", checked, seconds)
        if seconds > interval:
            log.warning(
                "supervisor cycle took %.1f s for %d jobs, longer than supervisor_interval (%g s)",
                seconds,
                checked,
                interval,
            )

    def check(self, job: Job) -> None:
        """Compare one job's containers with its record and write what changed."""
        # Work from the record as it is now: a deployment may have switched containers since `job` was read.
        fresh = Job.find(job.name, job.version)
        if fresh is None or fresh.container_name != job.container_name or self._deploying(fresh):
            return
        job = fresh
        serving = Serving.from_json(job.serving)
        problems: list[str] = []
        status = JobStatus.RUNNING
        ready: list[str] = []
        crash_count = job.crash_count
        for name in self.deployer.replica_names(job):
            state = self.runtime.container_state(name)
            crash_count = max(crash_count, state.restart_count)
            if state.status == "missing":
                status = _worse(status, JobStatus.LOST)
                problems.append(f"container {name} is missing in Docker")
            elif not state.alive or state.status == "restarting":
                status = _worse(status, JobStatus.CRASHED)
                problems.append(
                    with_log_tail(self.runtime, name, f"container {name} {state.status} (exit code {state.exit_code})")
                )
                if state.status in ("exited", "dead"):
                    # Docker's restart policy does not cover a container killed from outside: start it.
                    log.warning(
                        "job %s %s: %s stopped (exit code %s); starting it again",
                        job.name,
                        job.version,
                        name,
                        state.exit_code,
                    )
                    self.runtime.start_container(name)
                    crash_count += 1
            else:
                address = self.deployer.address_of(name, serving.port)
                failure = check_ready(address, serving)
                if failure is None:
                    ready.append(address)
                else:
                    status = _worse(status, JobStatus.ERROR)
                    problems.append(f"{name}: {failure}")
        error = "\n".join(problems) or None
        # Idle time comes from the wrapper's last_call_timestamp metric; other jobs have none to ask.
        if (
            status == JobStatus.RUNNING
            and job.idle_timeout
            and serving.wrapper
            and self._idle_for(job, ready) > job.idle_timeout
        ):
            self._put_to_sleep(job)
            return
        if status != job.status:
            log.info("job %s %s: %s -> %s", job.name, job.version, job.status, status)
        job.record_check(status, error, ready, crash_count)
        current = Job.find(job.name, job.version)  # not deleted or redeployed meanwhile
        if (
            status == JobStatus.LOST
            and current is not None
            and current.container_name == job.container_name
            and not self._deploying(current)
        ):
            # Converge: a container that went missing while the daemon ran is created again from
            # the job's image (the record says it should run). The next check sees the result.
            try:
                self.deployer.recreate(job)
            except RacetrackError as exc:
                log.error("could not bring back job %s %s: %s", job.name, job.version, exc.message)

    def _idle_for(self, job: Job, ready: list[str]) -> float:
        """Seconds since the last call (the job's own last_call_timestamp metric), or since it started."""
        last = float(job.deployment_timestamp)
        for address in ready:
            last = max(last, last_call_timestamp(address) or 0.0)
        return time.time() - last

    def _put_to_sleep(self, job: Job) -> None:
        log.info(
            "job %s %s had no calls for %ss: stopping it until the next call", job.name, job.version, job.idle_timeout
        )
        job.mark_sleeping()
        for name in self.deployer.replica_names(job):
            self.runtime.stop_container(name, IDLE_STOP_SECONDS)  # idle: there are no calls to wait for

    def _deploying(self, job: Job) -> bool:
        return Deployment.in_progress_for(job.name, job.version)

    def run_forever(self, interval: float) -> None:
        try:
            self.reconcile()
        except (RacetrackError, peewee.DatabaseError) as exc:
            log.error("start-up reconcile failed (the checks carry on): %s", exc)
        while not self.stopping.wait(interval):
            try:
                started = time.perf_counter()
                checked = self.check_all()
                self._report_cycle(checked, time.perf_counter() - started, interval)
            except (RacetrackError, peewee.DatabaseError) as exc:  # the supervisor must outlive any one check
                log.error("supervisor check failed: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
