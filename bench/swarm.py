"""Benchmark: deploy time and gateway throughput on the 3-node swarm lab against single-host mode.

    .venv/bin/python bench/swarm.py [--runs 3] [--duration 10] [--connections 16] [--replicas 3]

Same job (samples/adder with `replicas: N`), same machine, same run, two daemons side by side:
  1. single-host mode (the baseline): RACETRACK_ORCHESTRATOR=docker on the host's engine;
  2. swarm mode: `scripts/swarm-lab.sh up` (idempotent), then RACETRACK_ORCHESTRATOR=swarm with
     DOCKER_HOST at the lab manager and RACETRACK_REGISTRY at the lab registry (so every deploy
     also pushes, and workers pull).
After a warm-up deploy each (layer cache), they take turns: --runs rounds of a first deploy of a
new job and a code-only redeploy (`--force`), timed as `rtd submit -q` (it returns once every
replica answers /ready); then --runs rounds of `wrk` POSTing to /pub for --duration seconds at
--connections connections. Taking turns spreads the shared machine's other load over both.
Medians and the swarm/single-host ratios go to stdout and replace the "## Swarm mode" section of
docs/benchmarks.md. Traffic goes to 127.0.0.1 (the gateway) and the lab bridge (the tasks).
The lab is left up (`scripts/swarm-lab.sh down` removes it). Needs `wrk`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import yaml
from _jobs import check_answer
from _report import remove_labelled, write_section
from gateway import WRK_SCRIPT, wrk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "adder"
LAB = REPO / "scripts" / "swarm-lab.sh"
BASE_IMAGE = "racetrackd/python3-base:bookworm"  # the lab's manager has this one (swarm-lab.sh loads it)
SECTION = "## Swarm mode"


def submit(env: dict[str, str], job_dir: Path, force: bool = False) -> float:
    command = [sys.executable, "-m", "cli", "submit", "-q", *(["--force"] if force else []), str(job_dir)]
    started = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, cwd=REPO, stdin=subprocess.DEVNULL, timeout=900
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"rtd submit {job_dir} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def make_job(root: Path, name: str, replicas: int) -> Path:
    job_dir = root / name
    shutil.copytree(SAMPLE, job_dir)
    manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
    manifest["name"] = name
    manifest["replicas"] = replicas
    (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return job_dir


def lab_env() -> dict[str, str]:
    subprocess.run([str(LAB), "up"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    out = subprocess.run([str(LAB), "env"], check=True, capture_output=True, text=True, timeout=60).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


class Bench:
    """One daemon under test (`mode`: single-host or swarm) and what was measured on it."""

    def __init__(self, mode: str, extra_env: dict[str, str], work: Path) -> None:
        self.mode = mode
        self.instance = f"bench-{mode}"
        self.data_dir = work / mode
        self.jobs = self.data_dir / "jobs"
        port, self.token = launcher.free_port(), uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{port}"
        env = launcher.daemon_env(
            port=port, data_dir=self.data_dir, token=self.token, instance=self.instance, base_image=BASE_IMAGE
        )
        env.update(extra_env)
        env.update({"RTD_REMOTE": self.url, "RTD_TOKEN": self.token, "RTD_CONFIG": str(self.data_dir / "rtd.yaml")})
        self.env = env
        self.first: list[float] = []
        self.redeploy: list[float] = []
        self.loads: list[dict[str, float]] = []
        self.job = ""

    def start(self) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True)
        log_path = self.data_dir / "daemon.log"
        daemon = launcher.start(self.env, log_path, new_session=False)
        launcher.wait_ready(self.url, daemon, log_path, timeout=120, step=0.1)
        return daemon

    def deploy_round(self, run: int, replicas: int) -> None:
        """A first deploy of a new job and a code-only redeploy of it, both timed."""
        name = f"bench-{self.mode}-{run}-{uuid.uuid4().hex[:4]}"
        job_dir = make_job(self.jobs, name, replicas)
        self.first.append(submit(self.env, job_dir))
        check_answer(self.url, self.token, name)
        code = job_dir / "entrypoint.py"
        code.write_text(code.read_text() + f"\n# code-only change {uuid.uuid4().hex}\n")
        self.redeploy.append(submit(self.env, job_dir, force=True))
        check_answer(self.url, self.token, name)
        self.job = name

    def load_round(self, args: argparse.Namespace) -> None:
        script = self.data_dir / "post.lua"
        script.write_text(WRK_SCRIPT.format(token=self.token))
        url = f"{self.url}/pub/job/{self.job}/latest/api/v1/perform"
        self.loads.append(wrk(url, args.connections, 2, args.duration, script))

    def results(self) -> dict[str, Any]:
        def median(key: str) -> float:
            return round(statistics.median(load[key] for load in self.loads), 2)

        return {
            "first_deploy_s": round(statistics.median(self.first), 2),
            "first_deploy_runs_s": [round(v, 2) for v in self.first],
            "redeploy_s": round(statistics.median(self.redeploy), 2),
            "redeploy_runs_s": [round(v, 2) for v in self.redeploy],
            "rps": median("rps"),
            "rps_rounds": [round(load["rps"]) for load in self.loads],
            "p50_ms": median("p50_ms"),
            "p99_ms": median("p99_ms"),
            "errors": sum(load["errors"] for load in self.loads),
        }


def measure(benches: list[Bench], args: argparse.Namespace) -> None:
    """Both daemons run side by side and take turns (deploys, then load), so that the machine's
    other work falls on both alike: ratios from one run on a shared machine."""
    daemons = [bench.start() for bench in benches]
    try:
        for bench in benches:
            submit(bench.env, make_job(bench.jobs, f"warm-{bench.mode}", args.replicas))  # layer cache
        for run in range(args.runs):
            for bench in benches:
                bench.deploy_round(run, args.replicas)
        for _ in range(args.runs):
            for bench in benches:
                bench.load_round(args)
    finally:
        for daemon in daemons:
            launcher.stop(daemon)


def clean_swarm(manager: docker.DockerClient) -> None:
    label = {"label": "racetrackd.instance=bench-swarm"}
    for service in manager.services.list(filters=label):
        service.remove()
    remove_labelled(manager, "bench-swarm")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    host = docker.from_env()
    work = Path(tempfile.mkdtemp(prefix="racetrackd-bench-swarm-"))
    lab = lab_env()
    manager = docker.DockerClient(base_url=lab["DOCKER_HOST"], timeout=120)
    single = Bench("single-host", {"RACETRACK_ORCHESTRATOR": "docker", "RACETRACK_NETWORK": "bench-single-host"}, work)
    load_before = os.getloadavg()[1]
    swarm = Bench("swarm", {**lab, "RACETRACK_NETWORK": "bench-swarm", "RACETRACK_SUPERVISOR_INTERVAL": "1"}, work)
    try:
        measure([single, swarm], args)
    finally:
        remove_labelled(host, single.instance)
        for network in host.networks.list(names=["bench-single-host"]):
            if network.name in ("bench-single-host", "bench-single-host-build"):
                network.remove()
        clean_swarm(manager)
        shutil.rmtree(work, ignore_errors=True)
    results = {"single-host": single.results(), "swarm": swarm.results()}
    results["machine"] = {"load_average_5min": [round(load_before, 1), round(os.getloadavg()[1], 1)]}
    print(json.dumps(results, indent=2))
    write_report(results, args)


def write_report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    single, swarm = results["single-host"], results["swarm"]

    def row(label: str, key: str, unit: str, fmt: str = ".2f") -> str:
        ratio = swarm[key] / single[key] if single[key] else float("nan")
        return f"| {label} | {single[key]:{fmt}} {unit} | {swarm[key]:{fmt}} {unit} | {ratio:.2f}× |"

    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/swarm.py --runs {args.runs} --duration {args.duration:g} --connections {args.connections} --replicas {args.replicas}`)

samples/adder with `replicas: {args.replicas}`, on one machine in one run. Single-host (baseline): racetrackd
with `RACETRACK_ORCHESTRATOR=docker` on the host's engine. Swarm: racetrackd on the host with
`RACETRACK_ORCHESTRATOR=swarm` scheduling on the 3-node lab (`scripts/swarm-lab.sh`: three dockerds
in containers on this same machine), pushing each image to the lab registry, from which the workers
pull. Deploys are `rtd submit -q` until every replica answers /ready (medians of {args.runs});
throughput is `wrk -t2 -c{args.connections} -d{args.duration:g}s` POSTing to /pub (the gateway calls
the tasks at their nodes' published ports), {args.runs} rounds each. Both daemons ran side by side and
took turns, so the machine's other load (it is shared) fell on both alike. The lab's nodes share the machine's 2 cores, so the
swarm figures are the cost of the mechanism (push, pull, scheduling, a network hop through a
nested engine), not a capacity gain; on real nodes the replicas get their own CPUs.

| measure | single-host | swarm (3-node lab) | swarm / single-host |
|---|---:|---:|---:|
{row("first deploy of a new job", "first_deploy_s", "s")}
{row("code-only redeploy (`--force`)", "redeploy_s", "s")}
{row("gateway throughput", "rps", "req/s", ".0f")}
{row("median latency under load", "p50_ms", "ms")}
{row("p99 latency under load", "p99_ms", "ms")}

Throughput rounds (req/s): single-host {single["rps_rounds"]}, swarm {swarm["rps_rounds"]} (medians above).
Deploy runs (s): single-host first {single["first_deploy_runs_s"]}, redeploy {single["redeploy_runs_s"]};
swarm first {swarm["first_deploy_runs_s"]}, redeploy {swarm["redeploy_runs_s"]}. Failed requests under load:
single-host {single["errors"]:.0f}, swarm {swarm["errors"]:.0f}. The machine's 5-minute load average
(before, after): {results["machine"]["load_average_5min"]} on {os.cpu_count()} cores: other work ran
throughout, so absolute figures are far below the sections above; the ratios are what this measures.
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
