"""Each job version's calls over time: per-minute counts of calls, errors and latency in the registry.

The gateway's HTTP workers count calls in memory (`CallTally.record`, a dict update on the event
loop) and add them to the registry's `call_bucket` rows with the last-call flush
(racetrackd.gateway.lastcall), every few seconds. Several workers flush independently: `write`
is an upsert that adds to a minute's row, so no worker overwrites another's counts. Rows older
than the retention (RACETRACK_CALL_STATS_RETENTION) are purged by the same flushers.

`series` reads them back for the API and the dashboard: counts per step (a whole number of
minutes), with p50 and p95 estimated from fixed latency buckets (as Prometheus' histogram_quantile
does: linear within the bucket that holds the quantile).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from peewee import EXCLUDED

from racetrackd.db import CallBucket, database
from racetrackd.errors import ValidationError

MINUTE = 60
# Upper bounds (seconds) of the latency buckets; one more bucket holds the calls slower than the last.
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_COLUMNS = tuple(f"latency_le_{index}" for index in range(len(LATENCY_BOUNDS) + 1))
COUNT_COLUMNS = ("calls", "errors", "redirects", "client_errors")
MAX_POINTS = 2000  # points one series request may ask for (24 h at one minute is 1440)
PURGE_EVERY_SECONDS = 600.0  # how often a flushing worker deletes rows past the retention

Key = tuple[str, str, int]  # job name, job version, minute


@dataclasses.dataclass
class Tally:
    """Calls of one job version in one minute (or one step of a series)."""

    calls: int = 0
    errors: int = 0
    redirects: int = 0
    client_errors: int = 0
    latency_sum: float = 0.0
    histogram: list[int] = dataclasses.field(default_factory=lambda: [0] * len(LATENCY_COLUMNS))

    def add(self, status: int, seconds: float) -> None:
        """One call answered `status` after `seconds` (a gateway failure comes with its own 5xx)."""
        self.calls += 1
        if status >= 500:
            self.errors += 1
        elif status >= 400:
            self.client_errors += 1
        elif status >= 300:
            self.redirects += 1
        self.latency_sum += seconds
        self.histogram[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1

    def merge(self, other: Tally) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.redirects += other.redirects
        self.client_errors += other.client_errors
        self.latency_sum += other.latency_sum
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    def quantile(self, q: float) -> float | None:
        """The latency below which a share `q` of the calls fell (estimated); None without calls.
        Within the overflow bucket it is the last bound: the series can only say "slower than that"."""
        if not self.calls:
            return None
        rank = q * self.calls
        seen = 0
        for index, count in enumerate(self.histogram):
            if count and seen + count >= rank:
                if index == len(LATENCY_BOUNDS):
                    return LATENCY_BOUNDS[-1]
                lower = LATENCY_BOUNDS[index - 1] if index else 0.0
                return lower + (LATENCY_BOUNDS[index] - lower) * (rank - seen) / count
            seen += count
        return LATENCY_BOUNDS[-1]


class CallTally:
    """One HTTP worker's counts not yet in the registry. `record` runs on the event loop, `take` on
    the flushing thread: a lock (uncontended but for the swap) keeps an increment from being lost."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[Key, Tally] = {}

    def record(self, name: str, version: str, status: int, seconds: float) -> None:
        minute = int(self._clock()) // MINUTE * MINUTE
        key = (name, version, minute)
        with self._lock:
            tally = self._pending.get(key)
            if tally is None:
                tally = self._pending[key] = Tally()
            tally.add(status, seconds)

    def take(self) -> dict[Key, Tally]:
        """What was counted since the last take; the tally starts again from nothing."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def put_back(self, taken: dict[Key, Tally]) -> None:
        """Counts a failed write did not store: added to what came since, for the next flush."""
        with self._lock:
            for key, tally in taken.items():
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = tally
                else:
                    pending.merge(tally)


def write(taken: dict[Key, Tally]) -> None:
    """Add `taken` to the registry's minute rows (inside the caller's transaction): an upsert that
    sums, so workers flushing the same minute each add their own calls."""
    if not taken:
        return
    fields = [getattr(CallBucket, column) for column in (*COUNT_COLUMNS, "latency_sum", *LATENCY_COLUMNS)]
    rows = [
        {
            "job_name": name,
            "job_version": version,
            "minute": minute,
            "calls": tally.calls,
            "errors": tally.errors,
            "redirects": tally.redirects,
            "client_errors": tally.client_errors,
            "latency_sum": tally.latency_sum,
            **dict(zip(LATENCY_COLUMNS, tally.histogram, strict=True)),
        }
        for (name, version, minute), tally in taken.items()
    ]
    # SQLite allows 32766 variables per statement; a row has 19.
    for start in range(0, len(rows), 500):
        CallBucket.insert_many(rows[start : start + 500]).on_conflict(
            conflict_target=[CallBucket.job_name, CallBucket.job_version, CallBucket.minute],
            update={field: field + getattr(EXCLUDED, field.column_name) for field in fields},
        ).execute()


def purge(before: float) -> int:
    """Delete the minute rows older than `before` (unix seconds); returns how many went."""
    return int(CallBucket.delete().where(CallBucket.minute < int(before) // MINUTE * MINUTE).execute())


@dataclasses.dataclass(frozen=True)
class Point:
    time: int  # unix seconds at the start of the step
    tally: Tally

    def to_dict(self) -> dict[str, Any]:
        tally = self.tally
        return {
            "time": self.time,
            "calls": tally.calls,
            "errors": tally.errors,
            "redirects": tally.redirects,
            "client_errors": tally.client_errors,
            "latency_sum": round(tally.latency_sum, 6),
            "latency_mean": round(tally.latency_sum / tally.calls, 6) if tally.calls else None,
            "latency_p50": _rounded(tally.quantile(0.5)),
            "latency_p95": _rounded(tally.quantile(0.95)),
            "latency_histogram": list(tally.histogram),
        }


@dataclasses.dataclass(frozen=True)
class Series:
    job_name: str
    job_version: str
    since: int
    until: int
    step: int
    points: list[Point]

    @property
    def total(self) -> Tally:
        total = Tally()
        for point in self.points:
            total.merge(point.tally)
        return total

    def to_dict(self) -> dict[str, Any]:
        total = self.total
        return {
            "job_name": self.job_name,
            "job_version": self.job_version,
            "since": self.since,
            "until": self.until,
            "step": self.step,
            "latency_bounds": list(LATENCY_BOUNDS),  # the histogram's upper bounds; one more bucket above
            "totals": {
                "calls": total.calls,
                "errors": total.errors,
                "redirects": total.redirects,
                "client_errors": total.client_errors,
                "latency_p50": _rounded(total.quantile(0.5)),
                "latency_p95": _rounded(total.quantile(0.95)),
            },
            "points": [point.to_dict() for point in self.points],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def series(name: str, version: str, since: float, until: float, step: int) -> Series:
    """Counts of job `name` `version` per `step` seconds from `since` to `until` (unix seconds, both
    in), every step present (zeros where nothing was called), the first aligned down to a whole step."""
    if step < MINUTE or step % MINUTE:
        raise ValidationError(f"step: must be a whole number of minutes in seconds (60, 300, ...), not {step}")
    if until <= since:
        raise ValidationError("since: must be before until")
    start = int(since) // step * step
    end = int(until) + 1  # `until` is in the series: the minute under way at `until` counts
    count = -(-(end - start) // step)
    if count > MAX_POINTS:
        raise ValidationError(
            f"step: {count} points of {step} s from since to until; at most {MAX_POINTS} (make step larger)"
        )
    sums = ", ".join(f"SUM({column})" for column in (*COUNT_COLUMNS, "latency_sum", *LATENCY_COLUMNS))
    cursor = database.execute_sql(
        f"SELECT minute - (minute % ?) AS step_start, {sums} FROM call_bucket "  # the column names are constants
        "WHERE job_name = ? AND job_version = ? AND minute >= ? AND minute < ? GROUP BY step_start",
        (step, name, version, start, end),
    )
    found: dict[int, Tally] = {}
    for row in cursor.fetchall():
        calls, errors, redirects, client_errors, latency_sum, *histogram = row[1:]
        found[int(row[0])] = Tally(calls, errors, redirects, client_errors, float(latency_sum), list(histogram))
    points = [Point(at, found.get(at) or Tally()) for at in range(start, end, step)]
    return Series(name, version, start, int(until), step, points)
