"""Benchmark: our python3 job wrapper vs. the limit (bare uvloop+httptools), Racetrack's runner, gunicorn+Flask.

    .venv/bin/python bench/wrapper.py [--duration 10] [--connections 16] [--threads 2]

The same addition (samples/adder) under three servers, each in a container from the same base
image the daemon uses (`python:3.11-slim` if present locally, else `racetrackd/python3-base:bookworm`)
and with the same Docker CPU/memory limits (those the daemon gave our job):
  1. ours: samples/adder deployed by a daemon of its own (instance `bench-wrapper-*`), called
     straight at the job's published port;
  2. Racetrack's runner: `pip install racetrack-job-runner`, `racetrack_job_runner run entrypoint.py`;
  3. bare: gunicorn (gthread, 4 workers x 4 threads) serving a 5-line Flask app doing the addition;
  4. limit: bench/bare_server.py, a bare uvloop + httptools server that parses the same JSON body and
     answers JSON, nothing else (the wrapper's own pins of both): what one Python process can do.
Measures requests/s under `wrk` (a Lua script POSTs the JSON), the container's CPU per call (its
cgroup's CPU time over the calls wrk made: unlike req/s this does not depend on how much CPU the
machine's other load leaves to wrk), idle memory after start and a warm-up (before load), and our
code-only redeploy (touch entrypoint.py; `rtd submit --force`).
Results go to stdout and replace the "## Python wrapper" section of docs/benchmarks.md.
Every container and image it creates is labelled `racetrackd.instance=<this run>` and removed at
the end; all traffic is to 127.0.0.1; every wait and load run is bounded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from _report import remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "adder"
PAYLOAD = {"a": 40, "b": 2}
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGES = ("python:3.11-slim", "racetrackd/python3-base:bookworm")
RUNNER_PACKAGE = "racetrack-job-runner==1.18.0"
GUNICORN_PIN = next(
    (
        line.strip()
        for line in (REPO / "jobtype_plugins/python3/wrapper-requirements.txt").read_text().splitlines()
        if line.startswith("gunicorn")
    ),
    "gunicorn",
)
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"a": 40, "b": 2}'
wrk.headers["Content-Type"] = "application/json"
"""

RUNNER_DOCKERFILE = """FROM {base}
{ca}
RUN python3 -m venv /opt/runner-venv && /opt/runner-venv/bin/pip install --no-cache-dir {package}
COPY entrypoint.py /src/job/entrypoint.py
WORKDIR /src/job
ENV JOB_NAME=adder JOB_VERSION=0.0.1 JOB_DEPLOYMENT_TIMESTAMP=0
USER 1000
EXPOSE 7000
CMD ["/opt/runner-venv/bin/racetrack_job_runner", "run", "entrypoint.py", "AdderModel", "--port", "7000"]
"""

BARE_DOCKERFILE = """FROM {base}
{ca}
RUN python3 -m venv /opt/bare-venv && /opt/bare-venv/bin/pip install --no-cache-dir {gunicorn} flask
COPY app.py /src/app/app.py
WORKDIR /src/app
USER 1000
EXPOSE 7000
CMD ["/opt/bare-venv/bin/gunicorn", "--bind", "0.0.0.0:7000", "--workers", "4", "--worker-class", "gthread", \
"--threads", "4", "app:app"]
"""

LIMIT_DOCKERFILE = """FROM {base}
{ca}
RUN python3 -m venv /opt/limit-venv && /opt/limit-venv/bin/pip install --no-cache-dir {pins}
COPY bare_server.py /src/app/bare_server.py
USER 1000
EXPOSE 7000
CMD ["/opt/limit-venv/bin/python", "/src/app/bare_server.py", "7000"]
"""
LIMIT_PINS = " ".join(
    line.strip()
    for line in (REPO / "jobtype_plugins/python3/wrapper-requirements.txt").read_text().splitlines()
    if line.startswith(("uvloop", "httptools"))
)

BARE_APP = """from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/api/v1/perform")
def perform():
    body = request.get_json()
    return jsonify(body["a"] + body["b"])
"""


def wait_until(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what}: not ready after {timeout:.0f} s")


def answers_42(url: str) -> bool:
    response = requests.post(url, json=PAYLOAD, timeout=5)
    return response.status_code == 200 and response.json() == 42


