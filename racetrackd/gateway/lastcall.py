"""When each job version was last called, and its calls per minute (racetrackd.callstats), for the
API's `last_call_time` and `/stats`, `rtd status` and the dashboard, without a registry write per call.

Every HTTP worker notes the latest call time per job version and counts each call in memory (a
dict update on the event loop); a background thread writes what changed at most every
LAST_CALL_FLUSH_SECONDS, in one transaction. Workers flush independently: the write keeps the
later time, so a worker that flushes an older time never moves a job's last call backwards, and
adds its counts to each minute's row, so no worker overwrites another's. The flushers also purge
minute rows past the retention (RACETRACK_CALL_STATS_RETENTION).
"""

from __future__ import annotations

import logging
import threading
import time

from racetrackd import callstats
from racetrackd.db import Job, database

log = logging.getLogger(__name__)

LAST_CALL_FLUSH_SECONDS = 5.0  # how stale the registry's last_call_time may be, at most
CALL_STATS_RETENTION = 7 * 24 * 3600.0  # RACETRACK_CALL_STATS_RETENTION's default


class LastCalls:
    def __init__(
        self,
        flush_seconds: float = LAST_CALL_FLUSH_SECONDS,
        stats_retention: float = CALL_STATS_RETENTION,
        tally: callstats.CallTally | None = None,
    ) -> None:
        self.flush_seconds = flush_seconds
        self.stats_retention = stats_retention
        self.tally = tally or callstats.CallTally()
        self._next_purge = 0.0  # the first flush purges: a daemon that was down leaves old rows
        self._latest: dict[tuple[str, str], float] = {}
        self._written: dict[tuple[str, str], float] = {}
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    def record(self, name: str, version: str) -> None:
        """A call to job `name` at its resolved `version` happened now."""
        self._latest[(name, version)] = time.time()

    def answered(self, name: str, version: str, status: int, seconds: float) -> None:
        """A call to job `name` `version` was answered `status` (the gateway's own on a failure) after
        `seconds`, as its caller saw it: noted as its last call and counted in this minute."""
        self.record(name, version)
        self.tally.record(name, version, status, seconds)

    def flush(self) -> int:
        """Writes the calls noted since the last flush; returns how many job versions' last call it updated."""
        due = {key: when for key, when in list(self._latest.items()) if when > self._written.get(key, 0.0)}
        counted = self.tally.take()
        if due or counted:
            try:
                with database.atomic():
                    for (name, version), when in due.items():
                        Job.update(last_call_time=when).where(
                            (Job.name == name)
                            & (Job.version == version)
                            & (Job.last_call_time.is_null() | (Job.last_call_time < when))
                        ).execute()
                    callstats.write(counted)
            except BaseException:
                self.tally.put_back(counted)  # counted again at the next flush, never lost nor doubled
                raise
            self._written.update(due)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + callstats.PURGE_EVERY_SECONDS
            callstats.purge(time.time() - self.stats_retention)
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
