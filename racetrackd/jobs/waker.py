"""Wake-ups carried out in the daemon's main process, for the HTTP workers.

A call to a sleeping job reaches an HTTP worker, which has no Docker client: building one there
(importing the Docker SDK, connecting) made each worker's first wake-up take seconds, and keeping
one in every worker would cost each its memory. So the worker only claims the wake-up in the
registry (sleeping -> waking, racetrackd.jobs.waking) and waits; this thread, in the main process
with its Docker client warm, notices the claim within milliseconds (SQLite's `PRAGMA data_version`
moves when another connection commits: a read of a counter, no lock) and unpauses or starts the
job's replicas, one thread per job so that one slow start does not hold up the others.
"""

from __future__ import annotations

import logging
import threading

from racetrackd.db import Job, JobStatus, database
from racetrackd.docker.orchestrator import Orchestrator
from racetrackd.errors import RacetrackError
from racetrackd.jobs import waking

log = logging.getLogger(__name__)

STEP = 0.01  # seconds between looks at the registry's commit counter


class Waker:
    def __init__(self, orchestrator: Orchestrator, timeout: float) -> None:
        self.orchestrator = orchestrator
        self.timeout = timeout
        self.stopping = threading.Event()
        self._busy: set[tuple[str, str]] = set()  # jobs being woken by a thread of ours
        self._lock = threading.Lock()

    def run_forever(self) -> None:
        seen: int | None = None
        while not self.stopping.wait(STEP):
            try:
                version = _data_version()
                if version == seen:
                    continue
                seen = version
                self.wake_claimed()
            except Exception:  # a registry hiccup must not end the thread: look again next time
                log.exception("waker: looking for claimed wake-ups failed")

    def wake_claimed(self) -> None:
        """Start a thread for each job claimed for waking (status waking) that none of ours is on."""
        for job in list(Job.select().where(Job.status == JobStatus.WAKING)):
            key = (job.name, job.version)
            with self._lock:
                if key in self._busy:
                    continue
                self._busy.add(key)
            threading.Thread(target=self._wake, args=(job, key), daemon=True, name=f"wake-{job.name}").start()

    def _wake(self, job: Job, key: tuple[str, str]) -> None:
        try:
            waking.start_claimed(job, self.orchestrator, self.timeout)
        except RacetrackError as exc:  # recorded on the job (crashed) by start_claimed; the caller gets a 502
            log.warning("waking %s %s failed: %s", job.name, job.version, exc.message)
        finally:
            with self._lock:
                self._busy.discard(key)

    def stop(self) -> None:
        self.stopping.set()


def _data_version() -> int:
    return int(database.execute_sql("PRAGMA data_version").fetchone()[0])
