"""Benchmark: what counting calls over time costs, in process (no HTTP, no Docker).

    .venv/bin/python bench/callstats.py [--calls 200000] [--jobs 50] [--workers 4]

Times, on one thread, what the gateway does per call once it has an answer:
  1. baseline: `LastCalls.record` alone (the last call time, as before calls were counted over time);
  2. `LastCalls.answered`: the last call time plus `CallTally.record` (lock, minute key, bucket);
and what a flush costs in a temporary registry: --workers flushers in turn, each adding one
minute of --jobs job versions (the summing upsert, in one transaction), then the series a
dashboard page reads (24 h at 15 min) once the registry holds 7 days of minutes for one job.
Results go to stdout and replace the "## Calls over time" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_section
from racetrackd import callstats
from racetrackd.db import open_database
from racetrackd.gateway.lastcall import LastCalls

MARKER = "## Calls over time"


def per_call_us(calls: int, step: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for index in range(calls):
        step(index)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    statuses = (200, 200, 200, 200, 200, 200, 302, 404, 500, 200)
    with tempfile.TemporaryDirectory() as data:
        open_database(Path(data) / "registry.sqlite3")
        baseline_calls = LastCalls()
        counted_calls = LastCalls()
        rounds = [
            (
                per_call_us(args.calls, lambda i: baseline_calls.record("adder", "0.0.1")),
                per_call_us(
                    args.calls, lambda i: counted_calls.answered("adder", "0.0.1", statuses[i % 10], (i % 97) / 1000)
                ),
            )
            for _ in range(3)
        ]
        baseline, counted = min(r[0] for r in rounds), min(r[1] for r in rounds)

        flushes = []
        for _ in range(3):
            for _worker in range(args.workers):
                calls = LastCalls()
                for job in range(args.jobs):
                    for i in range(20):
                        calls.answered(f"job-{job}", "1.0.0", statuses[i % 10], i / 100)
                started = time.perf_counter()
                calls.flush()
                flushes.append((time.perf_counter() - started) * 1000)
        flush_ms = sorted(flushes)[len(flushes) // 2]

        now = time.time()
        week = {
            ("weekly", "1.0.0", minute): _tally(minute)
            for minute in range(int(now - 7 * 86400) // 60 * 60, int(now), 60)
        }
        callstats.write(week)
        reads = []
        for _ in range(5):
            started = time.perf_counter()
            callstats.series("weekly", "1.0.0", now - 86400, now, 900)
            reads.append((time.perf_counter() - started) * 1000)
        read_ms = sorted(reads)[len(reads) // 2]

    section = f"""{MARKER} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/callstats.py --calls {args.calls} --jobs {args.jobs} --workers {args.workers}`)

Per call, on one thread, best of 3 rounds of {args.calls} calls (what the gateway adds to every call it forwards):

| per call | µs | ratio to baseline |
|---|---:|---:|
| `LastCalls.record`: last call time only (baseline) | {baseline:.2f} | 1.00× |
| `LastCalls.answered`: last call time + per-minute tally | {counted:.2f} | {counted / baseline:.2f}× |

The tally adds {counted - baseline:.2f} µs per call; the gateway's own CPU per call is ~178 µs
(the section "Gateway" below), so counting calls over time costs about
{(counted - baseline) / 178 * 100:.1f}% of it. A flush of one worker's minute of {args.jobs} job
versions (the summing upsert and the last-call updates, one transaction; {args.workers} workers
in turn, median of {len(flushes)}): {flush_ms:.1f} ms, every 5 s. The series of a dashboard page
(24 h at 15 min) from a registry holding 7 days of minutes ({len(week)} rows) of that job:
{read_ms:.1f} ms (median of 5).
"""
    print(section)
    write_section(MARKER, section)


def _tally(minute: int) -> callstats.Tally:
    tally = callstats.Tally()
    for i in range(minute % 7 + 1):
        tally.add(200 if i % 5 else 500, i / 50)
    return tally


if __name__ == "__main__":
    main()
