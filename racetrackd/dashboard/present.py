"""What the pages show, computed from registry rows: job families, filters, chart geometry, times."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import yaml

from racetrackd.auth import access
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
