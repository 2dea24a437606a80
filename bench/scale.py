"""Benchmark: the cost of many jobs on one host (25, 50, 100 copies of one small python3 job).

    .venv/bin/python bench/scale.py [--steps 25,50,100] [--duration 5] [--parallel 2] [--memory 96Mi]

Starts its own daemon (instance `bench-scale-<run>`, network of the same name, free loopback port,
temporary data dir, supervisor every 3 s, debug log for the supervisor's cycle times). Jobs are
copies of samples/adder named scale-000, scale-001, ... with `idle_timeout` off and a small memory
limit; after the first, each build reuses the image layer cache (only the job's name differs).
At each step (the job count reached) it measures:
  - daemon memory: PSS of the daemon's processes (main, HTTP server, its workers), summed;
  - job memory: the job containers' memory (usage minus inactive page cache, as `docker stats`), summed;
  - supervisor cycle: median of its last cycles with all jobs (the daemon's own debug log line);
  - the gateway: p50 and req/s of `wrk -c8` calling scale-000 through the gateway (one job among N);
  - `rtd list`: wall time of the command (median of 3), and of the API call it makes;
  - restart reconcile: the daemon is stopped and started; seconds until /ready and until every job
    is "running" and answers a call through the gateway.
Results go to stdout, docs/benchmarks-scale.png and the "## Scale" section of docs/benchmarks.md.
Everything it creates carries the run's instance label (containers, images) or name (network) and
is removed at the end; all traffic is to 127.0.0.1 and the project's own containers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from _daemon import BenchDaemon
from _jobs import REPO
from _report import base_image as find_base_image
from _report import remove_labelled, write_section

SECTION = "## Scale"
PLOT = REPO / "docs" / "benchmarks-scale.png"
SUPERVISOR_INTERVAL = 3
RECOVERY_TIMEOUT = 900.0
CYCLE_LINE = re.compile(r"supervisor cycle: (\d+) jobs checked in ([\d.]+) s")
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"a": 40, "b": 2}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Racetrack-Auth"] = "%s"
"""


