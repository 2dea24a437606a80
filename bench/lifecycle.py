"""Benchmark: start-up reconcile and wake-up from zero, each against a baseline from the same run.

    .venv/bin/python bench/lifecycle.py [--jobs 20] [--runs 2] [--wakes 3]

Starts its own daemon (instance `bench-lifecycle`, free loopback port, temporary data dir,
supervisor every second) and measures
  1. reconcile: --jobs copies of samples/adder (bench-r-00, bench-r-01, ...) are deployed; the
     daemon is stopped, all their containers are removed with the Docker SDK (as if lost), and the
     daemon is started again: seconds from its start until every job is "running" and answers a
     call through the gateway. Baseline: the same restart with nothing missing (seconds until
     /ready, and until every job answers).
  2. wake-up from zero: a copy of samples/adder with `idle_timeout: 5s` (RACETRACK_SLEEP_PAUSED_FOR=0:
     stopped, not paused; bench/wake.py times both); once it is "sleeping" and its container has exited, the first call through the gateway is timed (median of
     --wakes sleeps). Baseline: calls to the same job while it is awake.
Results go to stdout and replace the "## Lifecycle" section of docs/benchmarks.md. All traffic is
to 127.0.0.1; every wait is bounded. Containers and images carrying the instance label and the
temporary directory are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests
from _daemon import BenchDaemon
from _report import base_image as find_base_image
from _report import write_section

INSTANCE = "bench-lifecycle"
SECTION = "## Lifecycle"
LABEL = f"racetrackd.instance={INSTANCE}"
IDLE_JOB = "bench-idle"
IDLE_TIMEOUT = 5
SUPERVISOR_INTERVAL = 1
RECOVERY_TIMEOUT = 300.0
SLEEP_TIMEOUT = 90.0
AWAKE_CALLS = 20


class SupervisorDied(Exception):
    """The daemon's supervisor thread ended with an exception: nothing is reconciled or checked any more."""


