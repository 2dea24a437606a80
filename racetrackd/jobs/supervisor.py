"""Keep Docker and the registry in step: statuses that stay true, and a reconcile at start-up.

Docker (or the swarm) is the truth about what runs; the registry is the record of what was asked.
Every few seconds (sooner on a Swarm service or node event) the supervisor looks at each job's
replicas through the orchestrator seam and probes them, and writes the job's status
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
from racetrackd.docker.orchestrator import MISSING, PENDING, RESTARTING, SWARM, Orchestrator
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


class JobReleases(Protocol):
    """What the supervisor needs of whoever starts job releases (deploy.deployer.Deployer).

    A protocol, so that jobs/ does not import deploy/, which sits above it.
    """

    def recreate(self, job: Job) -> None: ...


class Supervisor:
    def __init__(self, settings: Settings, orchestrator: Orchestrator, deployer: JobReleases) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
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
            port = Serving.from_json(job.serving).port
            if any(r.state == MISSING for r in self.orchestrator.replicas(job.container_name, job.replicas, port)):
                log.warning(
                    "job %s %s is missing replicas: starting them again from %s",
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
        """Remove what this daemon labelled but no job owns: replaced releases that were still draining,
        and the staging units of deployments interrupted by a kill (their deployments end failed)."""
        known = {name for job in Job.select() for name in self.orchestrator.members(job.container_name, job.replicas)}
        busy = [
            d.id[:8] for d in Deployment.select(Deployment.id).where(Deployment.status == DeploymentStatus.IN_PROGRESS)
        ]
        for name in self.orchestrator.list_members({naming.LABEL_INSTANCE: self.settings.instance}):
            if name in known or any(name.endswith(f"-{short}") for short in busy):
                continue
            log.warning("removing orphan %s (no job owns it)", name)
            self.orchestrator.remove_member(name)

    def check_all(self) -> None:
        for job in list(Job.select()):
            if job.status in (JobStatus.STARTING, JobStatus.SLEEPING, JobStatus.WAKING) or self._deploying(job):
                continue  # the deployer owns a job while it deploys it; a sleeping job is stopped on purpose
            try:
                self.check(job)
            except RacetrackError as exc:
                log.warning("cannot check job %s %s: %s", job.name, job.version, exc.message)

    def check(self, job: Job) -> None:
        """Compare one job's replicas with its record and write what changed (their addresses too: a
        replica Swarm moved to another node answers elsewhere)."""
        # Work from the record as it is now: a deployment may have switched units since `job` was read.
        fresh = Job.find(job.name, job.version)
        if fresh is None or fresh.container_name != job.container_name or self._deploying(fresh):
            return
        job = fresh
        serving = Serving.from_json(job.serving)
        problems: list[str] = []
        status = JobStatus.RUNNING
        ready: list[str] = []
        crash_count = job.crash_count
        swarm = self.orchestrator.kind == SWARM
        for replica in self.orchestrator.replicas(job.container_name, job.replicas, serving.port):
            name = replica.name
            crash_count = max(crash_count, replica.restart_count)
            if replica.state == MISSING:
                status = _worse(status, JobStatus.LOST)
                problems.append(
                    f"service {name} is missing in the swarm" if swarm else f"container {name} is missing in Docker"
                )
            elif replica.state == PENDING:
                status = _worse(status, JobStatus.ERROR)
                problems.append(f"{name}: waiting for a node: {replica.error or 'pending'}")
            elif not replica.alive or replica.state == RESTARTING:
                status = _worse(status, JobStatus.CRASHED)
                what = replica.error or f"{name} {replica.state}"
                problems.append(
                    with_log_tail(
                        self.orchestrator, job.container_name, replica, f"{what} (exit code {replica.exit_code})"
                    )
                )
                if self.orchestrator.revive(job.container_name, replica):
                    log.warning(
                        "job %s %s: %s stopped (exit code %s); starting it again",
                        job.name,
                        job.version,
                        name,
                        replica.exit_code,
                    )
                    crash_count += 1
            elif replica.address is None:
                status = _worse(status, JobStatus.ERROR)
                problems.append(f"{name}: {replica.state}, no address yet")
            else:
                failure = check_ready(replica.address, serving)
                if failure is None:
                    ready.append(replica.address)
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
            # Converge: a replica that went missing while the daemon ran is created again from
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
        self.orchestrator.stop(job.container_name, job.replicas, IDLE_STOP_SECONDS)  # idle: no calls to wait for

    def _deploying(self, job: Job) -> bool:
        return Deployment.in_progress_for(job.name, job.version)

    def run_forever(self, interval: float) -> None:
        try:
            self.reconcile()
        except (RacetrackError, peewee.DatabaseError) as exc:
            log.error("start-up reconcile failed (the checks carry on): %s", exc)
        while not self.stopping.is_set():
            # swarm: a service or node event (a node died, Swarm moved tasks) wakes the loop early
            self.orchestrator.wait_for_change(interval, self.stopping)
            if self.stopping.is_set():
                break
            try:
                self.check_all()
            except (RacetrackError, peewee.DatabaseError) as exc:  # the supervisor must outlive any one check
                log.error("supervisor check failed: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
