"""Benchmark: deploy time and gateway throughput on the 3-node swarm lab against single-host mode.

    .venv/bin/python bench/swarm.py [--runs 3] [--duration 10] [--connections 16] [--replicas 3]

Same job (samples/adder with `replicas: N`), same machine, same run:
  1. single-host mode (the baseline): a daemon with RACETRACK_ORCHESTRATOR=docker on the host's engine;
  2. swarm mode: `scripts/swarm-lab.sh up` (idempotent), then a daemon on the host with
     RACETRACK_ORCHESTRATOR=swarm, DOCKER_HOST at the lab manager and RACETRACK_REGISTRY at the lab
     registry (so every deploy also pushes, and workers pull).
For each: a warm-up deploy (layer cache), then --runs first deploys of a new job (a new name each)
and --runs code-only redeploys (`--force`), timed as `rtd submit -q` (it returns once every replica
answers /ready); then `wrk` POSTs to /pub for --duration seconds at --connections connections.
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
import requests
import yaml
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


def check_answer(url: str, token: str, name: str) -> None:
    response = requests.post(
        f"{url}/pub/job/{name}/latest/api/v1/perform",
        json={"a": 40, "b": 2},
        headers={"X-Racetrack-Auth": token},
        timeout=10,
    )
    if response.status_code != 200 or response.json() != 42:
        raise SystemExit(f"{name} answered {response.status_code}: {response.text}")


def lab_env() -> dict[str, str]:
    subprocess.run([str(LAB), "up"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    out = subprocess.run([str(LAB), "env"], check=True, capture_output=True, text=True, timeout=60).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def measure(mode: str, extra_env: dict[str, str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Deploy times and /pub throughput of one daemon (`mode`: single-host or swarm)."""
    instance = f"bench-{mode}"
    data_dir = work / mode
    jobs = data_dir / "jobs"
    port, token = launcher.free_port(), uuid.uuid4().hex
    url = f"http://127.0.0.1:{port}"
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=instance, base_image=BASE_IMAGE)
    env.update(extra_env)
    env.update({"RTD_REMOTE": url, "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml")})
    data_dir.mkdir(parents=True)
    log_path = data_dir / "daemon.log"
    daemon = launcher.start(env, log_path, new_session=False)
    first: list[float] = []
    redeploy: list[float] = []
    try:
        launcher.wait_ready(url, daemon, log_path, timeout=120, step=0.1)
        submit(env, make_job(jobs, f"warm-{mode}", args.replicas))
        for run in range(args.runs):
            name = f"bench-{mode}-{run}-{uuid.uuid4().hex[:4]}"
            job_dir = make_job(jobs, name, args.replicas)
            first.append(submit(env, job_dir))
            check_answer(url, token, name)
            code = job_dir / "entrypoint.py"
            code.write_text(code.read_text() + f"\n# code-only change {uuid.uuid4().hex}\n")
            redeploy.append(submit(env, job_dir, force=True))
            check_answer(url, token, name)
        script = data_dir / "post.lua"
        script.write_text(WRK_SCRIPT.format(token=token))
        load = wrk(f"{url}/pub/job/{name}/latest/api/v1/perform", args.connections, 2, args.duration, script)
    finally:
        launcher.stop(daemon)
    return {
        "first_deploy_s": round(statistics.median(first), 2),
        "first_deploy_runs_s": [round(v, 2) for v in first],
        "redeploy_s": round(statistics.median(redeploy), 2),
        "redeploy_runs_s": [round(v, 2) for v in redeploy],
        "rps": load["rps"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "errors": load["errors"],
    }


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
    results: dict[str, dict[str, Any]] = {}
    try:
        try:
            results["single-host"] = measure("single-host", {"RACETRACK_ORCHESTRATOR": "docker"}, args, work)
        finally:
            remove_labelled(host, "bench-single-host")
        lab = lab_env()
        manager = docker.DockerClient(base_url=lab["DOCKER_HOST"], timeout=120)
        try:
            results["swarm"] = measure(
                "swarm", {**lab, "RACETRACK_NETWORK": "bench-swarm", "RACETRACK_SUPERVISOR_INTERVAL": "1"}, args, work
            )
        finally:
            clean_swarm(manager)
    finally:
        shutil.rmtree(work, ignore_errors=True)
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
the tasks at their nodes' published ports). The lab's nodes share the machine's 2 cores, so the
swarm figures are the cost of the mechanism (push, pull, scheduling, a network hop through a
nested engine), not a capacity gain; on real nodes the replicas get their own CPUs.

| measure | single-host | swarm (3-node lab) | swarm / single-host |
|---|---:|---:|---:|
{row("first deploy of a new job", "first_deploy_s", "s")}
{row("code-only redeploy (`--force`)", "redeploy_s", "s")}
{row("gateway throughput", "rps", "req/s", ".0f")}
{row("median latency under load", "p50_ms", "ms")}
{row("p99 latency under load", "p99_ms", "ms")}

Deploy runs (s): single-host first {single["first_deploy_runs_s"]}, redeploy {single["redeploy_runs_s"]};
swarm first {swarm["first_deploy_runs_s"]}, redeploy {swarm["redeploy_runs_s"]}. Failed requests under load:
single-host {single["errors"]:.0f}, swarm {swarm["errors"]:.0f}.
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
