"""The daemon's Prometheus metrics: the gateway's counters and histograms, and registry figures.

Gateway figures are counted where calls pass, in every HTTP worker process; with several
workers prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the daemon for
its gunicorn child) sums them at scrape time. Control-plane figures (jobs by status, deployments
by result, build phase durations, async tasks by state) are read from the registry at scrape
time, so they are right after a restart and need no cross-process bookkeeping.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client import values as metric_values
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from racetrackd.db import AsyncTask, Deployment, Job

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Job latency from 1 ms to ~17 min, doubling (as Racetrack's pub histogram).
LATENCY_BUCKETS = tuple(0.001 * 2**i for i in range(21))
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
PHASE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
RECENT_DEPLOYMENTS = 1000  # phase durations are taken from this many newest deployments

GATEWAY_REQUESTS = Counter(
    "racetrackd_gateway_requests",
    "Calls the gateway answered, by job and status code.",
    ["job_name", "job_version", "status_code"],
)
GATEWAY_ERRORS = Counter(
    "racetrackd_gateway_errors", "Calls the gateway could not complete, by kind.", ["job_name", "job_version", "kind"]
)
GATEWAY_IN_FLIGHT = Gauge(
    "racetrackd_gateway_in_flight", "Calls being forwarded right now.", ["job_name"], multiprocess_mode="livesum"
)
JOB_SECONDS = Histogram(
    "racetrackd_gateway_job_seconds",
    "Time from forwarding a call until the job's answer ended.",
    ["job_name", "job_version"],
    buckets=LATENCY_BUCKETS,
)
OVERHEAD_SECONDS = Histogram(
    "racetrackd_gateway_overhead_seconds",
    "Time the gateway itself added to a call (total minus the job's).",
    buckets=OVERHEAD_BUCKETS,
)
AUTH_FAILURES = Counter("racetrackd_auth_failures", "Calls refused for a missing or wrong token.", ["area"])


class CallMetrics:
    """One job version's label children, looked up once: `labels()` on every call costs."""

    def __init__(self, name: str, version: str) -> None:
        self._labels = (name, version)
        self.in_flight = GATEWAY_IN_FLIGHT.labels(name)
        self.job_seconds = JOB_SECONDS.labels(name, version)
        self._answered: dict[int, Any] = {}

    def answered(self, status: int) -> None:
        child = self._answered.get(status)
        if child is None:
            child = self._answered[status] = GATEWAY_REQUESTS.labels(*self._labels, str(status))
        child.inc()

    def error(self, kind: str) -> None:
        GATEWAY_ERRORS.labels(*self._labels, kind).inc()


_CALL_METRICS: dict[tuple[str, str], CallMetrics] = {}


def for_job(name: str, version: str) -> CallMetrics:
    found = _CALL_METRICS.get((name, version))
    if found is None:
        found = _CALL_METRICS[(name, version)] = CallMetrics(name, version)
    return found