class Bench(BenchDaemon):
    def __init__(self, client: docker.DockerClient, base_image: str) -> None:
        super().__init__(
            prefix="lifecycle",
            instance=INSTANCE,
            base_image=base_image,
            env={
                "RACETRACK_SUPERVISOR_INTERVAL": str(SUPERVISOR_INTERVAL),
                # The cold wake-up: stopped at once, as before idle jobs were paused (bench/wake.py has both).
                "RACETRACK_SLEEP_PAUSED_FOR": "0",
            },
        )
        self.client = client

    def cleanup(self) -> None:
        self.stop()
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            container.remove(force=True)
        for image in self.client.images.list(filters={"label": LABEL}):
            try:
                self.client.images.remove(image.id, force=True)
            except docker.errors.APIError:
                pass  # still shared with another tag
        self.remove_data()

    def job_containers(self, name: str | None = None) -> list[Any]:
        labels = [LABEL, "racetrack-component=job"] + ([f"job-name={name}"] if name else [])
        return self.client.containers.list(all=True, filters={"label": labels})

    def wait_all_answer(self, names: list[str], started: float) -> float:
        """Seconds from `started` until every job is "running" and has answered a gateway call."""
        pending = set(names)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        with requests.Session() as session:
            while pending and time.monotonic() < deadline:
                statuses = self.statuses()
                for name in sorted(pending):
                    if statuses.get(name) == "running" and self.call(session, name, timeout=3):
                        pending.discard(name)
                if pending:
                    self.fail_if_supervisor_died()
                    time.sleep(0.1)
        if pending:
            raise SystemExit(f"jobs never came back within {RECOVERY_TIMEOUT:g} s: {sorted(pending)}")
        return time.perf_counter() - started

    def fail_if_supervisor_died(self) -> None:
        marker = "Exception in thread supervisor"
        log = (self.data_dir / "daemon.log").read_text(errors="replace")
        if marker in log:
            lines = [
                line
                for line in log[log.rindex(marker) :].splitlines()
                if not line.startswith("job-unreachable") and '"GET ' not in line and '"POST ' not in line
            ]
            raise SupervisorDied("\n".join(lines[:40]))

    # -- 1. reconcile -------------------------------------------------------------------------
    def restart_timed(self, names: list[str], remove_containers: bool) -> dict[str, float]:
        self.stop()
        if remove_containers:
            removed = 0
            for container in self.job_containers():
                if container.labels.get("job-name") in names:
                    container.remove(force=True)
                    removed += 1
            if removed != len(names):
                raise SystemExit(f"expected {len(names)} job containers to remove, found {removed}")
        started = time.perf_counter()
        ready = self.start()
        return {"ready_s": ready, "all_answer_s": self.wait_all_answer(names, started)}

    # -- 2. wake-up from zero ---------------------------------------------------------------------
    def wait_asleep(self, name: str) -> None:
        deadline = time.monotonic() + SLEEP_TIMEOUT
        while time.monotonic() < deadline:
            containers = self.job_containers(name)
            if self.statuses().get(name) == "sleeping" and containers and all(c.status == "exited" for c in containers):
                return
            time.sleep(0.25)
        raise SystemExit(f"{name} did not go to sleep within {SLEEP_TIMEOUT:g} s")

    def wake_and_awake(self, name: str) -> tuple[float, list[float]]:
        with requests.Session() as session:
            start = time.perf_counter()
            if not self.call(session, name, timeout=120):
                raise SystemExit(f"the call that should wake {name} failed")
            wake = time.perf_counter() - start
            awake = []
            for _ in range(AWAKE_CALLS):
                start = time.perf_counter()
                if not self.call(session, name):
                    raise SystemExit(f"{name} failed a call while awake")
                awake.append(time.perf_counter() - start)
        return wake, awake


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2, help="restarts timed for the reconcile and its baseline")
    parser.add_argument("--wakes", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4, help="concurrent submits while setting up")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))  # clean up too

    client = docker.from_env()
    base_image = find_base_image(client)
    bench = Bench(client, base_image)
    names = [f"bench-r-{i:02d}" for i in range(args.jobs)]
    baseline: list[dict[str, float]] = []
    reconcile: list[dict[str, float]] = []
    wakes: list[float] = []
    awake: list[float] = []
    reconcile_error: str | None = None
    try:
        bench.start()
        bench.submit(bench.make_job("bench-warmup"))  # layer cache warm from here on
        setup_start = time.perf_counter()
        job_dirs = [bench.make_job(name) for name in names]
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            list(pool.map(bench.submit, job_dirs))
        setup_s = time.perf_counter() - setup_start
        print(f"deployed {len(names)} jobs in {setup_s:.1f} s", file=sys.stderr)
        # The warm-up job stays deployed: it is one more job to check, both with and without losses.
        bench.wait_all_answer(names, time.perf_counter())

        bench.submit(bench.make_job(IDLE_JOB, idle_timeout=f"{IDLE_TIMEOUT}s"))
        for run in range(args.wakes):
            bench.wait_asleep(IDLE_JOB)
            wake, calls = bench.wake_and_awake(IDLE_JOB)
            wakes.append(wake)
            awake.extend(calls)
            print(f"wake {run}: {wake:.3f} s, awake median {statistics.median(calls) * 1000:.1f} ms", file=sys.stderr)

        for run in range(args.runs):
            baseline.append(bench.restart_timed(names, remove_containers=False))
            try:
                reconcile.append(bench.restart_timed(names, remove_containers=True))
            except SupervisorDied as exc:
                reconcile_error = str(exc)
                print(f"run {run}: baseline {baseline[-1]}; reconcile FAILED:\n{exc}", file=sys.stderr)
                break
            print(f"run {run}: baseline {baseline[-1]}, reconcile {reconcile[-1]}", file=sys.stderr)
    finally:
        bench.cleanup()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    results = {
        "jobs": args.jobs,
        "setup_deploy_s": round(setup_s, 1),
        "baseline_ready_s": round(med(baseline, "ready_s"), 2),
        "baseline_all_answer_s": round(med(baseline, "all_answer_s"), 2),
        "reconcile_ready_s": round(med(reconcile, "ready_s"), 2) if reconcile else None,
        "reconcile_all_answer_s": round(med(reconcile, "all_answer_s"), 2) if reconcile else None,
        "reconcile_error": reconcile_error,
        "baseline_runs": [{k: round(v, 2) for k, v in row.items()} for row in baseline],
        "reconcile_runs": [{k: round(v, 2) for k, v in row.items()} for row in reconcile],
        "wake_median_s": round(statistics.median(wakes), 3),
        "wake_runs_s": [round(w, 3) for w in wakes],
        "awake_median_ms": round(statistics.median(awake) * 1000, 2),
        "awake_calls": len(awake),
    }
    if reconcile:
        results["reconcile_vs_plain_start"] = round(
            results["reconcile_all_answer_s"] / results["baseline_all_answer_s"], 1
        )
        results["reconcile_vs_plain_ready"] = round(results["reconcile_all_answer_s"] / results["baseline_ready_s"], 1)
    results["wake_vs_awake_call"] = round(results["wake_median_s"] * 1000 / results["awake_median_ms"], 0)
    print(json.dumps(results, indent=2))
    write_report(results, args, base_image)