class Scale(BenchDaemon):
    def __init__(self, client: docker.DockerClient, base_image: str, memory: str) -> None:
        self.instance = f"bench-scale-{uuid.uuid4().hex[:6]}"
        super().__init__(
            prefix="scale",
            instance=self.instance,
            base_image=base_image,
            env={
                "RACETRACK_SUPERVISOR_INTERVAL": str(SUPERVISOR_INTERVAL),
                "RACETRACK_NETWORK": self.instance,
                "RACETRACK_LOG_LEVEL": "debug",
            },
        )
        self.client = client
        self.memory = memory
        self.script = self.data_dir / "post.lua"
        self.script.write_text(WRK_SCRIPT % self.token)

    def cleanup(self) -> None:
        self.stop()
        remove_labelled(self.client, self.instance)
        for name in (self.instance, f"{self.instance}-build"):
            for network in self.client.networks.list(names=[name]):
                if network.name == name:
                    try:
                        network.remove()
                    except docker.errors.APIError as exc:
                        print(f"could not remove network {name}: {exc}", file=sys.stderr)
        self.remove_data()

    def daemon_pss_mib(self) -> float:
        """PSS of the daemon process and all its descendants (shared pages counted once, split)."""
        assert self.process is not None
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parent = int(stat[stat.rfind(")") + 2 :].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        total_kib, pending = 0, [self.process.pid]
        while pending:
            pid = pending.pop()
            pending.extend(children.get(pid, []))
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
            total_kib += int(match.group(1)) if match else 0
        return total_kib / 1024

    def supervisor_cycle_s(self, jobs: int, wait: float) -> float:
        """Median of the supervisor's cycles that checked all `jobs` (waits up to `wait` s for 3 of them)."""
        deadline = time.monotonic() + wait
        while True:
            text = self.log_path.read_text(errors="replace")
            cycles = [float(s) for n, s in CYCLE_LINE.findall(text) if int(n) == jobs]
            if len(cycles) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if not cycles:
            raise SystemExit(f"no supervisor cycle over {jobs} jobs in the daemon's log")
        return statistics.median(cycles[-5:])

    # -- jobs -----------------------------------------------------------------------------------
    def make_job(self, name: str, measured: bool = False, **fields: Any) -> Path:
        resources = {"memory_min": "16Mi", "memory_max": self.memory}
        if measured:
            # The job the gateway is measured with gets a whole CPU's weight: with the default
            # cpu_min (10m) a busy machine starves it, and its p50 would say nothing of the gateway.
            resources.update({"cpu_min": "1", "cpu_max": "1"})
        return super().make_job(name, resources=resources, **fields)

    def wait_all_answer(self, names: list[str], started: float) -> float:
        pending = set(names)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        with requests.Session() as session:
            while pending and time.monotonic() < deadline:
                statuses = self.statuses()
                for name in sorted(pending):
                    if statuses.get(name) == "running" and self.call(session, name, timeout=5):
                        pending.discard(name)
                if pending:
                    time.sleep(0.2)
        if pending:
            raise SystemExit(f"jobs never answered within {RECOVERY_TIMEOUT:g} s: {sorted(pending)[:10]} ...")
        return time.perf_counter() - started

    def job_memory_mib(self) -> list[float]:
        """Each job container's memory as `docker stats` shows it (usage minus inactive page cache)."""
        containers = self.client.containers.list(
            filters={"label": [f"racetrackd.instance={self.instance}", "racetrack-component=job"]}
        )

        def one(container: Any) -> float:
            stats = container.stats(stream=False, one_shot=True)["memory_stats"]
            extra = stats.get("stats", {})
            cache = extra.get("inactive_file", extra.get("total_inactive_file", 0))
            return float(stats.get("usage", 0) - cache) / 2**20

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, containers))

    # -- measures ---------------------------------------------------------------------------------
    def gateway_load(self, name: str, duration: int) -> dict[str, float]:
        url = f"{self.url}/pub/job/{name}/latest/api/v1/perform"
        result = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{duration}s", "--latency", "-s", str(self.script), url],
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + 60,
        )
        out = result.stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
        bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        if result.returncode != 0 or rps is None or p50 is None:
            raise SystemExit(f"wrk failed against {url}:\n{out}\n{result.stderr}")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        return {
            "rps": float(rps.group(1)),
            "p50_ms": float(p50.group(1)) * scale[p50.group(2)],
            "non_2xx": float(bad.group(1)) if bad else 0.0,
        }

    def rtd_list_s(self) -> tuple[float, float]:
        """(`rtd list` wall time, the API call's time), medians of 3."""
        command, api = [], []
        for _ in range(3):
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "cli", "list"],
                env=self.env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
            command.append(time.perf_counter() - start)
            if result.returncode != 0:
                raise SystemExit(f"rtd list failed:\n{result.stdout}\n{result.stderr}")
            start = time.perf_counter()
            requests.get(f"{self.url}/lifecycle/api/v1/job", headers=self.headers, timeout=60).raise_for_status()
            api.append(time.perf_counter() - start)
        return statistics.median(command), statistics.median(api)

    def measure(self, names: list[str], duration: int) -> dict[str, float]:
        jobs = len(names)
        memory = self.job_memory_mib()
        load = self.gateway_load(names[0], duration)
        rtd_list, api_list = self.rtd_list_s()
        row = {
            "jobs": jobs,
            # The machine's own load: on a shared host it moves latencies more than N does.
            "load_1m": os.getloadavg()[0],
            "daemon_pss_mib": self.daemon_pss_mib(),
            "job_memory_total_mib": sum(memory),
            "job_memory_mean_mib": statistics.mean(memory) if memory else 0.0,
            "job_containers": len(memory),
            "supervisor_cycle_s": self.supervisor_cycle_s(jobs, wait=SUPERVISOR_INTERVAL * 4 + 30),
            "gateway_p50_ms": load["p50_ms"],
            "gateway_rps": load["rps"],
            "gateway_non_2xx": load["non_2xx"],
            "rtd_list_s": rtd_list,
            "list_api_s": api_list,
        }
        self.stop()
        started = time.perf_counter()
        row["restart_ready_s"] = self.start(timeout=120)
        row["restart_all_answer_s"] = self.wait_all_answer(names, started)
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="25,50,100", help="job counts to measure at, ascending")
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk load through the gateway")
    parser.add_argument("--parallel", type=int, default=2, help="concurrent submits")
    parser.add_argument("--memory", default="96Mi", help="memory_max of each job")
    args = parser.parse_args()
    steps = sorted(int(step) for step in args.steps.split(","))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required (apt-get install wrk)")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))  # clean up too

    client = docker.from_env()
    base_image = find_base_image(client)
    scale = Scale(client, base_image, args.memory)
    rows: list[dict[str, float]] = []
    names: list[str] = []
    try:
        scale.start(timeout=120)
        for step in steps:
            new = [f"scale-{i:03d}" for i in range(len(names), step)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
                list(pool.map(scale.submit, [scale.make_job(name, measured=name == "scale-000") for name in new]))
            deploy_s = time.perf_counter() - started
            names += new
            scale.wait_all_answer(names, time.perf_counter())
            print(f"{len(names)} jobs deployed ({deploy_s:.0f} s for {len(new)}); measuring ...", file=sys.stderr)
            row = scale.measure(names, args.duration)
            row["deploy_step_s"] = deploy_s
            rows.append(row)
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), file=sys.stderr, flush=True)
            # After every step: a run stopped later (SIGTERM, time) still leaves what it measured.
            plot(rows)
            write_report(rows, args, base_image)
    finally:
        scale.cleanup()
    print(json.dumps(rows, indent=2))


