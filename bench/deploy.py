"""Benchmark: seconds from `rtd submit` to a ready job, on a warm daemon; a code-only redeploy
against the same change made by hand with docker.

    .venv/bin/python bench/deploy.py [--runs 3] [--only redeploy]

Starts its own daemon (instance `bench-deploy`, free loopback port, temporary data dir), warms the
layer cache with samples/adder, then times `rtd submit` (which returns once the job answers /ready)
for
  1. the first deploy of a new job (a new name each run; the wrapper layers are cached),
  2. a code-only redeploy (`rtd submit --force` after changing entrypoint.py),
  3. a requirements change (requirements.txt gains `six`, so pip runs in the build),
and checks each job answers through the gateway. Medians of --runs runs go to stdout and replace
the "## Deploy times" section of docs/benchmarks.md.

Then, in the same run, the code-only redeploy against its by-hand baseline (section "## Code-only
redeploy vs by hand"): the clock runs from the command until the changed code answers a call.
  by hand:    `docker build` of `FROM <the job's image>` + `COPY` of the changed code (the classic
              builder, as the daemon's engine has), `docker run` on a published port, then calls
              every 10 ms until the new code answers;
  racetrackd: `rtd submit --force` of the same change, with calls through the gateway every 10 ms
              until the new code answers (also: when `rtd submit` returns).
The job's code says which revision it is (perform(revision=True)), so "answers" means the new code.
All traffic is to 127.0.0.1.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import yaml
from _jobs import check_answer
from _report import base_image as find_base_image
from _report import remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from cli.packing import pack
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


# The code-only redeploy's job: samples/adder's model, telling which revision of its code answers.
REVISION_CODE = """REVISION = "{revision}"


class AdderModel:
    def perform(self, a: float = 0, b: float = 0, revision: bool = False) -> object:
        \"\"\"Add two numbers; with revision=true, say which revision of this code answers.\"\"\"
        return REVISION if revision else a + b

    def docs_input_example(self) -> dict:
        return {{"a": 40, "b": 2}}
"""
POLL_STEP = 0.01  # how often both sides of the comparison call the job while waiting for the new code
REDEPLOY_SECTION = "## Code-only redeploy vs by hand"
REDEPLOY_TARGET = 1.5  # racetrackd / by hand (issue #21)


def write_revision(job_dir: Path) -> str:
    """Change the job's code (only its code); the revision the new code answers with."""
    revision = uuid.uuid4().hex
    (job_dir / "entrypoint.py").write_text(REVISION_CODE.format(revision=revision))
    return revision


def answers_revision(session: requests.Session, url: str, headers: dict[str, str], revision: str) -> bool:
    try:
        response = session.post(url, json={"revision": True}, headers=headers, timeout=5)
    except requests.RequestException:
        return False
    return response.status_code == 200 and response.json() == revision


