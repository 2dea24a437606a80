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
redeploy vs by hand"), for a python3 job and a golang job (`--redeploy-types`): the clock runs from
the command until the changed code answers a call.
  by hand:    `docker build` (the classic builder, as the daemon's engine has) of what a person
              writes for a code change, `docker run` on a published port, then calls every 10 ms
              until the new code answers. python3: `FROM <the job's image>` + `COPY` of the changed
              code. golang: the compiler has to run either way, so two stages, as a Go developer
              writes them: `FROM <the job's build stage>` (toolchain, wrapper, module and build
              caches all warm) + `COPY` of the changed code + `go build`, then `FROM <the job's
              image>` + `COPY --from=build` of the binary + `COPY` of the code;
  racetrackd: `rtd submit --force` of the same change, with calls through the gateway every 10 ms
              until the new code answers (also: when `rtd submit` returns).
The job's code says which revision it is (perform(revision=True)), so "answers" means the new code.
All traffic is to 127.0.0.1. golang jobs build in RACETRACK_GOLANG_BASE_IMAGE (default: the local
racetrackd/golang-base:bookworm) and run in RACETRACK_GOLANG_RUNTIME_IMAGE (default:
debian:bookworm-slim when the engine has it, else the python3 base image), nothing pulled.
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
from dataclasses import dataclass
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
from builders.labels import LABEL_BUILD_STAGE
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


def make_job(root: Path, name: str, requirements: str | None = None, sample: Path = SAMPLE) -> Path:
    job_dir = root / name
    shutil.copytree(sample, job_dir)
    if requirements is not None:
        manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
        manifest["jobtype_extra"]["requirements_path"] = "requirements.txt"
        (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        (job_dir / "requirements.txt").write_text(requirements)
    manifest = yaml.safe_load((job_dir / "job.yaml").read_text())
    manifest["name"] = name
    (job_dir / "job.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return job_dir


# The code-only redeploy's jobs: the samples' adders, telling which revision of their code answers.
PYTHON_REVISION_CODE = """REVISION = "{revision}"


class AdderModel:
    def perform(self, a: float = 0, b: float = 0, revision: bool = False) -> object:
        \"\"\"Add two numbers; with revision=true, say which revision of this code answers.\"\"\"
        return REVISION if revision else a + b

    def docs_input_example(self) -> dict:
        return {{"a": 40, "b": 2}}
"""
GO_REVISION_CODE = """package adder

// Revision says which revision of this code answers.
const Revision = "{revision}"

// Perform adds a and b; with revision=true, it says which revision of this code answers.
func Perform(args []interface{{}}, kwargs map[string]interface{{}}) (interface{{}}, error) {{
\tif kwargs["revision"] == true {{
\t\treturn Revision, nil
\t}}
\ta, _ := kwargs["a"].(float64)
\tb, _ := kwargs["b"].(float64)
\treturn a + b, nil
}}

// DocsInputExample is the request shown on the job's API page (/docs).
func DocsInputExample() map[string]interface{{}} {{
\treturn map[string]interface{{}}{{"a": 40, "b": 2}}
}}
"""
POLL_STEP = 0.01  # how often both sides of the comparison call the job while waiting for the new code
REDEPLOY_SECTION = "## Code-only redeploy vs by hand"


@dataclass(frozen=True)
class RedeployJob:
    """A job type's side of the comparison: its sample, the file its code is in, its target (issue #21)."""

    job_type: str
    sample: Path
    code_file: str
    code: str
    target: float  # racetrackd / by hand

    def write_revision(self, job_dir: Path) -> str:
        """Change the job's code (only its code); the revision the new code answers with."""
        revision = uuid.uuid4().hex
        (job_dir / self.code_file).write_text(self.code.format(revision=revision))
        return revision

    def by_hand_dockerfile(self, job_image: str, build_stage: str | None) -> str:
        """What a person writes for a code change on the images that have everything else."""
        if build_stage is None:  # an interpreted job: the code last, on the job's image
            return f"FROM {job_image}\nCOPY --chown=job:job job/ /src/job/\n"
        # A compiled job: the change compiled where the toolchain and the caches already are (the
        # job's build stage, its working directory the job's package with the wrapper beside it),
        # the binary and the code put into the job's image.
        return (
            f"FROM {build_stage} AS build\n"
            "COPY job/ /src/job/\n"
            "RUN go build -trimpath -o /opt/racetrack/job-server ./racetrack_job_wrapper\n"
            f"FROM {job_image}\n"
            "COPY --from=build /opt/racetrack/job-server /opt/racetrack/job-server\n"
            "COPY --chown=job:job job/ /src/job/\n"
        )


REDEPLOY_JOBS = {
    "python3": RedeployJob("python3", SAMPLE, "entrypoint.py", PYTHON_REVISION_CODE, 1.5),
    "golang": RedeployJob("golang", REPO / "samples" / "go-adder", "adder.go", GO_REVISION_CODE, 2.0),
}


def answers_revision(session: requests.Session, url: str, headers: dict[str, str], revision: str) -> bool:
    try:
        response = session.post(url, json={"revision": True}, headers=headers, timeout=5)
    except requests.RequestException:
        return False
    return response.status_code == 200 and response.json() == revision


def racetrackd_redeploy(
    env: dict[str, str], kind: RedeployJob, job_dir: Path, url: str, token: str, name: str, *, through_rtd: bool
) -> tuple[float, float]:
    """(seconds until the changed code answers through the gateway, seconds until the deployment is
    done) for a code-only redeploy: `rtd submit --force` (`through_rtd`), or the same deploy request
    as rtd sends it, from this process (the daemon's part alone, without rtd's Python start-up)."""
    revision = kind.write_revision(job_dir)
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
    """The same code-only change done by hand with docker: build the changed code on the cached
    images, run it, call it until the new code answers."""

    def __init__(
        self,
        root: Path,
        client: docker.DockerClient,
        kind: RedeployJob,
        job_image: str,
        build_stage: str | None,
        job_env: list[str],
    ) -> None:
        self.dir = root / f"by-hand-{kind.job_type}"
        self.job_dir = self.dir / "job"
        shutil.copytree(kind.sample, self.job_dir)
        (self.dir / "Dockerfile").write_text(kind.by_hand_dockerfile(job_image, build_stage))
        self.kind = kind
        self.client = client
        self.env = job_env  # the racetrackd job's environment (image ENV and run-time variables alike)
        self.tag = f"racetrackd-{INSTANCE}/by-hand-{kind.job_type}:latest"
        self.container = f"racetrackd-{INSTANCE}-by-hand-{kind.job_type}"

    def redeploy(self) -> float:
        revision = self.kind.write_revision(self.job_dir)
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
            result = subprocess.run(command, env=docker_env, check=False, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
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


def build_stage(client: docker.DockerClient, name: str) -> str | None:
    """The newest build stage of job `name`'s multi-stage image (the daemon labels it), if it has one."""
    filters = {"label": [f"racetrackd.instance={INSTANCE}", f"{LABEL_BUILD_STAGE}={name}"]}
    stages = sorted(client.images.list(filters=filters), key=lambda image: image.attrs["Created"], reverse=True)
    return stages[0].id if stages else None


def compare_redeploys(
    env: dict[str, str],
    client: docker.DockerClient,
    kind: RedeployJob,
    jobs_dir: Path,
    url: str,
    token: str,
    runs: int,
) -> dict[str, Any]:
    """Code-only redeploys of a `kind` job by racetrackd and by hand, alternating, `runs` of each
    (after one untimed round of each, which warms the layer cache for both)."""
    name = f"bench-redeploy-{kind.job_type}"
    job_dir = make_job(jobs_dir, name, sample=kind.sample)
    timed_submit(env, job_dir)
    container = job_container(client, name)
    stage = build_stage(client, name) if kind.job_type == "golang" else None
    if kind.job_type == "golang" and stage is None:
        raise SystemExit(f"{name}: no build stage image labelled {LABEL_BUILD_STAGE}={name}")
    by_hand = ByHand(jobs_dir, client, kind, container.image.id, stage, container.attrs["Config"]["Env"])
    times: dict[str, list[float]] = {
        key: [] for key in ("by_hand", "api_answered", "api_done", "rtd_answered", "rtd_done")
    }
    splits: list[dict[str, float]] = []
    try:
        by_hand.redeploy()
        racetrackd_redeploy(env, kind, job_dir, url, token, name, through_rtd=False)
        for _ in range(runs):
            times["by_hand"].append(by_hand.redeploy())
            answered, finished = racetrackd_redeploy(env, kind, job_dir, url, token, name, through_rtd=False)
            times["api_answered"].append(answered)
            times["api_done"].append(finished)
            splits.append(phase_durations(url, token, name))
            answered, finished = racetrackd_redeploy(env, kind, job_dir, url, token, name, through_rtd=True)
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
    parser.add_argument(
        "--redeploy-types",
        default=",".join(REDEPLOY_JOBS),
        help=f"the job types of the code-only redeploy comparison, comma-separated (of {', '.join(REDEPLOY_JOBS)})",
    )
    args = parser.parse_args()
    kinds = [REDEPLOY_JOBS[job_type] for job_type in args.redeploy_types.split(",") if job_type]

    client = docker.from_env()
    base_image = find_base_image(client)
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-deploy-"))
    jobs_dir = data_dir / "jobs"
    port, token = launcher.free_port(), uuid.uuid4().hex
    url = f"http://127.0.0.1:{port}"
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=INSTANCE, base_image=base_image)
    env.update({"RTD_REMOTE": url, "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml")})
    env.update(golang_images(client, base_image))
    log_path = data_dir / "daemon.log"
    daemon = launcher.start(env, log_path, new_session=False)  # Ctrl-C reaches it too
    results: dict[str, dict[str, Any]] = {}
    comparisons: dict[str, dict[str, Any]] = {}
    try:
        launcher.wait_ready(url, daemon, log_path, timeout=120, step=0.05)
        # Warm up: the wrapper and base layers are cached from here on, as on any daemon in use.
        timed_submit(env, make_job(jobs_dir, "bench-warmup"))
        if args.only in ("all", "times"):
            results = deploy_times(env, jobs_dir, url, token, args.runs)
        if args.only in ("all", "redeploy"):
            for kind in kinds:
                comparisons[kind.job_type] = compare_redeploys(env, client, kind, jobs_dir, url, token, args.runs)
    finally:
        launcher.stop(daemon)
        remove_labelled(client, INSTANCE)
        shutil.rmtree(data_dir, ignore_errors=True)
    if results:
        print(json.dumps(results, indent=2))
        write_report(results, args, base_image)
    if comparisons:
        print(json.dumps(comparisons, indent=2))
        write_comparison(comparisons, args, base_image, env["RACETRACK_GOLANG_BASE_IMAGE"])


def golang_images(client: docker.DockerClient, base_image: str) -> dict[str, str]:
    """golang jobs' images, local ones only (the benchmark pulls nothing): the toolchain image
    `racetrackd base-images build --job-type golang` makes, and debian:bookworm-slim to run in, or
    the python3 base image (Debian too) when the engine has no slim image."""
    runtime = "debian:bookworm-slim" if client.images.list(name="debian:bookworm-slim") else base_image
    return {
        "RACETRACK_GOLANG_BASE_IMAGE": os.environ.get("RACETRACK_GOLANG_BASE_IMAGE", "racetrackd/golang-base:bookworm"),
        "RACETRACK_GOLANG_RUNTIME_IMAGE": os.environ.get("RACETRACK_GOLANG_RUNTIME_IMAGE", runtime),
    }


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


def write_comparison(
    comparisons: dict[str, dict[str, Any]], args: argparse.Namespace, base_image: str, golang_base_image: str
) -> None:
    def table(job_type: str) -> str:
        comparison = comparisons[job_type]
        median, runs, split = comparison["median_s"], comparison["runs_s"], comparison["phases_median_s"]
        kind = REDEPLOY_JOBS[job_type]
        ratio = median["api_answered"] / median["by_hand"]
        verdict = "met" if ratio <= kind.target else "MISSED"

        def row(key: str, label: str) -> str:
            ratio = "1.00× (baseline)" if key == "by_hand" else f"{median[key] / median['by_hand']:.2f}×"
            return f"| {label} | {median[key]:.2f} s | {ratio} | {', '.join(f'{v:.2f}' for v in runs[key])} |"

        return f"""| {job_type}: code-only redeploy | median | ratio | runs (s) |
|---|---:|---:|---|
{row("by_hand", "by hand with docker (baseline)")}
{row("api_answered", "racetrackd, from the deploy request: new code answers through /pub")}
{row("api_done", "racetrackd, from the deploy request: deployment done")}
{row("rtd_answered", "racetrackd, from `rtd submit --force`: new code answers through /pub")}
{row("rtd_done", "racetrackd, from `rtd submit --force`: rtd returns")}

{job_type}: the daemon's phases of its redeploys from the deploy request (median s): fetch \
{split[PHASES[0]]:.2f} / build {split[PHASES[1]]:.2f} / start {split[PHASES[2]]:.2f} / init + switch \
{split[PHASES[3]]:.2f}.

{job_type} target: racetrackd ≤ {kind.target:g}× by hand, from the deploy request until the new code \
answers: {ratio:.2f}× — **{verdict}**.
"""

    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    tables = "\n".join(table(job_type) for job_type in comparisons)
    command = f"bench/deploy.py --runs {args.runs}{' --only redeploy' if args.only == 'redeploy' else ''}"
    if args.redeploy_types != ",".join(REDEPLOY_JOBS):
        command += f" --redeploy-types {args.redeploy_types}"
    section = f"""{REDEPLOY_SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `{command}`)

A small job of each type (samples/adder's model, base image `{base_image}`; samples/go-adder's
Perform, toolchain image `{golang_base_image}`) gets a code-only change (entrypoint.py, adder.go),
by hand and through racetrackd, alternating, {args.runs} times each after one untimed round of
each. The clock runs from the command until the changed code answers a call (calls every
{POLL_STEP * 1000:g} ms). By hand: `docker build` (classic builder) of what a person writes for a code
change, `docker run` on a published port, calls to that port. For python3 that is `FROM <the job's
image>` + `COPY` of the code. A Go change has to be compiled either way, so by hand is the two-stage
Dockerfile a Go developer writes, with every cache warm: `FROM <the job's build stage>` (toolchain,
wrapper sources, module and build caches of the last build) + `COPY` of the code + `go build
-trimpath`, then `FROM <the job's image>` + `COPY --from=build` of the binary + `COPY` of the code.
racetrackd: the deploy request `rtd submit --force` sends (POST /lifecycle/api/v1/deploy with the
packed directory), made from the benchmark's own process, and `rtd submit --force` itself (which
adds rtd's Python start-up), calls through the gateway (/pub); the old version serves until the
switch. Load average at the end of the run (1 / 5 / 15 min): {load}.

{tables}"""
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
