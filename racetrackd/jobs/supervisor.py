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
from racetrackd.jobs import sleeping
from racetrackd.jobs.logtail import with_log_tail
from racetrackd.jobs.probes import check_ready, last_call_timestamp
from racetrackd.serving import Serving
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

IDLE_STOP_SECONDS = sleeping.IDLE_STOP_SECONDS
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
        self._long_sleepers: dict[tuple[str, str], float] = {}  # (name, version) -> the sleep already stopped

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

    def check_all(self) -> None:
        for job in list(Job.select()):
            if job.status == JobStatus.SLEEPING:
                self._stop_long_sleeper(job)
            if job.status in (JobStatus.STARTING, JobStatus.SLEEPING, JobStatus.WAKING) or self._deploying(job):
                continue  # the deployer owns a job while it deploys it; a sleeping job is stopped on purpose
            try:
                self.check(job)
            except RacetrackError as exc:
                log.warning("cannot check job %s %s: %s", job.name, job.version, exc.message)

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
        # Paused first (memory kept, woken at once), stopped after sleep_paused_for: jobs/sleeping.py.
        sleeping.put_to_sleep(
            self.runtime,
            self.deployer.replica_names(job),
            pause=self.settings.sleep_paused_for > 0,
            still_asleep=lambda: getattr(Job.find(job.name, job.version), "status", None) == JobStatus.SLEEPING,
        )

    def _stop_long_sleeper(self, job: Job) -> None:
        """Stop the paused containers of a job asleep for longer than sleep_paused_for (freeing their
        memory); once per sleep: the job's update_time is when it went to sleep."""
        if time.time() - job.update_time < self.settings.sleep_paused_for:
            return
        if self._long_sleepers.get((job.name, job.version)) == job.update_time:
            return  # done already for this sleep
        current = Job.find(job.name, job.version)  # not woken (nor redeployed) since the listing
        if current is None or current.status != JobStatus.SLEEPING or self._deploying(current):
            return
        try:
            stopped = sleeping.stop_paused(self.runtime, self.deployer.replica_names(current))
        except RacetrackError as exc:
            log.warning("could not stop sleeping job %s %s: %s", job.name, job.version, exc.message)
            return
        self._long_sleepers[(job.name, job.version)] = current.update_time
        if stopped:
            log.info(
                "job %s %s asleep for %ss: stopped %s", job.name, job.version, self.settings.sleep_paused_for, stopped
            )

    def _deploying(self, job: Job) -> bool:
        return Deployment.in_progress_for(job.name, job.version)

    def run_forever(self, interval: float) -> None:
        try:
            self.reconcile()
        except (RacetrackError, peewee.DatabaseError) as exc:
            log.error("start-up reconcile failed (the checks carry on): %s", exc)
        while not self.stopping.wait(interval):
            try:
                self.check_all()
            except (RacetrackError, peewee.DatabaseError) as exc:  # the supervisor must outlive any one check
                log.error("supervisor check failed: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
