"""Benchmark: what racetrackd adds on top of the job itself, as ratios measured in one run.

    .venv/bin/python bench/gateway_and_deploy.py [--calls 500] [--threads 8]

Starts its own daemon (instance `bench`, free loopback port, temporary data dir), deploys
samples/adder, and measures
  1. call latency through the gateway vs. straight to the job's published port (baseline),
  2. throughput with concurrent callers, gateway vs. direct,
  3. a code-only redeploy (`rtd submit --force` after touching entrypoint.py) vs. the bare
     `docker run` + wait-for-ready of the same image (baseline).
Results go to stdout and replace the matching section of docs/benchmarks.md. All traffic is
to 127.0.0.1; loops are bounded by --calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker
import requests
from _report import base_image as find_base_image
from _report import remove_labelled, write_section

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "adder"
PAYLOAD = {"a": 40, "b": 2}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_calls(session: requests.Session, url: str, headers: dict[str, str], count: int) -> list[float]:
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        response = session.post(url, json=PAYLOAD, headers=headers, timeout=10)
        durations.append(time.perf_counter() - start)
        if response.json() != 42:
            raise SystemExit(f"unexpected answer from {url}: {response.text}")
    return durations


def throughput(url: str, headers: dict[str, str], threads: int, per_thread: int) -> float:
    def worker() -> None:
        with requests.Session() as session:
            timed_calls(session, url, headers, per_thread)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return threads * per_thread / (time.perf_counter() - start)


def submit(env: dict[str, str], job_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "cli", "submit", "--force", str(job_dir)], env=env,
                            capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"rtd submit failed:\n{result.stdout}\n{result.stderr}")


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} never became ready")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    client = docker.from_env()
    base_image = find_base_image(client)
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-"))
    job_dir = data_dir / "adder"
    shutil.copytree(SAMPLE, job_dir)
    port, token, instance = free_port(), uuid.uuid4().hex, "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RACETRACK_", "RTD_"))}
    env.update({
        "RACETRACK_PORT": str(port), "RACETRACK_DATA_DIR": str(data_dir), "RACETRACK_ADMIN_TOKEN": token,
        "RACETRACK_INSTANCE": instance, "RACETRACK_PYTHON_BASE_IMAGE": base_image,
        "RTD_REMOTE": f"http://127.0.0.1:{port}", "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml"),
    })
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():  # package index behind a TLS proxy
        env["RACETRACK_BUILD_CA_BUNDLE"] = "/etc/ssl/certs/ca-certificates.crt"
    daemon = subprocess.Popen([sys.executable, "-m", "racetrackd", "serve"], env=env, cwd=REPO,
                              stdout=(data_dir / "daemon.log").open("wb"), stderr=subprocess.STDOUT)
    results: dict[str, float] = {}
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready")
        submit(env, job_dir)
        headers = {"X-Racetrack-Auth": token}
        job = requests.get(f"http://127.0.0.1:{port}/lifecycle/api/v1/job/adder/latest", headers=headers).json()
        direct = f"http://{job['internal_name']}/api/v1/perform"
        gateway = f"http://127.0.0.1:{port}/pub/job/adder/latest/api/v1/perform"

        with requests.Session() as session:
            timed_calls(session, direct, {}, 50)  # warm up both paths
            timed_calls(session, gateway, headers, 50)
            direct_lat = statistics.median(timed_calls(session, direct, {}, args.calls))
            gateway_lat = statistics.median(timed_calls(session, gateway, headers, args.calls))
        per_thread = max(1, args.calls // args.threads)
        direct_rps = throughput(direct, {}, args.threads, per_thread)
        gateway_rps = throughput(gateway, headers, args.threads, per_thread)

        # Code-only redeploy vs. the bare container start of the same image.
        (job_dir / "entrypoint.py").write_text((job_dir / "entrypoint.py").read_text() + "\n# touched\n")
        start = time.perf_counter()
        submit(env, job_dir)
        redeploy_s = time.perf_counter() - start
        image = requests.get(f"http://127.0.0.1:{port}/lifecycle/api/v1/job/adder/latest", headers=headers).json()["image_tag"]
        start = time.perf_counter()
        container = client.containers.run(image, detach=True, ports={"7000/tcp": ("127.0.0.1", None)},
                                          labels={"racetrackd.instance": instance})
        try:
            container.reload()
            host_port = container.attrs["NetworkSettings"]["Ports"]["7000/tcp"][0]["HostPort"]
            wait_ready(f"http://127.0.0.1:{host_port}/ready")
            bare_start_s = time.perf_counter() - start
        finally:
            container.remove(force=True)

        results = {
            "direct_median_ms": direct_lat * 1000, "gateway_median_ms": gateway_lat * 1000,
            "latency_ratio": gateway_lat / direct_lat,
            "direct_rps": direct_rps, "gateway_rps": gateway_rps, "throughput_ratio": gateway_rps / direct_rps,
            "redeploy_s": redeploy_s, "bare_start_s": bare_start_s, "redeploy_ratio": redeploy_s / bare_start_s,
        }
    finally:
        daemon.terminate()
        daemon.wait(timeout=40)
        remove_labelled(client, instance)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    write_report(results, args)


def write_report(r: dict[str, float], args: argparse.Namespace) -> None:
    section = f"""## Gateway and deploy ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, `bench/gateway_and_deploy.py --calls {args.calls} --threads {args.threads}`)

| measure | racetrackd | baseline (same run) | ratio |
|---|---:|---:|---:|
| median call latency, sequential keep-alive | {r['gateway_median_ms']:.2f} ms via /pub | {r['direct_median_ms']:.2f} ms to the job's port | {r['latency_ratio']:.2f}× |
| throughput, {args.threads} concurrent callers | {r['gateway_rps']:.0f} req/s via /pub | {r['direct_rps']:.0f} req/s to the job's port | {r['throughput_ratio']:.2f}× |
| code-only redeploy (`rtd submit --force`) | {r['redeploy_s']:.2f} s | {r['bare_start_s']:.2f} s: `docker run` of the image until /ready | {r['redeploy_ratio']:.2f}× |
"""
    write_section("## Gateway and deploy", section)


if __name__ == "__main__":
    main()
