"""The background worker: claims queued deployments one at a time and carries them out.

Exactly one runs per daemon (and per data dir: `WorkerLock`), however many HTTP workers serve.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import IO

from racetrackd.db import Deployment, DeploymentStatus, database
from racetrackd.deploy.deployer import Deployer, FailureNotRecorded, record_failure
from racetrackd.errors import RacetrackError

log = logging.getLogger(__name__)

# While the queue is empty the worker looks every QUEUE_STEP seconds whether another connection has
# written to the registry (SQLite's `PRAGMA data_version`: a read of a counter, no lock) and tries a
# claim only then, or every poll_interval at the latest: a deployment queued by an HTTP worker is
# taken up within a few milliseconds, and the claim's write lock is not taken 50 times a second.
QUEUE_STEP = 0.01

INTERRUPTED = "interrupted: racetrackd stopped while this deployment was in progress; submit it again"


class WorkerLock:
    """An exclusive lock on DATA_DIR/worker.lock, so two daemons never share one registry's work."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "worker.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("w")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            file.close()
            raise RacetrackError(
                f"another racetrackd already works on {self.path.parent}",
                hint="stop it first (racetrackd stop), or use another RACETRACK_DATA_DIR",
            ) from exc
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class DeploymentWorker:
    """Carries out queued deployments, `concurrency` at a time (threads of this one process)."""

    def __init__(self, deployer: Deployer, poll_interval: float, concurrency: int = 1) -> None:
        self.deployer = deployer
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.stopping = threading.Event()
        # Failed deployments whose failure the registry could not take yet (disk full): retried each turn.
        self._unrecorded: dict[str, FailureNotRecorded] = {}
        self._unrecorded_lock = threading.Lock()

    def fail_interrupted(self) -> None:
        """A deployment claimed by a worker that died can never finish: say so instead of leaving it."""
        for deployment in Deployment.interrupted():
            log.warning("deployment %s was interrupted; marking it failed", deployment.id)
            self.deployer.abandon(deployment)
            deployment.finish(DeploymentStatus.FAILED, INTERRUPTED)

    def run_forever(self) -> None:
        """Claim and carry out deployments until stopped. The caller fails interrupted ones first
        (`fail_interrupted`): the daemon does it before the supervisor's reconcile."""
        helpers = [
            threading.Thread(target=self._loop, name=f"deployer-{n}", daemon=True) for n in range(1, self.concurrency)
        ]
        for thread in helpers:
            thread.start()
        self._loop()
        for thread in helpers:
            thread.join()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._record_unrecorded()
                seen = _data_version()  # before the claim: a deployment queued after it moves the counter
                deployment = Deployment.claim_next()
                if deployment is None:
                    self._await_registry_change(seen)
                    continue
                log.info("deploying %s %s (deployment %s)", deployment.job_name, deployment.job_version, deployment.id)
                self.deployer.run(deployment)
            except FailureNotRecorded as exc:
                log.error("%s; trying again later", exc)
                with self._unrecorded_lock:
                    self._unrecorded[exc.deployment.id] = exc
                self.stopping.wait(self.poll_interval)
            except Exception:  # a full disk or a locked registry must not end the worker for good
                log.exception("deployment worker: unexpected error; carrying on")
                self.stopping.wait(self.poll_interval)

    def _await_registry_change(self, seen: int) -> None:
        """Until another connection writes to the registry (a deployment queued, perhaps), the worker
        is stopped, or poll_interval passed."""
        deadline = time.monotonic() + self.poll_interval
        while not self.stopping.wait(min(QUEUE_STEP, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or _data_version() != seen:
                return

    def _record_unrecorded(self) -> None:
        with self._unrecorded_lock:
            pending = list(self._unrecorded.values())
        for failure in pending:
            record_failure(failure.deployment, failure.message, delays=())  # raises FailureNotRecorded again
            with self._unrecorded_lock:
                self._unrecorded.pop(failure.deployment.id, None)

    def stop(self) -> None:
        self.stopping.set()


def _data_version() -> int:
    """SQLite's count of commits by other connections to the registry, as this thread's connection sees it."""
    return int(database.execute_sql("PRAGMA data_version").fetchone()[0])
