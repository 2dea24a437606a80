"""Benchmark: the first call to a job that scaled to zero, paused and stopped, against docker's own unpause.

    .venv/bin/python bench/wake.py [--wakes 3]

Starts its own daemon (instance `bench-wake`, free loopback port, temporary data dir, supervisor
every second, RACETRACK_SLEEP_PAUSED_FOR=10) and deploys samples/adder with `idle_timeout: 5s`.
Then, --wakes times each, alternating:
  - paused: once the job is "sleeping" and its container paused, one call through the gateway
    (/pub) is timed: the daemon unpauses the container and forwards the call when /ready answers;
  - stopped: the same, once the container has also been stopped (3 s after it was paused): the
    daemon starts the container again;
  - docker's own (baseline): a container of the same image run by hand on a published port,
    paused with the Docker SDK, then `unpause` + calls straight to it every 5 ms until one answers;
  - awake (reference): calls through /pub while the job is awake.
Medians go to stdout and replace the "## Wake from zero" section of docs/benchmarks.md. All traffic
is to 127.0.0.1; every wait is bounded; what the benchmark made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from _daemon import BenchDaemon
from _report import base_image as find_base_image
from _report import remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

INSTANCE = "bench-wake"
SECTION = "## Wake from zero"
JOB = "bench-sleepy"
IDLE_TIMEOUT = 5
PAUSED_FOR = 10  # long enough to catch the job paused on a busy machine
WAIT_TIMEOUT = 90.0
AWAKE_CALLS = 20
TARGET_S = 0.5  # issue #21: wake from zero ≤ 0.5 s
BODY = {"a": 40, "b": 2}
BY_HAND = f"racetrackd-{INSTANCE}-by-hand"


def wait_for(condition: Callable[[], bool], what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


class Bench(BenchDaemon):
    def __init__(self, client: docker.DockerClient, base_image: str) -> None:
        super().__init__(
            prefix="wake",
            instance=INSTANCE,
            base_image=base_image,
            env={"RACETRACK_SUPERVISOR_INTERVAL": "1", "RACETRACK_SLEEP_PAUSED_FOR": str(PAUSED_FOR)},
        )
        self.client = client
        self.session = requests.Session()

    def cleanup(self) -> None:
        self.stop()
        remove_labelled(self.client, INSTANCE)
        self.remove_data()

    def deploy(self) -> None:
        self.start(timeout=120)
        self.submit(self.make_job(JOB, idle_timeout=f"{IDLE_TIMEOUT}s"))

    def container(self) -> Any:
        filters = {"label": [f"racetrackd.instance={INSTANCE}", f"job-name={JOB}"]}
        # The by-hand container carries the image's labels too: not that one.
        return next(c for c in self.client.containers.list(all=True, filters=filters) if c.name != BY_HAND)

    def status(self) -> str:
        response = self.session.get(f"{self.url}/lifecycle/api/v1/job/{JOB}/latest", headers=self.headers, timeout=10)
        return str(response.json()["status"])

    def asleep(self, container_status: str) -> bool:
        return self.status() == "sleeping" and self.container().status == container_status

    def timed_call(self) -> float:
        start = time.perf_counter()
        response = self.session.post(
            f"{self.url}/pub/job/{JOB}/latest/api/v1/perform", json=BODY, headers=self.headers, timeout=120
        )
        elapsed = time.perf_counter() - start
        if response.status_code != 200 or response.json() != 42:
            raise SystemExit(f"{JOB} answered {response.status_code}: {response.text}")
        return elapsed


class ByHand:
    """The job's image run by hand, paused and unpaused with the Docker SDK: docker's own wake-up."""

    def __init__(self, client: docker.DockerClient, job_container: Any) -> None:
        self.port = launcher.free_port()
        self.container = client.containers.run(
            job_container.image.id,
            detach=True,
            name=BY_HAND,
            labels={"racetrackd.instance": INSTANCE},
            environment=job_container.attrs["Config"]["Env"],
            ports={"7000/tcp": ("127.0.0.1", self.port)},
        )
        self.session = requests.Session()
        wait_for(self.answers, "the by-hand container to answer")

    def answers(self) -> bool:
        try:
            response = self.session.post(f"http://127.0.0.1:{self.port}/api/v1/perform", json=BODY, timeout=5)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def wake(self) -> float:
        self.container.pause()
        time.sleep(1)
        start = time.perf_counter()
        self.container.unpause()
        while not self.answers():
            time.sleep(0.005)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wakes", type=int, default=3, help="rounds (one paused and one stopped wake each)")
    args = parser.parse_args()
    client = docker.from_env()
    base_image = find_base_image(client)
    bench = Bench(client, base_image)
    times: dict[str, list[float]] = {"by_hand": [], "paused": [], "stopped": [], "awake": []}
    try:
        bench.deploy()
        bench.timed_call()  # on a busy host it may have gone to sleep before the first call
        times["awake"] = [bench.timed_call() for _ in range(AWAKE_CALLS)]
        by_hand = ByHand(client, bench.container())
        run = 0
        while len(times["paused"]) < args.wakes and run < 3 * args.wakes:
            run += 1
            times["by_hand"].append(by_hand.wake())
            wait_for(lambda: bench.asleep("paused") or bench.asleep("exited"), "the job to sleep", step=0.05)
            if bench.container().status != "paused":  # runc could not freeze it (a very busy host): stopped
                print(f"wake {run}: the job was stopped, not paused; again", file=sys.stderr)
                bench.timed_call()
                continue
            times["paused"].append(bench.timed_call())
            wait_for(lambda: bench.asleep("exited"), "the job to sleep stopped", step=0.05)
            times["stopped"].append(bench.timed_call())
            print(
                f"wake {run}: by hand {times['by_hand'][-1]:.3f} s, paused {times['paused'][-1]:.3f} s, "
                f"stopped {times['stopped'][-1]:.3f} s",
                file=sys.stderr,
            )
    except SystemExit:
        print(f"job: {bench.status()}, container: {bench.container().status}", file=sys.stderr)
        print(bench.log_path.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        # What the daemon says about each wake-up (and a pause runc could not do), for the record.
        for line in bench.log_path.read_text().splitlines():
            if "woke job" in line or "could not pause" in line:
                print(line[:300], file=sys.stderr)
        bench.cleanup()
    results = {
        "median_s": {key: round(statistics.median(values), 4) for key, values in times.items()},
        "runs_s": {key: [round(v, 3) for v in values] for key, values in times.items() if key != "awake"},
    }
    print(json.dumps(results, indent=2))
    write_report(results, args, base_image)


def write_report(results: dict[str, Any], args: argparse.Namespace, base_image: str) -> None:
    median, runs = results["median_s"], results["runs_s"]
    base = median["by_hand"]

    def row(key: str, label: str) -> str:
        ratio = "1.00× (baseline)" if key == "by_hand" else f"{median[key] / base:.2f}×"
        listed = ", ".join(f"{v:.2f}" for v in runs[key]) if key in runs else f"median of {AWAKE_CALLS} calls"
        return f"| {label} | {median[key] * 1000:.0f} ms | {ratio} | {listed} |"

    verdict = "met" if median["paused"] <= TARGET_S else "MISSED"
    section = f"""{SECTION} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `bench/wake.py --wakes {args.wakes}`)

samples/adder (base image `{base_image}`) with `idle_timeout: {IDLE_TIMEOUT}s` on a daemon with
`RACETRACK_SLEEP_PAUSED_FOR={PAUSED_FOR}`: an idle job is paused, and stopped {PAUSED_FOR} s later
(docs/jobs.md#scale-to-zero). Each row is the first call through the gateway once the job sleeps
that way, from the request until its answer (42); by hand: a container of the same image run with
`docker run`, paused, then `unpause` and calls straight to its published port every 5 ms until
one answers. {args.wakes} wakes of each, alternating.

| first call | median | vs docker's own unpause | runs (s) |
|---|---:|---:|---|
{row("by_hand", "docker unpause + call, by hand (baseline)")}
{row("paused", "racetrackd, job paused (the first stage of sleep)")}
{row("stopped", "racetrackd, job stopped (after RACETRACK_SLEEP_PAUSED_FOR)")}
{row("awake", "racetrackd, job awake (reference)")}

Target: wake from zero ≤ {TARGET_S:g} s: {median["paused"]:.2f} s from paused — **{verdict}**
(a stopped job still starts from scratch: {median["stopped"]:.2f} s).
"""
    write_section(SECTION, section)


if __name__ == "__main__":
    main()