def submit(env: dict[str, str], job_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "submit", "--force", str(job_dir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        raise SystemExit(f"rtd submit failed:\n{result.stdout}\n{result.stderr}")


def build_image(client: docker.DockerClient, tag: str, files: dict[str, bytes], labels: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    log: list[str] = []
    for chunk in client.api.build(
        fileobj=buffer,
        custom_context=True,
        tag=tag,
        labels=labels,
        rm=True,
        forcerm=True,
        decode=True,
        network_mode="host",
        timeout=900,
    ):
        log.append(chunk.get("stream", ""))
        if "error" in chunk:
            raise SystemExit(f"building {tag} failed: {chunk['error']}\n{''.join(log)[-3000:]}")
    return tag


def ca_lines(files: dict[str, bytes]) -> str:
    """The host CA bundle for pip behind a TLS-inspecting proxy, as templates/dockerfile/package_index.j2 does."""
    if not CA_BUNDLE.is_file():
        return ""
    files["ca-bundle.crt"] = CA_BUNDLE.read_bytes()
    return "COPY ca-bundle.crt /etc/bench/ca-bundle.crt\nARG PIP_CERT=/etc/bench/ca-bundle.crt"


def container_address(container: Any) -> str | None:
    """The container's own IP on its (first) network: every server is called there, with no
    port-publishing proxy in the path that would cost some servers more than others."""
    for network in (container.attrs["NetworkSettings"].get("Networks") or {}).values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return None


def run_container(
    client: docker.DockerClient, image: str, labels: dict[str, str], limits: dict[str, int]
) -> tuple[Any, str]:
    container = client.containers.run(image, detach=True, labels=labels, **limits)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        container.reload()
        address = container_address(container)
        if address:
            return container, f"http://{address}:7000"
        time.sleep(0.1)
    raise SystemExit(f"container of {image} never got an address:\n{container.logs().decode(errors='replace')}")


def warm_up(url: str, calls: int = 300) -> None:
    with requests.Session() as session:
        for _ in range(calls):
            response = session.post(url, json=PAYLOAD, timeout=10)
            if response.json() != 42:
                raise SystemExit(f"unexpected answer from {url}: {response.text}")


def idle_memory_mib(container: Any) -> float:
    """Memory as `docker stats` shows it: usage minus inactive page cache; median of 3 samples."""
    samples = []
    for _ in range(3):
        stats = container.stats(stream=False)["memory_stats"]
        extra = stats.get("stats", {})
        cache = extra.get("inactive_file", extra.get("total_inactive_file", 0))
        samples.append((stats["usage"] - cache) / 2**20)
        time.sleep(0.5)
    return statistics.median(samples)


def cpu_seconds(container: Any) -> float:
    """CPU time the container has used so far (its cgroup's, all processes and threads)."""
    return float(container.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


def wrk(url: str, args: argparse.Namespace, script: Path) -> dict[str, float]:
    result = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=args.duration + 60,
    )
    if result.returncode != 0:
        raise SystemExit(f"wrk failed against {url}:\n{result.stdout}\n{result.stderr}")
    out = result.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{out}")
    calls = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": float(rps.group(1)),
        "calls": float(calls.group(1)) if calls else float("nan"),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--redeploys", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required (apt-get install wrk)")

    client = docker.from_env()
    base_image = next((name for name in BASE_IMAGES if client.images.list(name=name)), None)
    if base_image is None:
        raise SystemExit("no python3 base image: run `racetrackd base-images build` first")
    instance = f"bench-wrapper-{uuid.uuid4().hex[:6]}"
    labels = {"racetrackd.instance": instance}
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-wrapper-"))
    job_dir = data_dir / "adder"
    shutil.copytree(SAMPLE, job_dir)
    # A whole CPU's weight (cpu_min 1, Docker's default 1024 shares) like the other servers get: with
    # the daemon's default cpu_min of 10m, ours alone was starved whenever the machine was busy.
    manifest = job_dir / "job.yaml"
    manifest.write_text(manifest.read_text() + 'resources:\n  cpu_min: "1"\n  cpu_max: "1"\n')
    script = data_dir / "post.lua"
    script.write_text(WRK_SCRIPT)
    port, token = launcher.free_port(), uuid.uuid4().hex
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=instance, base_image=base_image)
    env.update({"RTD_REMOTE": f"http://127.0.0.1:{port}", "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml")})
    log_path = data_dir / "daemon.log"
    daemon = launcher.start(env, log_path, new_session=False)  # Ctrl-C reaches it too
    results: dict[str, Any] = {}
    try:
        launcher.wait_ready(f"http://127.0.0.1:{port}", daemon, log_path, timeout=120, step=0.1)
        print("deploying samples/adder with racetrackd ...", flush=True)
        submit(env, job_dir)
        ours_container = next(
            c
            for c in client.containers.list(filters={"label": f"racetrackd.instance={instance}"})
            if c.labels.get("job-name") == "adder"
        )
        ours_url = f"http://{container_address(ours_container)}:7000"
        host_config = ours_container.attrs["HostConfig"]
        limits = {
            "nano_cpus": host_config.get("NanoCpus") or None,
            "cpu_shares": host_config.get("CpuShares") or None,
            "mem_limit": host_config.get("Memory") or None,
        }
        limits = {k: v for k, v in limits.items() if v}

        print("building Racetrack's runner and the bare gunicorn+Flask images ...", flush=True)
        runner_files: dict[str, bytes] = {"entrypoint.py": (SAMPLE / "entrypoint.py").read_bytes()}
        runner_files["Dockerfile"] = RUNNER_DOCKERFILE.format(
            base=base_image, ca=ca_lines(runner_files), package=RUNNER_PACKAGE
        ).encode()
        runner_image = build_image(client, f"racetrackd-bench/{instance}-runner:latest", runner_files, labels)
        bare_files: dict[str, bytes] = {"app.py": BARE_APP.encode()}
        bare_files["Dockerfile"] = BARE_DOCKERFILE.format(
            base=base_image, ca=ca_lines(bare_files), gunicorn=GUNICORN_PIN
        ).encode()
        bare_image = build_image(client, f"racetrackd-bench/{instance}-bare:latest", bare_files, labels)
        limit_files: dict[str, bytes] = {"bare_server.py": (REPO / "bench" / "bare_server.py").read_bytes()}
        limit_files["Dockerfile"] = LIMIT_DOCKERFILE.format(
            base=base_image, ca=ca_lines(limit_files), pins=LIMIT_PINS
        ).encode()
        limit_image = build_image(client, f"racetrackd-bench/{instance}-limit:latest", limit_files, labels)

        runner_container, runner_url = run_container(client, runner_image, labels, limits)
        bare_container, bare_url = run_container(client, bare_image, labels, limits)
        limit_container, limit_url = run_container(client, limit_image, labels, limits)
        servers = {
            "limit": (limit_container, f"{limit_url}/api/v1/perform"),
            "ours": (ours_container, f"{ours_url}/api/v1/perform"),
            "runner": (runner_container, f"{runner_url}/api/v1/perform"),
            "bare": (bare_container, f"{bare_url}/api/v1/perform"),
        }
        for name, (_container, url) in servers.items():
            wait_until(lambda url=url: answers_42(url), f"{name} at {url}", timeout=180)
            warm_up(url)
        time.sleep(3)  # let the warm-up's garbage settle
        for name, (container, _url) in servers.items():
            results[f"{name}_idle_mib"] = idle_memory_mib(container)
        for name, (container, url) in servers.items():
            print(f"wrk against {name} ({url}) ...", flush=True)
            cpu_before = cpu_seconds(container)
            load = wrk(url, args, script)
            results[f"{name}_cpu_us"] = (cpu_seconds(container) - cpu_before) / load["calls"] * 1e6
            results[f"{name}_rps"] = load["rps"]
            results[f"{name}_p50_ms"] = load["p50_ms"]
            results[f"{name}_errors"] = load["non_2xx"] + load["socket_errors"]
        results["runner_version"] = (
            runner_container.exec_run(["/opt/runner-venv/bin/pip", "show", "racetrack-job-runner"])
            .output.decode()
            .split("Version: ")[1]
            .split()[0]
        )

        redeploys = []
        for i in range(args.redeploys):
            entrypoint = job_dir / "entrypoint.py"
            entrypoint.write_text(entrypoint.read_text() + f"\n# touched {i}\n")
            start = time.perf_counter()
            submit(env, job_dir)
            redeploys.append(time.perf_counter() - start)
        results["redeploy_s"] = statistics.median(redeploys)
        results["redeploys_s"] = redeploys
        results["limits"] = limits
        results["base_image"] = base_image
        results["ours_over_limit_rps"] = results["ours_rps"] / results["limit_rps"]
        results["limit_over_ours_cpu"] = results["limit_cpu_us"] / results["ours_cpu_us"]
        results["ours_over_runner_rps"] = results["ours_rps"] / results["runner_rps"]
        results["ours_over_bare_rps"] = results["ours_rps"] / results["bare_rps"]
        results["ours_over_runner_mem"] = results["ours_idle_mib"] / results["runner_idle_mib"]
        results["ours_over_bare_mem"] = results["ours_idle_mib"] / results["bare_idle_mib"]
        results["ours_over_limit_mem"] = results["ours_idle_mib"] / results["limit_idle_mib"]
    finally:
        launcher.stop(daemon)
        remove_labelled(client, instance)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    write_report(results, args)