def prepare_multiprocess_dir(path: Path) -> None:
    """Start each daemon run with an empty directory: files of dead processes would count forever."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_remember_pid)


def _process_id() -> int:
    """This process's pid, as of its last fork: prometheus-client asks on every value it writes (to
    notice a fork), and os.getpid() is a system call each time, several per gateway call."""
    return _pid


def use_multiprocess_dir() -> None:
    """Count in MULTIPROC_ENV's directory from now on, in a process forked from one that imported this
    module without it (the daemon's HTTP master): prometheus-client picks its value class at import,
    and an unlabelled metric makes its values then."""
    if os.environ.get(MULTIPROC_ENV):
        metric_values.ValueClass = metric_values.MultiProcessValue(process_identifier=_process_id)
    else:
        metric_values.ValueClass = metric_values.get_value_class()
    for metric in (OVERHEAD_SECONDS,):  # every metric without labels
        metric._metric_init()  # made again with the value class now chosen


def mark_process_dead(pid: int) -> None:
    """Called when an HTTP worker exits, so its in-flight gauge stops counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def render() -> bytes:
    """The exposition text: this process's (or all workers') metrics plus the registry's figures."""
    registry = _gateway_registry()
    registry.register(RegistryCollector())
    return generate_latest(registry)


@dataclasses.dataclass(frozen=True)
class JobCalls:
    """One job version's calls through the gateway since the daemon started (all HTTP workers)."""

    by_status: dict[str, int]
    latency_buckets: list[tuple[float, int]]  # (upper bound in seconds, calls within it and above the last)
    latency_sum: float
    latency_count: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def mean_seconds(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


def job_calls(name: str, version: str) -> JobCalls:
    """The gateway's counters and latency histogram for one job version, read as /metrics would show them."""
    by_status: dict[str, int] = {}
    cumulative: dict[float, float] = {}
    latency_sum = latency_count = 0.0
    for metric in _gateway_registry().collect():
        for sample in metric.samples:
            if sample.labels.get("job_name") != name or sample.labels.get("job_version") != version:
                continue
            if sample.name == "racetrackd_gateway_requests_total":
                status = sample.labels["status_code"]
                by_status[status] = by_status.get(status, 0) + int(sample.value)
            elif sample.name == "racetrackd_gateway_job_seconds_bucket":
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0) + sample.value
            elif sample.name == "racetrackd_gateway_job_seconds_sum":
                latency_sum += sample.value
            elif sample.name == "racetrackd_gateway_job_seconds_count":
                latency_count += sample.value
    buckets, below = [], 0.0
    for bound in sorted(cumulative):
        buckets.append((bound, int(cumulative[bound] - below)))
        below = cumulative[bound]
    return JobCalls(
        by_status=dict(sorted(by_status.items())),
        latency_buckets=buckets,
        latency_sum=latency_sum,
        latency_count=int(latency_count),
    )


def _gateway_registry() -> CollectorRegistry:
    """This process's metrics, or every HTTP worker's when the daemon runs several."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry.register(_Forward(REGISTRY))
    return registry


def render_job(name: str, version: str) -> bytes:
    """One job version's share of the gateway's metrics: what a job with no /metrics of its own
    (docker-proxy) shows at /pub/job/<name>/<version>/metrics."""
    job = CollectorRegistry()
    job.register(_OneJob(_gateway_registry(), name, version))
    return generate_latest(job)


class _OneJob(Collector):
    def __init__(self, source: CollectorRegistry, name: str, version: str) -> None:
        self._source = source
        self._name = name
        self._version = version

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            samples = [
                sample
                for sample in family.samples
                if sample.labels.get("job_name") == self._name
                and sample.labels.get("job_version", self._version) == self._version
            ]
            if samples:
                family.samples = samples
                yield family


class _Forward(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()


class RegistryCollector(Collector):
    """Figures read from the SQLite registry at scrape time."""

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("racetrackd_jobs", "Job versions by status.", labels=["status"])
        for status, count in _count_by(Job, Job.status):
            jobs.add_metric([status], count)
        yield jobs
        deployments = GaugeMetricFamily("racetrackd_deployments", "Deployments by result.", labels=["status", "kind"])
        for (status, kind), count in _count_by_pair(Deployment, Deployment.status, Deployment.kind):
            deployments.add_metric([status, kind], count)
        yield deployments
        tasks = GaugeMetricFamily("racetrackd_async_tasks", "Async calls by state.", labels=["state"])
        for state, count in _count_by(AsyncTask, AsyncTask.state):
            tasks.add_metric([state], count)
        yield tasks
        yield _phase_durations()


def _count_by(model: type[peewee.Model], field: peewee.Field) -> list[tuple[str, int]]:
    rows: Any = model.select(field, peewee.fn.COUNT(model._meta.primary_key)).group_by(field).tuples()
    return [(str(value), int(n)) for value, n in rows]


def _count_by_pair(
    model: type[peewee.Model], first: peewee.Field, second: peewee.Field
) -> list[tuple[tuple[str, str], int]]:
    rows: Any = model.select(first, second, peewee.fn.COUNT(model._meta.primary_key)).group_by(first, second).tuples()
    return [((str(a), str(b)), int(n)) for a, b, n in rows]


def _phase_durations() -> Metric:
    family = HistogramMetricFamily(
        "racetrackd_deployment_phase_seconds",
        f"Duration of each deployment phase (the {RECENT_DEPLOYMENTS} newest deployments).",
        labels=["phase"],
    )
    durations: dict[str, list[float]] = {}
    rows: Any = Deployment.select(Deployment.phases).order_by(Deployment.create_time.desc()).limit(RECENT_DEPLOYMENTS)
    for (phases,) in rows.tuples():
        for phase in json.loads(phases or "[]"):
            if phase.get("ended_at") is not None and phase.get("started_at") is not None:
                durations.setdefault(phase["name"], []).append(phase["ended_at"] - phase["started_at"])
    for phase, values in sorted(durations.items()):
        buckets = [(str(bound), sum(1 for v in values if v <= bound)) for bound in PHASE_BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([phase], buckets, sum(values))
    return family
