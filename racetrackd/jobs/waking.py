"""Waking a job that was scaled to zero: the first call starts its containers and waits for /ready.

Several HTTP workers may get a call for the same sleeping job at once: one of them claims the
wake-up in the registry (sleeping -> waking), the others wait for it to finish.
"""

from __future__ import annotations

import logging
import time

from racetrackd import naming
from racetrackd.db import Job, JobStatus
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import RacetrackError, UpstreamError
from racetrackd.jobs import sleeping
from racetrackd.jobs.addressing import Addressing, job_address
from racetrackd.jobs.probes import PROBE_STEP, check_ready
from racetrackd.serving import Serving

log = logging.getLogger(__name__)


def wake(job: Job, runtime: Runtime, addressing: Addressing, timeout: float, *, start: bool = True) -> Job:
    """The job, running again; raises UpstreamError when it does not become ready within `timeout`.
    `start=False`: only claim the wake-up; the daemon's main process starts it (racetrackd.jobs.waker)."""
    if job.claim_wake() and start:
        _start(job, runtime, addressing, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = Job.find(job.name, job.version)
        if current is None:
            break
        if current.status not in JobStatus.ASLEEP:
            return current
        time.sleep(PROBE_STEP)
    raise UpstreamError(f"job {job.name} {job.version} did not wake up within {timeout:g} s")


def start_claimed(job: Job, runtime: Runtime, addressing: Addressing, timeout: float) -> None:
    """Start a job whose wake-up was claimed (status waking) and record it awake, or crashed."""
    _start(job, runtime, addressing, timeout)


def _start(job: Job, runtime: Runtime, addressing: Addressing, timeout: float) -> None:
    started = time.monotonic()
    names = [naming.replica_container_name(job.container_name, i) for i in range(job.replicas)]
    try:
        for name in names:
            sleeping.wake_container(runtime, name)  # unpaused, or started again
        serving = Serving.from_json(job.serving)
        addresses = [_wait_ready(runtime, addressing, name, started + timeout, serving) for name in names]
    except RacetrackError as exc:
        job.mark_crashed(f"waking up failed: {exc.message}")
        raise
    job.mark_awake(addresses)
    log.info("woke job %s %s in %.2f s", job.name, job.version, time.monotonic() - started)


def _wait_ready(runtime: Runtime, addressing: Addressing, container: str, deadline: float, serving: Serving) -> str:
    while time.monotonic() < deadline:
        try:
            address = job_address(addressing, runtime, container, serving.port)
        except RacetrackError:
            address = None  # the published port is not assigned yet
        if address is not None and check_ready(address, serving) is None:
            return address
        time.sleep(PROBE_STEP)
    raise UpstreamError(f"container {container} did not become ready")
