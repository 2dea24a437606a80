"""When each job version was last called, for the API's `last_call_time`, `rtd status` and the
dashboard, without a registry write per call.

Every HTTP worker notes the latest call time per job version in memory (a dict assignment on
the event loop) and a background thread writes what changed at most every
LAST_CALL_FLUSH_SECONDS, in one transaction. Workers flush independently; the write keeps the
later time, so a worker that flushes an older time never moves a job's last call backwards.
"""

from __future__ import annotations

import logging
import threading
import time

from racetrackd.db import Job, database

log = logging.getLogger(__name__)

LAST_CALL_FLUSH_SECONDS = 5.0  # how stale the registry's last_call_time may be, at most


class LastCalls:
    def __init__(self, flush_seconds: float = LAST_CALL_FLUSH_SECONDS) -> None:
        self.flush_seconds = flush_seconds
        self._latest: dict[tuple[str, str], float] = {}
        self._written: dict[tuple[str, str], float] = {}
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    def record(self, name: str, version: str) -> None:
        """A call to job `name` at its resolved `version` happened now."""
        self._latest[(name, version)] = time.time()

    def flush(self) -> int:
        """Writes the calls noted since the last flush; returns how many job versions it updated."""
        due = {key: when for key, when in list(self._latest.items()) if when > self._written.get(key, 0.0)}
        if not due:
            return 0
        with database.atomic():
            for (name, version), when in due.items():
                Job.update(last_call_time=when).where(
                    (Job.name == name)
                    & (Job.version == version)
                    & (Job.last_call_time.is_null() | (Job.last_call_time < when))
                ).execute()
        self._written.update(due)
        return len(due)

    def start(self) -> None:
        if self._flusher is None:
            self._stopping.clear()
            self._flusher = threading.Thread(target=self._flush_forever, daemon=True, name="job-last-call")
            self._flusher.start()

    def stop(self) -> None:
        """Stops the thread and writes what is left (a worker shutting down keeps its last calls)."""
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join(timeout=self.flush_seconds + 1)
            self._flusher = None
        self._flush_logged()

    def _flush_forever(self) -> None:
        while not self._stopping.wait(self.flush_seconds):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception:  # a missed last-call write is not worth a dead thread: the next flush retries
            log.exception("recording job last call times failed")