def plot(rows: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = [row["jobs"] for row in rows]
    panels = [
        ("daemon memory (PSS, MiB)", "daemon_pss_mib"),
        ("all jobs' memory (MiB)", "job_memory_total_mib"),
        ("supervisor cycle (s)", "supervisor_cycle_s"),
        ("gateway p50, one job among N (ms)", "gateway_p50_ms"),
        ("gateway req/s, one job among N", "gateway_rps"),
        ("`rtd list` (s)", "rtd_list_s"),
        ("restart until all jobs answer (s)", "restart_all_answer_s"),
        ("job list API call (s)", "list_api_s"),
    ]
    figure, axes = plt.subplots(2, 4, figsize=(16, 7))
    flat = {"gateway_p50_ms", "gateway_rps"}
    for axis, (title, key) in zip(axes.flat, panels, strict=True):
        values = [row[key] for row in rows]
        axis.plot(jobs, values, marker="o")
        if key in flat:  # should stay where it was at the first step
            axis.axhline(values[0], linestyle=":", color="grey", label="flat from 1st")
        else:  # the linear extrapolation from the first step: above it grows worse than linearly
            axis.plot(
                [0, jobs[-1]], [0, values[0] / jobs[0] * jobs[-1]], linestyle=":", color="grey", label="linear from 1st"
            )
        axis.legend(fontsize=7)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("jobs deployed")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    figure.suptitle("racetrackd with N python3 jobs on one host (bench/scale.py)")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=80)


def write_report(rows: list[dict[str, float]], args: argparse.Namespace, base_image: str) -> None:
    first, last = rows[0], rows[-1]
    growth = last["jobs"] / first["jobs"]

    def ratio(key: str) -> str:
        return f"{last[key] / first[key]:.2f}×" if first[key] else "—"

    lines = "\n".join(
        f"| {r['jobs']:.0f} | {r['daemon_pss_mib']:.0f} MiB | {r['job_memory_total_mib']:.0f} MiB "
        f"({r['job_memory_mean_mib']:.1f} each) | {r['supervisor_cycle_s']:.2f} s | {r['gateway_p50_ms']:.2f} ms | "
        f"{r['gateway_rps']:.0f} | {r['rtd_list_s']:.2f} s ({r['list_api_s'] * 1000:.0f} ms API) | "
        f"{r['restart_ready_s']:.1f} s / {r['restart_all_answer_s']:.1f} s | {r['deploy_step_s']:.0f} s | "
        f"{r.get('load_1m', float('nan')):.1f} |"
        for r in rows
    )
    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/scale.py --steps {args.steps} --duration {args.duration}`)

N copies of samples/adder (python3, `memory_max: {args.memory}`, no idle timeout) deployed by one daemon
(base image `{base_image}`, supervisor every {SUPERVISOR_INTERVAL} s), measured at each step. Gateway: `wrk -t1 -c8
-d{args.duration}s` calling one job among the N through the gateway (that job alone has `cpu_min: 1`, so a busy machine does not starve it). Restart: the daemon stopped and started,
seconds until /ready and until every job is "running" and answers through the gateway.

| jobs | daemon PSS | jobs' memory | supervisor cycle | gateway p50 | gateway req/s | `rtd list` | restart: ready / all answer | deploying the step's jobs | machine load (1 min) |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{lines}

From {first["jobs"]:.0f} to {last["jobs"]:.0f} jobs ({growth:g}× the jobs): daemon memory {ratio("daemon_pss_mib")},
jobs' memory {ratio("job_memory_total_mib")}, supervisor cycle {ratio("supervisor_cycle_s")}, `rtd list`
{ratio("rtd_list_s")} (API call {ratio("list_api_s")}), restart until all answer {ratio("restart_all_answer_s")};
gateway p50 {ratio("gateway_p50_ms")} and req/s {ratio("gateway_rps")} (flat is 1×). Linear growth is {growth:g}×.

![racetrackd with N jobs](benchmarks-scale.png)
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