def write_report(r: dict[str, Any], args: argparse.Namespace, base_image: str) -> None:
    if r["reconcile_runs"]:
        per_job = (r["reconcile_all_answer_s"] - r["baseline_all_answer_s"]) / r["jobs"]
        runs = ", ".join(f"{x['all_answer_s']:.2f}" for x in r["reconcile_runs"])
        reconcile_row = f"{r['reconcile_ready_s']:.2f} s | {r['reconcile_all_answer_s']:.2f} s | {runs}"
        verdict = (
            f"Reconcile vs plain start (all jobs answering): **{r['reconcile_vs_plain_start']:g}×** "
            f"({r['reconcile_vs_plain_ready']:g}× the plain start's time to /ready); about {per_job:.2f} s "
            "per recreated job."
        )
    else:
        reconcile_row = "— | **never**: the reconcile failed | —"
        verdict = (
            "**No reconcile time: the jobs did not come back.** The daemon's supervisor thread died during "
            "the start-up reconcile, so the remaining missing containers were never recreated:\n\n```\n"
            + (r["reconcile_error"] or "").strip()
            + "\n```"
        )
    baseline_runs = ", ".join(format(run["all_answer_s"], ".2f") for run in r["baseline_runs"])
    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/lifecycle.py --jobs {args.jobs} --runs {args.runs} --wakes {args.wakes}`)

Start-up with lost containers, and waking a job that was scaled to zero, each against a baseline
measured in the same run (base image `{base_image}`, supervisor interval {SUPERVISOR_INTERVAL} s).

**Reconcile.** {r["jobs"]} copies of samples/adder (plus a warm-up job) are deployed; the daemon is
stopped and started again. Clock from starting `racetrackd serve` until every one of the {r["jobs"]} jobs
is "running" and answers a call through the gateway. Median of {args.runs} restarts each.

| start-up | daemon /ready | all {r["jobs"]} jobs answer | runs: all answer (s) |
|---|---:|---:|---|
| plain start, nothing missing (baseline) | {r["baseline_ready_s"]:.2f} s | {r["baseline_all_answer_s"]:.2f} s | {baseline_runs} |
| all {r["jobs"]} job containers removed before the start | {reconcile_row} |

{verdict}
The daemon answers /ready as soon as before: the reconcile runs in the supervisor thread, which
recreates the missing containers one after another from their images (no build) and waits for each
to be ready.

**Wake-up from zero.** samples/adder with `idle_timeout: {IDLE_TIMEOUT}s`; once the job is "sleeping" and
its container has exited, the first call through the gateway starts the container and waits for
/ready before it is forwarded.

| call | latency | runs |
|---|---:|---|
| normal call while awake (baseline, {r["awake_calls"]} calls) | {r["awake_median_ms"]:.1f} ms | median |
| first call to the sleeping job | {r["wake_median_s"] * 1000:.0f} ms | {", ".join(f"{w:.2f} s" for w in r["wake_runs_s"])} |

Wake call vs awake call: **{r["wake_vs_awake_call"]:g}×** (median of {args.wakes} sleeps and wakes).
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
