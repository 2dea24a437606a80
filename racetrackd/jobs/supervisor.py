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
        self._long_sleepers: dict[tuple[str, str], float] = {}  # (name, version) -> the sleep already stopped

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

    def check_all(self) -> int:
        """Check every job the supervisor owns now; returns how many were checked."""
        checked = 0
        for job in list(Job.select()):
            if job.status == JobStatus.SLEEPING:
                self._stop_long_sleeper(job)
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
        if status == JobStatus.RUNNING and job.idle_timeout and self._idle_for(job, ready, serving) > job.idle_timeout:
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

    def _idle_for(self, job: Job, ready: list[str], serving: Serving) -> float:
        """Seconds since the last call, or since the job started. A wrapper job says when it was last
        called (its last_call_timestamp metric); a server of its own (docker-proxy, docker-image) has
        no such metric, so the gateway's record of calls through it stands in (written every few
        seconds, so a few seconds late at most: well inside any idle timeout)."""
        last = float(job.deployment_timestamp)
        if not serving.contract:
            return time.time() - max(last, job.last_call_time or 0.0)
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
            self.orchestrator,
            job.container_name,
            job.replicas,
            pause=self.settings.sleep_paused_for > 0,
            still_asleep=lambda: getattr(Job.find(job.name, job.version), "status", None) == JobStatus.SLEEPING,
        )

    def _stop_long_sleeper(self, job: Job) -> None:
        """Stop the paused replicas of a job asleep for longer than sleep_paused_for (freeing their
        memory); once per sleep: the job's update_time is when it went to sleep."""
        if time.time() - job.update_time < self.settings.sleep_paused_for:
            return
        if self._long_sleepers.get((job.name, job.version)) == job.update_time:
            return  # done already for this sleep
        current = Job.find(job.name, job.version)  # not woken (nor redeployed) since the listing
        if current is None or current.status != JobStatus.SLEEPING or self._deploying(current):
            return
        try:
            stopped = self.orchestrator.stop_paused(current.container_name, current.replicas)
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
        while not self.stopping.is_set():
            # swarm: a service or node event (a node died, Swarm moved tasks) wakes the loop early
            self.orchestrator.wait_for_change(interval, self.stopping)
            if self.stopping.is_set():
                break
            try:
                started = time.perf_counter()
                checked = self.check_all()
                self._report_cycle(checked, time.perf_counter() - started, interval)
            except (RacetrackError, peewee.DatabaseError) as exc:  # the supervisor must outlive any one check
                log.error("supervisor check failed: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