def write_report(r: dict[str, Any], args: argparse.Namespace) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    cpus = r["limits"].get("nano_cpus", 0) / 1e9
    memory = r["limits"].get("mem_limit", 0) / 2**20
    section = f"""## Python wrapper ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/wrapper.py --duration {args.duration} --connections {args.connections} --threads {args.threads}`)

samples/adder under four servers, each a container of `{r["base_image"]}` limited to {cpus:g} CPU and {memory:.0f} MiB
with {r["limits"].get("cpu_shares", 1024)} CPU shares (ours deployed with `cpu_min: 1`, so its weight equals the others' under load); `wrk -t{args.threads} -c{args.connections} -d{args.duration}s` POSTing `{{"a": 40, "b": 2}}`
straight to each container's own address, one server after the other. Ours: the python3 job type's wrapper as the
daemon deploys it (one process: its own httptools + uvloop server, job code in a thread pool, metrics, access log and
tracing id on every call). Limit: `bench/bare_server.py`, a bare uvloop + httptools server parsing the same JSON body
and answering JSON, nothing else. Racetrack's runner: `{RUNNER_PACKAGE.split("==")[0]} {r["runner_version"]}` with its
defaults. Bare gunicorn+Flask: gthread, 4 workers x 4 threads, a 5-line Flask view. CPU per call: the container's
cgroup CPU time during the wrk run over the calls answered (does not depend on how much CPU the machine's other
load leaves to wrk, unlike req/s).

| measure | ours | limit (uvloop+httptools) | Racetrack's runner | bare gunicorn+Flask | ours / limit | ours / runner | ours / bare |
|---|---:|---:|---:|---:|---:|---:|---:|
| throughput | {r["ours_rps"]:.0f} req/s | {r["limit_rps"]:.0f} req/s | {r["runner_rps"]:.0f} req/s | {r["bare_rps"]:.0f} req/s | {r["ours_over_limit_rps"]:.2f}× | {r["ours_over_runner_rps"]:.2f}× | {r["ours_over_bare_rps"]:.2f}× |
| CPU per call | {r["ours_cpu_us"]:.0f} µs | {r["limit_cpu_us"]:.0f} µs | {r["runner_cpu_us"]:.0f} µs | {r["bare_cpu_us"]:.0f} µs | limit/ours {r["limit_over_ours_cpu"]:.2f}× | | |
| median latency under load | {r["ours_p50_ms"]:.2f} ms | {r["limit_p50_ms"]:.2f} ms | {r["runner_p50_ms"]:.2f} ms | {r["bare_p50_ms"]:.2f} ms | | | |
| failed requests | {r["ours_errors"]:.0f} | {r["limit_errors"]:.0f} | {r["runner_errors"]:.0f} | {r["bare_errors"]:.0f} | | | |
| idle memory after warm-up | {r["ours_idle_mib"]:.1f} MiB | {r["limit_idle_mib"]:.1f} MiB | {r["runner_idle_mib"]:.1f} MiB | {r["bare_idle_mib"]:.1f} MiB | {r["ours_over_limit_mem"]:.2f}× | {r["ours_over_runner_mem"]:.2f}× | {r["ours_over_bare_mem"]:.2f}× |

Code-only redeploy (touch entrypoint.py, `rtd submit --force`, until done): median {r["redeploy_s"]:.2f} s
of {len(r["redeploys_s"])} ({", ".join(f"{s:.2f}" for s in r["redeploys_s"])} s).

Targets: throughput ≥ 0.5× the limit's (issue #21): {verdict(r["ours_over_limit_rps"] >= 0.5)}
(by CPU per call: {verdict(r["limit_over_ours_cpu"] >= 0.5)});
throughput ≥ 5× the runner's: {verdict(r["ours_over_runner_rps"] >= 5)};
idle memory ≤ the runner's: {verdict(r["ours_idle_mib"] <= r["runner_idle_mib"])};
redeploy ≤ 5 s: {verdict(r["redeploy_s"] <= 5)}.
"""
    write_section("## Python wrapper", section)


if __name__ == "__main__":
    main()
