"""Prometheus metrics in the text exposition format, standard library only.

Racetrack's metric names (requests_started, requests_done, request_duration, request_internal_errors,
endpoint_requests_started, last_call_timestamp) so existing dashboards keep working.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import defaultdict
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1000.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in pairs) + "}"


class Metrics:
    """Request metrics of one job process. Updates are cheap (a lock and a few additions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests_started = 0
        self.requests_done = 0
        self.last_call_timestamp = 0.0
        self._endpoint_started: dict[str, int] = defaultdict(int)
        self._internal_errors: dict[str, int] = defaultdict(int)
        self._durations: dict[str, list[int]] = {}
        self._duration_sums: dict[str, float] = defaultdict(float)

    def started(self, endpoint: str) -> None:
        with self._lock:
            self.requests_started += 1
            self._endpoint_started[endpoint] += 1

    def done(self, endpoint: str, seconds: float, status: int, is_call: bool) -> None:
        with self._lock:
            self.requests_done += 1
            counts = self._durations.get(endpoint)
            if counts is None:
                counts = self._durations[endpoint] = [0] * (len(BUCKETS) + 1)
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._duration_sums[endpoint] += seconds
            if status >= 500:
                self._internal_errors[endpoint] += 1
            if is_call:
                self.last_call_timestamp = time.time()

    def render(self, user_metrics: list[dict[str, Any]] | None = None) -> str:
        lines: list[str] = []
        with self._lock:
            self._counter(lines, "requests_started", "Requests started", [((), self.requests_started)])
            self._counter(lines, "requests_done", "Requests finished", [((), self.requests_done)])
            self._counter(
                lines,
                "endpoint_requests_started",
                "Requests started per endpoint",
                [((("endpoint", e),), n) for e, n in sorted(self._endpoint_started.items())],
            )
            self._counter(
                lines,
                "request_internal_errors",
                "Requests answered with a 5xx status",
                [((("endpoint", e),), n) for e, n in sorted(self._internal_errors.items())],
            )
            lines.append("# HELP request_duration Request duration in seconds")
            lines.append("# TYPE request_duration histogram")
            for endpoint, counts in sorted(self._durations.items()):
                cumulative = 0
                for bound, count in zip((*BUCKETS, math.inf), counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == math.inf else repr(bound)
                    lines.append(f'request_duration_bucket{{endpoint="{_escape(endpoint)}",le="{le}"}} {cumulative}')
                lines.append(f'request_duration_sum{{endpoint="{_escape(endpoint)}"}} {self._duration_sums[endpoint]}')
                lines.append(f'request_duration_count{{endpoint="{_escape(endpoint)}"}} {cumulative}')
            lines.append("# HELP last_call_timestamp Unix time of the last call to the job's API")
            lines.append("# TYPE last_call_timestamp gauge")
            lines.append(f"last_call_timestamp {self.last_call_timestamp}")
        for metric in user_metrics or []:
            name = str(metric["name"])
            lines.append(f"# HELP {name} {metric.get('description', '')}".rstrip())
            lines.append(f"# TYPE {name} gauge")
            pairs = tuple(sorted((str(k), str(v)) for k, v in (metric.get("labels") or {}).items()))
            lines.append(f"{name}{_labels(pairs)} {float(metric['value'])}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _counter(
        lines: list[str], name: str, help_text: str, samples: list[tuple[tuple[tuple[str, str], ...], int]]
    ) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        for pairs, value in samples:
            lines.append(f"{name}{_labels(pairs)} {value}")
