"""Benchmark: seconds from `rtd submit` to a ready job, on a warm daemon.

    .venv/bin/python bench/deploy.py [--runs 3]

Starts its own daemon (instance `bench-deploy`, free loopback port, temporary data dir), warms the
layer cache with samples/adder, then times `rtd submit` (which returns once the job answers /ready)
for
  1. the first deploy of a new job (a new name each run; the wrapper layers are cached),
  2. a code-only redeploy (`rtd submit --force` after changing entrypoint.py),
  3. a requirements change (requirements.txt gains `six`, so pip runs in the build),
and checks each job answers through the gateway. Medians of --runs runs go to stdout and replace
the "## Deploy times" section of docs/benchmarks.md. All traffic is to 127.0.0.1.
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
import requests
import yaml
from _report import base_image as find_base_image
from _report import remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "adder"
INSTANCE = "bench-deploy"
TARGETS = {"new_job": 15.0, "code_only": 5.0}
SECTION = "## Deploy times"
SWITCH_GRACE_NOTE = (
    "0.3 s grace after calls are routed to the new container; the old one is then moved aside "
    "and drains in the background (racetrackd/deploy/deployer.py)"
)


def timed_submit(env: dict[str, str], job_dir: Path, force: bool = False) -> float:
    """Seconds `rtd submit` takes; it returns once the deployment is done, i.e. the job is ready."""
    command = [sys.executable, "-m", "cli", "submit", "-q", *(["--force"] if force else []), str(job_dir)]
    start = time.perf_counter()
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, cwd=REPO, stdin=subprocess.DEVNULL, timeout=900
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"rtd submit {job_dir} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def make_job(root: Path, name: str, requirements: str | None = None) -> Path:
    job_dir = root / name
    shutil.copytree(SAMPLE, job_dir)
    if requirements is not None:
        manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
        manifest["jobtype_extra"]["requirements_path"] = "requirements.txt"
        (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        (job_dir / "requirements.txt").write_text(requirements)
    manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
    manifest["name"] = name
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


PHASES = ("fetching the source code", "building image", "starting Job server", "initializing Job entrypoint")


def phase_durations(url: str, token: str, name: str) -> dict[str, float]:
    """Durations of the phases of the newest deployment of `name`, as the daemon recorded them."""
    deployments = requests.get(
        f"{url}/lifecycle/api/v1/deploy", params={"limit": 500}, headers={"X-Racetrack-Auth": token}, timeout=10
    ).json()
    newest = next(d for d in deployments if d["job_name"] == name)
    return {p["name"]: float(p["duration"] or 0) for p in newest["phases"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    client = docker.from_env()
    base_image = find_base_image(client)
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-deploy-"))
    jobs_dir = data_dir / "jobs"
    port, token = launcher.free_port(), uuid.uuid4().hex
    url = f"http://127.0.0.1:{port}"
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=INSTANCE, base_image=base_image)
    env.update({"RTD_REMOTE": url, "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml")})
    log_path = data_dir / "daemon.log"
    daemon = launcher.start(env, log_path, new_session=False)  # Ctrl-C reaches it too
    times: dict[str, list[float]] = {"new_job": [], "code_only": [], "requirements": []}
    phases: dict[str, list[dict[str, float]]] = {key: [] for key in times}
    try:
        launcher.wait_ready(url, daemon, log_path, timeout=120, step=0.05)
        # Warm up: the wrapper and base layers are cached from here on, as on any daemon in use.
        timed_submit(env, make_job(jobs_dir, "bench-warmup"))
        timed_submit(env, make_job(jobs_dir, "bench-warmup-reqs", requirements=""))

        for run in range(args.runs):
            name = f"bench-new-{run}-{uuid.uuid4().hex[:6]}"
            job_dir = make_job(jobs_dir, name)
            times["new_job"].append(timed_submit(env, job_dir))
            phases["new_job"].append(phase_durations(url, token, name))
            check_answer(url, token, name)

            code = job_dir / "entrypoint.py"
            code.write_text(code.read_text() + f"\n# code-only change {uuid.uuid4().hex}\n")
            times["code_only"].append(timed_submit(env, job_dir, force=True))
            phases["code_only"].append(phase_durations(url, token, name))
            check_answer(url, token, name)

            req_name = f"bench-reqs-{run}"
            req_dir = make_job(jobs_dir, req_name, requirements=f"# run {uuid.uuid4().hex}\n")
            timed_submit(env, req_dir)  # untimed: the job as it was before the change
            (req_dir / "requirements.txt").write_text(f"# run {uuid.uuid4().hex}\nsix\n")
            times["requirements"].append(timed_submit(env, req_dir, force=True))
            phases["requirements"].append(phase_durations(url, token, req_name))
            check_answer(url, token, req_name)
    finally:
        launcher.stop(daemon)
        remove_labelled(client, INSTANCE)
        shutil.rmtree(data_dir, ignore_errors=True)
    results = {
        key: {
            "median_s": round(statistics.median(values), 2),
            "runs_s": [round(v, 2) for v in values],
            "phases_median_s": {
                phase: round(statistics.median(run.get(phase, 0.0) for run in phases[key]), 2) for phase in PHASES
            },
        }
        for key, values in times.items()
    }
    print(json.dumps(results, indent=2))
    write_report(results, args, base_image)


def write_report(results: dict[str, dict[str, object]], args: argparse.Namespace, base_image: str) -> None:
    def row(key: str, label: str) -> str:
        median = float(results[key]["median_s"])  # type: ignore[arg-type]
        runs = ", ".join(f"{value:.2f}" for value in results[key]["runs_s"])  # type: ignore[attr-defined]
        target = TARGETS.get(key)
        verdict = "reported" if target is None else (f"≤ {target:g} s: {'met' if median <= target else 'MISSED'}")
        split = results[key]["phases_median_s"]
        parts = " / ".join(f"{split[phase]:.2f}" for phase in PHASES)  # type: ignore[index]
        return f"| {label} | {median:.2f} s | {runs} | {parts} | {verdict} |"

    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/deploy.py --runs {args.runs}`)

Seconds from `rtd submit -q` to its return, i.e. until the job answers /ready, on a daemon whose
layer cache is warm (base image `{base_image}`, wrapper layers built once before timing).
Median of {args.runs} runs.

The phase split is the daemon's own record (median seconds): fetching the source / building the
image / starting the Job server / initializing the Job entrypoint. For a redeploy the last phase
also holds the zero-downtime switch: a {SWITCH_GRACE_NOTE}.

| deploy | median | runs (s) | phases: fetch / build / start / init (s) | target |
|---|---:|---|---|---|
{row("new_job", "first deploy of a new job (samples/adder under a new name)")}
{row("code_only", "code-only redeploy (`--force` after editing entrypoint.py)")}
{row("requirements", "requirements change (`six` added to requirements.txt)")}
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
