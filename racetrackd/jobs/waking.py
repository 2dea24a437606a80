"""Waking a job that was scaled to zero: the first call starts its replicas and waits for /ready.

Several HTTP workers may get a call for the same sleeping job at once: one of them claims the
wake-up in the registry (sleeping -> waking), the others wait for it to finish.
"""

from __future__ import annotations

import logging
import time

from racetrackd.db import Job, JobStatus
from racetrackd.docker.orchestrator import RUNNING, Orchestrator
from racetrackd.errors import RacetrackError, UpstreamError
from racetrackd.jobs.probes import check_ready
from racetrackd.serving import Serving

log = logging.getLogger(__name__)


def wake(job: Job, orchestrator: Orchestrator, timeout: float) -> Job:
    """The job, running again; raises UpstreamError when it does not become ready within `timeout`."""
    if job.claim_wake():
        _start(job, orchestrator, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = Job.find(job.name, job.version)
        if current is None:
            break
        if current.status not in JobStatus.ASLEEP:
            return current
        time.sleep(0.05)
    raise UpstreamError(f"job {job.name} {job.version} did not wake up within {timeout:g} s")


def _start(job: Job, orchestrator: Orchestrator, timeout: float) -> None:
    started = time.monotonic()
    try:
        orchestrator.resume(job.container_name, job.replicas)  # swarm: the service scaled back up
        addresses = _wait_ready(orchestrator, job, started + timeout, Serving.from_json(job.serving))
    except RacetrackError as exc:
        job.mark_crashed(f"waking up failed: {exc.message}")
        raise
    job.mark_awake(addresses)
    log.info("woke job %s %s in %.2f s", job.name, job.version, time.monotonic() - started)


def _wait_ready(orchestrator: Orchestrator, job: Job, deadline: float, serving: Serving) -> list[str]:
    """The addresses of every replica once all answer /ready."""
    waiting = "no replica"
    while time.monotonic() < deadline:
        replicas = orchestrator.replicas(job.container_name, job.replicas, serving.port)
        addresses = [r.address for r in replicas if r.state == RUNNING and r.address]
        if len(addresses) == len(replicas) and all(check_ready(address, serving) is None for address in addresses):
            return addresses
        waiting = next((r.name for r in replicas if r.state != RUNNING or not r.address), replicas[-1].name)
        time.sleep(0.05)
    raise UpstreamError(f"replica {waiting} did not become ready")
