"""Benchmark: build times of rust jobs (issue #19): the first build on a host, which compiles and
tests the wrapper and its dependencies in the shared layer, against what comes after it.

    .venv/bin/python bench/rust_build.py [--runs 2]

Starts its own daemon (instance `bench-rust`, free loopback port, temporary data dir) and times
`rtd submit` (which returns once the job answers /ready) for
  1. the first rust job (samples/rust-adder under a new name): the baseline. Whether the shared
     layer was really built (no earlier rust build left it in the engine's cache) is reported;
  2. a new rust job after it (shared layer cached: only the job's crate is compiled),
  3. a code-only redeploy (`rtd submit --force` after changing mod.rs),
and checks each answers 42 through the gateway. Needs racetrackd/rust-base:bookworm
(`racetrackd base-images build --job-type rust`). The medians, as ratios to the first build, go to
stdout and replace the "## Rust job builds" section of docs/benchmarks.md. All traffic is to 127.0.0.1.
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

import docker
import yaml
from _jobs import check_answer
from _report import base_image as find_base_image
from _report import remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "rust-adder"
INSTANCE = "bench-rust"
RUST_BASE_IMAGE = "racetrackd/rust-base:bookworm"
SECTION = "## Rust job builds"


def timed_submit(env: dict[str, str], job_dir: Path, force: bool = False) -> float:
    command = [sys.executable, "-m", "cli", "submit", "-q", *(["--force"] if force else []), str(job_dir)]
    start = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, cwd=REPO, stdin=subprocess.DEVNULL, timeout=1800
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"rtd submit {job_dir} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def make_job(root: Path, name: str) -> Path:
    job_dir = root / name
    shutil.copytree(SAMPLE, job_dir)
    manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
    manifest["name"] = name
    (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return job_dir


def shared_layer_was_built(env: dict[str, str], name: str) -> bool:
    """Whether the build of `name` ran the wrapper's tests (the shared layer was not in the cache)."""
    logs = subprocess.run(
        [sys.executable, "-m", "cli", "build-logs", name, "--version", "0.0.1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    ).stdout
    return "test result: ok" in logs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    client = docker.from_env()
    if not client.images.list(name=RUST_BASE_IMAGE):
        raise SystemExit(f"no {RUST_BASE_IMAGE}: run `racetrackd base-images build --job-type rust` first")
    base_image = find_base_image(client)
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-rust-"))
    jobs_dir = data_dir / "jobs"
    port, token = launcher.free_port(), uuid.uuid4().hex
    url = f"http://127.0.0.1:{port}"
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=INSTANCE, base_image=base_image)
    env.update({"RTD_REMOTE": url, "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml")})
    if not client.images.list(name="debian:bookworm-slim"):
        env["RACETRACK_RUST_RUNTIME_IMAGE"] = base_image
    log_path = data_dir / "daemon.log"
    daemon = launcher.start(env, log_path, new_session=False)
    times: dict[str, list[float]] = {"first": [], "new_job": [], "code_only": []}
    try:
        launcher.wait_ready(url, daemon, log_path, timeout=120, step=0.05)
        first = f"bench-rust-first-{uuid.uuid4().hex[:6]}"
        times["first"].append(timed_submit(env, make_job(jobs_dir, first)))
        check_answer(url, token, first)
        cold = shared_layer_was_built(env, first)
        for run in range(args.runs):
            name = f"bench-rust-{run}-{uuid.uuid4().hex[:6]}"
            job_dir = make_job(jobs_dir, name)
            times["new_job"].append(timed_submit(env, job_dir))
            check_answer(url, token, name)
            code = job_dir / "mod.rs"
            code.write_text(code.read_text() + f"\n// code-only change {uuid.uuid4().hex}\n")
            times["code_only"].append(timed_submit(env, job_dir, force=True))
            check_answer(url, token, name)
    finally:
        launcher.stop(daemon)
        remove_labelled(client, INSTANCE)
        shutil.rmtree(data_dir, ignore_errors=True)
    results: dict[str, object] = {
        key: {"median_s": round(statistics.median(values), 1), "runs_s": [round(v, 1) for v in values]}
        for key, values in times.items()
    }
    results["first_build_compiled_the_shared_layer"] = cold
    print(json.dumps(results, indent=2))
    write_report(times, cold, args)


def write_report(times: dict[str, list[float]], cold: bool, args: argparse.Namespace) -> None:
    baseline = statistics.median(times["first"])

    def row(key: str, label: str) -> str:
        median = statistics.median(times[key])
        runs = ", ".join(f"{value:.1f}" for value in times[key])
        return f"| {label} | {median:.1f} s | {runs} | {median / baseline:.2f}× |"

    first_label = "first rust job on the host (baseline" + (
        ": the shared layer compiled and tested)" if cold else "; the shared layer was already cached)"
    )
    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/rust_build.py --runs {args.runs}`)

Seconds from `rtd submit -q` to its return (the job answers /ready), samples/rust-adder under new
names, built offline in `{RUST_BASE_IMAGE}`; ratios to the first build, measured in the same run.
The shared layer tests the wrapper library and compiles it with its dependencies (tiny_http, serde_json, libc)
once per job-type version; after it, a build compiles only the job's crate.

| build | median | runs (s) | ratio to the first |
|---|---:|---|---:|
{row("first", first_label)}
{row("new_job", "another new rust job (shared layer cached)")}
{row("code_only", "code-only redeploy (`--force` after editing mod.rs)")}
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