def racetrackd_redeploy(
    env: dict[str, str], job_dir: Path, url: str, token: str, name: str, *, through_rtd: bool
) -> tuple[float, float]:
    """(seconds until the changed code answers through the gateway, seconds until the deployment is
    done) for a code-only redeploy: `rtd submit --force` (`through_rtd`), or the same deploy request
    as rtd sends it, from this process (the daemon's part alone, without rtd's Python start-up)."""
    revision = write_revision(job_dir)
    call_url, headers = f"{url}/pub/job/{name}/latest/api/v1/perform", {"X-Racetrack-Auth": token}
    session = requests.Session()
    command = [sys.executable, "-m", "cli", "submit", "-q", "--force", str(job_dir)]
    start = time.perf_counter()
    if through_rtd:
        submit = subprocess.Popen(
            command, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        done: Callable[[], bool] = lambda: submit.poll() is not None  # noqa: E731 (one line each way)
    else:
        body = {
            "manifest": yaml.safe_load((job_dir / "job.yaml").read_text()),
            "build_context": pack(job_dir),
            "force": True,
        }
        response = session.post(f"{url}/lifecycle/api/v1/deploy", json=body, headers=headers, timeout=60)
        response.raise_for_status()
        deployment_url = f"{url}/lifecycle/api/v1/deploy/{response.json()['id']}"
        done = lambda: session.get(deployment_url, headers=headers, timeout=10).json()["status"] != "in_progress"  # noqa: E731
    finished: float | None = None
    while not answers_revision(session, call_url, headers, revision):
        if finished is None and done():
            finished = time.perf_counter() - start
        if time.perf_counter() - start > 300:
            raise SystemExit(f"{name}: the new code never answered through the gateway")
        time.sleep(POLL_STEP)
    answered = time.perf_counter() - start
    while finished is None:
        if done():
            finished = time.perf_counter() - start
        elif time.perf_counter() - start > 300:
            raise SystemExit(f"{name}: the redeploy never finished")
        else:
            time.sleep(POLL_STEP)
    if through_rtd and submit.returncode != 0:
        raise SystemExit(f"rtd submit --force {job_dir} failed:\n{submit.communicate()[0].decode()}")
    return answered, finished


class ByHand:
    """The same code-only change done by hand with docker: build a changed COPY layer on the cached
    image, run it, call it until the new code answers."""

    def __init__(self, root: Path, client: docker.DockerClient, job_image: str, job_env: list[str]) -> None:
        self.dir = root / "by-hand"
        self.job_dir = self.dir / "job"
        shutil.copytree(SAMPLE, self.job_dir)
        # What a person writes for a code change on an image that has everything else: the code last.
        (self.dir / "Dockerfile").write_text(f"FROM {job_image}\nCOPY --chown=job:job job/ /src/job/\n")
        self.client = client
        self.env = job_env  # the racetrackd job's environment (image ENV and run-time variables alike)
        self.tag = f"racetrackd-{INSTANCE}/by-hand:latest"
        self.container = f"racetrackd-{INSTANCE}-by-hand"

    def redeploy(self) -> float:
        revision = write_revision(self.job_dir)
        port = launcher.free_port()
        docker_env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder, as the daemon gets
        run = ["docker", "run", "-d", "--name", self.container, "--label", f"racetrackd.instance={INSTANCE}"]
        for variable in self.env:
            run += ["-e", variable]
        session = requests.Session()
        start = time.perf_counter()
        for command in (
            ["docker", "build", "-q", "-t", self.tag, str(self.dir)],
            [*run, "-p", f"127.0.0.1:{port}:7000", self.tag],
        ):
            subprocess.run(command, env=docker_env, check=True, capture_output=True, timeout=300)
        while not answers_revision(session, f"http://127.0.0.1:{port}/api/v1/perform", {}, revision):
            if time.perf_counter() - start > 120:
                raise SystemExit("the by-hand container never answered")
            time.sleep(POLL_STEP)
        elapsed = time.perf_counter() - start
        self.remove_container()
        return elapsed

    def remove_container(self) -> None:
        try:
            self.client.containers.get(self.container).remove(force=True)
        except docker.errors.NotFound:
            pass

    def remove(self) -> None:
        self.remove_container()
        try:
            self.client.images.remove(self.tag, force=True)
        except docker.errors.ImageNotFound:
            pass


def job_container(client: docker.DockerClient, name: str) -> Any:
    filters = {"label": [f"racetrackd.instance={INSTANCE}", f"job-name={name}"], "status": "running"}
    return client.containers.list(filters=filters)[0]


def compare_redeploys(
    env: dict[str, str], client: docker.DockerClient, jobs_dir: Path, url: str, token: str, runs: int
) -> dict[str, Any]:
    """Code-only redeploys by racetrackd and by hand, alternating, `runs` of each (after one untimed
    round of each, which warms the layer cache for both)."""
    name = "bench-redeploy"
    job_dir = make_job(jobs_dir, name)
    timed_submit(env, job_dir)
    container = job_container(client, name)
    by_hand = ByHand(jobs_dir, client, container.image.id, container.attrs["Config"]["Env"])
    times: dict[str, list[float]] = {
        key: [] for key in ("by_hand", "api_answered", "api_done", "rtd_answered", "rtd_done")
    }
    splits: list[dict[str, float]] = []
    try:
        by_hand.redeploy()
        racetrackd_redeploy(env, job_dir, url, token, name, through_rtd=False)
        for _ in range(runs):
            times["by_hand"].append(by_hand.redeploy())
            answered, finished = racetrackd_redeploy(env, job_dir, url, token, name, through_rtd=False)
            times["api_answered"].append(answered)
            times["api_done"].append(finished)
            splits.append(phase_durations(url, token, name))
            answered, finished = racetrackd_redeploy(env, job_dir, url, token, name, through_rtd=True)
            times["rtd_answered"].append(answered)
            times["rtd_done"].append(finished)
    finally:
        by_hand.remove()
    medians = {key: statistics.median(values) for key, values in times.items()}
    return {
        "median_s": {key: round(value, 3) for key, value in medians.items()},
        "runs_s": {key: [round(v, 3) for v in values] for key, values in times.items()},
        "ratio": round(medians["api_answered"] / medians["by_hand"], 2),
        "phases_median_s": {
            phase: round(statistics.median(split.get(phase, 0.0) for split in splits), 3) for phase in PHASES
        },
    }


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
    parser.add_argument(
        "--only", choices=("all", "times", "redeploy"), default="all", help="both sections, or only one of them"
    )
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
    results: dict[str, dict[str, Any]] = {}
    comparison: dict[str, Any] | None = None
    try:
        launcher.wait_ready(url, daemon, log_path, timeout=120, step=0.05)
        # Warm up: the wrapper and base layers are cached from here on, as on any daemon in use.
        timed_submit(env, make_job(jobs_dir, "bench-warmup"))
        if args.only in ("all", "times"):
            results = deploy_times(env, jobs_dir, url, token, args.runs)
        if args.only in ("all", "redeploy"):
            comparison = compare_redeploys(env, client, jobs_dir, url, token, args.runs)
    finally:
        launcher.stop(daemon)
        remove_labelled(client, INSTANCE)
        shutil.rmtree(data_dir, ignore_errors=True)
    if results:
        print(json.dumps(results, indent=2))
        write_report(results, args, base_image)
    if comparison is not None:
        print(json.dumps(comparison, indent=2))
        write_comparison(comparison, args, base_image)


def deploy_times(env: dict[str, str], jobs_dir: Path, url: str, token: str, runs: int) -> dict[str, dict[str, Any]]:
    """Medians of `runs` first deploys, code-only redeploys and requirements changes, timed by `rtd submit`."""
    times: dict[str, list[float]] = {"new_job": [], "code_only": [], "requirements": []}
    phases: dict[str, list[dict[str, float]]] = {key: [] for key in times}
    timed_submit(env, make_job(jobs_dir, "bench-warmup-reqs", requirements=""))
    for run in range(runs):
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
    return {
        key: {
            "median_s": round(statistics.median(values), 2),
            "runs_s": [round(v, 2) for v in values],
            "phases_median_s": {
                phase: round(statistics.median(run.get(phase, 0.0) for run in phases[key]), 2) for phase in PHASES
            },
        }
        for key, values in times.items()
    }


def write_comparison(comparison: dict[str, Any], args: argparse.Namespace, base_image: str) -> None:
    median, runs, split = comparison["median_s"], comparison["runs_s"], comparison["phases_median_s"]

    def row(key: str, label: str) -> str:
        ratio = "1.00× (baseline)" if key == "by_hand" else f"{median[key] / median['by_hand']:.2f}×"
        return f"| {label} | {median[key]:.2f} s | {ratio} | {', '.join(f'{v:.2f}' for v in runs[key])} |"

    ratio = median["api_answered"] / median["by_hand"]  # as the table shows it
    verdict = "met" if ratio <= REDEPLOY_TARGET else "MISSED"
    section = f"""{REDEPLOY_SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, \
`bench/deploy.py --runs {args.runs}{" --only redeploy" if args.only == "redeploy" else ""}`)

A small Python job (samples/adder's model; base image `{base_image}`) gets a code-only change
(entrypoint.py only), by hand and through racetrackd, alternating, {args.runs} times each after one
untimed round of each. The clock runs from the command until the changed code answers a call
(calls every {POLL_STEP * 1000:g} ms). By hand: `docker build` (classic builder) of `FROM <the job's
image>` + `COPY` of the code, `docker run` on a published port, calls to that port. racetrackd:
the deploy request `rtd submit --force` sends (POST /lifecycle/api/v1/deploy with the packed
directory), made from the benchmark's own process, and `rtd submit --force` itself (which adds
rtd's Python start-up), calls through the gateway (/pub); the old version serves until the switch.

| code-only redeploy | median | ratio | runs (s) |
|---|---:|---:|---|
{row("by_hand", "by hand with docker (baseline)")}
{row("api_answered", "racetrackd, from the deploy request: new code answers through /pub")}
{row("api_done", "racetrackd, from the deploy request: deployment done")}
{row("rtd_answered", "racetrackd, from `rtd submit --force`: new code answers through /pub")}
{row("rtd_done", "racetrackd, from `rtd submit --force`: rtd returns")}

Daemon's phases of the racetrackd redeploys from the deploy request (median s): fetch {split[PHASES[0]]:.2f} / build \
{split[PHASES[1]]:.2f} / start {split[PHASES[2]]:.2f} / init + switch {split[PHASES[3]]:.2f}.

Target: racetrackd ≤ {REDEPLOY_TARGET:g}× by hand, from the deploy request until the new code answers:
{ratio:.2f}× — **{verdict}**.
"""
    write_section(REDEPLOY_SECTION, section)


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
