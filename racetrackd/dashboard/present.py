"""What the pages show, computed from registry rows: job families, filters, chart geometry, times."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import yaml

from racetrackd.auth import access
from racetrackd.callstats import Series, Tally
from racetrackd.db import AuthToken, DeletedJob, Deployment, Grant, Job
from racetrackd.metrics import JobCalls

# Status -> the CSS class of its badge (colours in dashboard.css); unknown statuses look neutral.
STATUS_TONES = {
    "running": "ok",
    "sleeping": "idle",
    "waking": "busy",
    "starting": "busy",
    "error": "bad",
    "crashed": "bad",
    "lost": "bad",
    "done": "ok",
    "in_progress": "busy",
    "failed": "bad",
}


def answer_tone(status: str) -> str:
    """The badge of an HTTP status the job answered with: only 4xx and 5xx are errors (red); a
    redirect (3xx) is how web apps answer a form or a bare path, so it looks neutral."""
    if status.startswith("2"):
        return "ok"
    return "bad" if status[:1] in ("4", "5") else "neutral"


JOB_FILTERS = ("name", "owner", "jobtype", "status")


@dataclasses.dataclass(frozen=True)
class JobRow:
    job: Job
    manifest: dict[str, Any]

    @property
    def owner(self) -> str:
        return str(self.manifest.get("owner_email") or "")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    rows: list[JobRow]

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.job.status == status)


def job_rows(jobs: Iterable[Job]) -> list[JobRow]:
    return [JobRow(job, yaml.safe_load(job.manifest_yaml) or {}) for job in jobs]


def filter_rows(rows: list[JobRow], filters: dict[str, str]) -> list[JobRow]:
    """Rows matching every filter given: name and owner by substring, job type by prefix, status exactly."""
    name, owner = filters.get("name", "").lower(), filters.get("owner", "").lower()
    jobtype, status = filters.get("jobtype", ""), filters.get("status", "")
    return [
        row
        for row in rows
        if name in row.job.name.lower()
        and owner in row.owner.lower()
        and row.job.job_type_version.startswith(jobtype)
        and (not status or row.job.status == status)
    ]


def families(rows: list[JobRow]) -> list[Family]:
    """Rows grouped by job name, newest version first within a family."""
    grouped: dict[str, list[JobRow]] = {}
    for row in rows:
        grouped.setdefault(row.job.name, []).append(row)
    return [
        Family(name, sorted(members, key=lambda row: row.job.create_time, reverse=True))
        for name, members in sorted(grouped.items())
    ]


def phase_of(deployment: Deployment) -> str:
    """The phase a deployment is in, or for a finished one the last it reached (where a failed
    one stopped): `finish` clears the current phase, and the Phase column would be empty."""
    if deployment.phase:
        return str(deployment.phase)
    timeline = deployment.phase_timeline()
    return str(timeline[-1]["name"]) if timeline else ""


@dataclasses.dataclass(frozen=True)
class DeletedJobs:
    """Which grants and tokens on the admin page name a job that was deleted and is not deployed
    again. They are kept (a redeploy with --force may want them back) but marked, beside their
    Remove/Revoke action. A grant for a job never deployed yet is not marked: admins grant ahead."""

    live: frozenset[tuple[str, str]]
    live_families: frozenset[str]
    deleted: frozenset[tuple[str, str]]
    deleted_families: frozenset[str]

    @classmethod
    def now(cls) -> DeletedJobs:
        live = frozenset((job.name, job.version) for job in Job.select(Job.name, Job.version))
        deleted = frozenset((row.name, row.version) for row in DeletedJob.select(DeletedJob.name, DeletedJob.version))
        return cls(live, frozenset(n for n, _ in live), deleted, frozenset(n for n, _ in deleted))

    def family_gone(self, family: str) -> bool:
        return family in self.deleted_families and family not in self.live_families

    def grant(self, grant: Grant) -> bool:
        if grant.subject_kind == access.JOB_FAMILY and self.family_gone(grant.subject_name):
            return True
        if grant.job_name is None:
            return False
        if grant.job_version is None:
            return self.family_gone(grant.job_name)
        version = (grant.job_name, grant.job_version)
        return version in self.deleted and version not in self.live

    def token(self, token: AuthToken) -> bool:
        return token.subject_kind == access.JOB_FAMILY and self.family_gone(token.subject_name)


@dataclasses.dataclass(frozen=True)
class Bar:
    label: str
    count: int
    x: float
    height: float


CHART_WIDTH, CHART_HEIGHT, BAR_GAP = 320, 100, 2


def latency_bars(calls: JobCalls) -> list[Bar]:
    """The latency histogram as SVG bars, from the first to the last bucket that holds calls."""
    buckets = calls.latency_buckets
    used = [index for index, (_, count) in enumerate(buckets) if count]
    if not used:
        return []
    shown = buckets[used[0] : used[-1] + 1]
    tallest = max(count for _, count in shown)
    width = CHART_WIDTH / len(shown)
    return [
        Bar(
            label=f"≤ {seconds(bound)}",
            count=count,
            x=round(index * width, 1),
            height=round(CHART_HEIGHT * count / tallest, 1),
        )
        for index, (bound, count) in enumerate(shown)
    ]


def bar_width(bars: list[Bar]) -> float:
    return round(CHART_WIDTH / len(bars) - BAR_GAP, 1) if bars else 0


# The job page's time views: ?range= -> (seconds shown, step of the series, labels of the first and halfway ticks)
TIME_RANGES = {"1h": (3600, 60, ("−60 min", "−30 min")), "24h": (86400, 900, ("−24 h", "−12 h"))}
TIME_RANGE_NAMES = {"1h": "Last hour", "24h": "Last 24 h"}


@dataclasses.dataclass(frozen=True)
class TimeBar:
    x: float
    calls_height: float
    errors_height: float  # the part of the calls bar that were errors, drawn over it from the axis
    label: str  # the step's time and counts, for its tooltip


@dataclasses.dataclass(frozen=True)
class TimeChart:
    """Calls (with errors) per step as bars, and p50/p95 latency per step as lines, on shared time."""

    range: str
    step: int
    bars: list[TimeBar]
    bar_width: float
    calls_max: int  # the calls axis runs from 0 to this
    latency_max: float  # the latency axis runs from 0 to this (seconds)
    p50: list[list[tuple[float, float]]]  # runs of (x, y) over steps that had calls; a gap breaks a line
    p95: list[list[tuple[float, float]]]
    ticks: list[tuple[float, str]]  # x and label along the time axis
    totals: Tally

    @property
    def p50_total(self) -> str:
        return seconds(self.totals.quantile(0.5))

    @property
    def p95_total(self) -> str:
        return seconds(self.totals.quantile(0.95))


def time_chart(series: Series, range_name: str) -> TimeChart:
    """The geometry of the job page's calls-over-time charts (CHART_WIDTH x CHART_HEIGHT each)."""
    points = series.points
    slot = CHART_WIDTH / max(len(points), 1)
    calls_max = max((point.tally.calls for point in points), default=0)
    p50s = [point.tally.quantile(0.5) for point in points]
    p95s = [point.tally.quantile(0.95) for point in points]
    latency_max = max((value for value in p95s if value is not None), default=0.0)
    bars = []
    for index, point in enumerate(points):
        tally = point.tally
        if not tally.calls:
            continue
        scale = CHART_HEIGHT / calls_max
        label = (
            f"{time.strftime('%H:%M', time.gmtime(point.time))} UTC: {tally.calls} calls, {tally.errors} errors"
            f", p50 {seconds(tally.quantile(0.5))}, p95 {seconds(tally.quantile(0.95))}"
        )
        bars.append(
            TimeBar(
                x=round(index * slot, 1),
                calls_height=round(tally.calls * scale, 1),
                errors_height=round(tally.errors * scale, 1),
                label=label,
            )
        )
    _, _, (first, halfway) = TIME_RANGES[range_name]
    return TimeChart(
        range=range_name,
        step=series.step,
        bars=bars,
        bar_width=round(max(slot - 1, 1.0), 1),
        calls_max=calls_max,
        latency_max=latency_max,
        p50=_runs(p50s, slot, latency_max),
        p95=_runs(p95s, slot, latency_max),
        ticks=[(0.0, first), (CHART_WIDTH / 2, halfway), (float(CHART_WIDTH), "now")],
        totals=series.total,
    )


def _runs(values: list[float | None], slot: float, top: float) -> list[list[tuple[float, float]]]:
    """(x, y) of each value at the middle of its slot, in runs broken where a step had no calls."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for index, value in enumerate(values):
        if value is None or not top:
            if current:
                runs.append(current)
            current = []
            continue
        current.append((round((index + 0.5) * slot, 1), round(CHART_HEIGHT - CHART_HEIGHT * value / top, 1)))
    if current:
        runs.append(current)
    return runs


def seconds(value: float | None) -> str:
    """A duration for people: 1.5 ms, 240 ms, 3.2 s, 4 min 10 s."""
    if value is None:
        return "–"
    if value == float("inf"):
        return "∞"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{int(value // 60)} min {int(value % 60)} s"


def ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    elapsed = max(0, int(time.time() - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if elapsed >= size:
            return f"{elapsed // size} {unit} ago"
    return f"{elapsed} s ago"


def when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp)) if timestamp else ""
