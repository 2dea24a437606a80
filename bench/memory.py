"""Benchmark: the control plane's own memory (PSS), idle with N jobs and after many calls.

    .venv/bin/python bench/memory.py [--jobs 10] [--calls 10000] [--baseline-ref main] [--settle 5]

For each variant, one after the other: a daemon of its own (2 HTTP workers, the default; free loopback
port, temporary data dir, instance `bench-memory-*`), N copies of samples/adder deployed under
different names, then
  1. idle: PSS of the main process, gunicorn master and workers (/proc/<pid>/smaps_rollup, summed
     over the daemon's process tree), `--settle` seconds after the last deploy and a first call to each job;
  2. after `--calls` calls through the gateway (/pub, 4 client threads with keep-alive, spread evenly
     over the N jobs, admin token), again after `--settle` seconds;
  3. after `--control-calls` control-plane reads (job list, each job's build log, deployments, audit
     trail) from 16 client threads, so each HTTP worker runs several of its control-plane threads.
At the idle reading, when this runs as root, the census of the tree's anonymous pages: for each
address mapped by every process, in how many distinct physical copies it exists (/proc/<pid>/pagemap);
a page that every process wrote exists once per process, however it was shared at the fork.
Variants: `--baseline-ref` (default `main`: the tree of that git ref, `git archive`d to a temporary
directory and run with this virtualenv, so the daemon's code is all that differs) and this checkout.
Results go to stdout and replace the "## Control plane memory" section of docs/benchmarks.md.
Everything started (daemons, job containers and images) is stopped or removed at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import requests
from _report import base_image as find_base_image
from _report import export_ref, remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: launcher and /proc reader
from racetrackd import footprint  # a /proc reader: it measures any variant's processes
from tests import launcher

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "adder"
MARKER = "## Control plane memory"
IDLE_TARGET_MIB = 100
CALLS_TARGET_MIB = 150
CLIENT_THREADS = 4
CONTROL_THREADS = 16  # as many as RACETRACK_HTTP_THREADS' default: each worker's pool grows
PAGE = 4096


def submit(env: dict[str, str], job_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "submit", "-q", "--force", str(job_dir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"rtd submit failed:\n{result.stdout}\n{result.stderr}")


def snapshot(pid: int) -> dict[str, Any]:
    found = footprint.measure(pid)
    return {
        "pss_mib": found.pss_bytes / 2**20,
        "processes": [
            {"role": p.role, "pid": p.pid, "pss_mib": p.pss_bytes / 2**20, "rss_mib": p.rss_bytes / 2**20}
            for p in found.processes
        ],
    }


def call_all(base_url: str, names: list[str], token: str, calls: int) -> float:
    """`calls` calls spread over the jobs from CLIENT_THREADS threads; returns the seconds taken."""
    failures: list[str] = []

    def client(share: int, offset: int) -> None:
        with requests.Session() as session:
            session.headers["X-Racetrack-Auth"] = token
            for i in range(share):
                name = names[(offset + i) % len(names)]
                response = session.post(
                    f"{base_url}/pub/job/{name}/0.0.1/api/v1/perform", json={"a": 40, "b": 2}, timeout=30
                )
                if response.status_code != 200 or response.json() != 42:
                    failures.append(f"{name}: {response.status_code} {response.text[:200]}")

    started = time.monotonic()
    threads = [
        threading.Thread(target=client, args=(calls // CLIENT_THREADS + (i < calls % CLIENT_THREADS), i))
        for i in range(CLIENT_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} calls failed, e.g. {failures[0]}")
    return time.monotonic() - started


FINDINGS = [
    "How the daemon shares its pages: `racetrackd serve` loads the modules, closes its registry connection",
    "and freezes the collector's objects (`gc.freeze`), then forks gunicorn's master (`racetrackd-http` in",
    "ps); the master builds the app once (`--preload`) and forks the workers, closing the registry",
    "connection and freezing again before each fork (racetrackd/daemon.py, racetrackd/gunicorn_hooks.py).",
    "",
    "Where the growth from just started to idle comes from (one daemon, 10 jobs, idle; /proc/<pid>/smaps",
    "and pagemap read by hand the same day): an HTTP worker at idle has ~21 MiB of private pages, of which",
    "18 MiB are copies of pages it inherited at the fork and 1.4 MiB new memory (threads' stacks and",
    "arenas, SQLite connections, its own objects). Of ~4,400 copied pages, 2,800 differ from the master's",
    "original in 1 to 4 machine words: reference counts, which CPython 3.11 writes on every object a",
    "process touches (it also rewrites a code object's bytecode as it specializes it). The first",
    "control-plane request in a fresh worker copies 4.5 to 10.9 MiB that way (0.5 MiB of new objects; a",
    "second request adds 0.1 MiB), so the idle figure depends on how many workers served the deploys'",
    "requests (a worker that served none: ~25 MiB, one that did: ~31 MiB). A page every process writes",
    "exists once per process, and the idle master keeps the original: the census above counts those",
    'addresses ("4 copies").',
    "",
    "Measured and dropped (one daemon each, a small probe thread in each process, idle with 10 jobs",
    "unless said): importing Flask, the ASGI app",
    "and gunicorn's worker class in the daemon before the fork rather than in the master: 121.1 against",
    "120.4 MiB (the pages are one copy wherever they are loaded); no `--preload` (each worker builds the",
    "app): 128.7 against 120.4 MiB; `MALLOC_ARENA_MAX=2`, with 2 jobs: 128.2 against 128.4 MiB after 3000",
    "control-plane reads (and 113.8 against 113.5 MiB just started, earlier); `gc.disable()` from the",
    "start of `serve` to the fork (the recipe of Python's gc docs), with 2 jobs: 96.0 and 95.3 against",
    "96.2 and 95.4 MiB just started; importing after the fork what only the main process runs (deployer,",
    "deployment worker, supervisor, waker): 0.2 MiB of objects, as the HTTP side imports the rest (Flask",
    "imports Jinja, the dashboard the builders, the services the Docker SDK); warming the control plane",
    "in the master before the fork (earlier): 97.4 against 98.5 MiB.",
    "The largest saving left is a process fewer: gunicorn's arbiter run by the daemon's main process, the",
    "daemon's loops in threads, so no idle process holds originals that every other one copied (the",
    '"4 copies" figure). A prototype of that measured 78.8 MiB just started and 105.6 against 120.4 MiB',
    "idle with 10 jobs (still above 100). It was not kept: a worker respawned by the arbiter would be",
    "forked while the daemon's threads run builds and queries, and could inherit a lock one of them holds",
    "(SQLite's allocator mutex, peewee's connection lock) and hang; doing it safely needs those threads",
    "stopped at a safe point around each fork.",
    "`racetrackd status` and `rtd version` show these figures for a running daemon.",
]


def control_plane_reads(base_url: str, names: list[str], token: str, requests_total: int) -> None:
    """What a dashboard, `rtd list` and `rtd logs` do over a day, from CONTROL_THREADS clients at once."""
    paths = ["/lifecycle/api/v1/job", "/lifecycle/api/v1/deploy", "/lifecycle/api/v1/audit/activity"]
    paths += [f"/lifecycle/api/v1/job/{name}/0.0.1/build-logs/plain" for name in names]
    failures: list[str] = []

    def client(offset: int) -> None:
        with requests.Session() as session:
            session.headers["X-Racetrack-Auth"] = token
            for i in range(offset, requests_total, CONTROL_THREADS):
                response = session.get(base_url + paths[i % len(paths)], timeout=60)
                if response.status_code != 200:
                    failures.append(f"{paths[i % len(paths)]}: {response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONTROL_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} control-plane reads failed, e.g. {failures[0]}")


REGISTRY_CACHE_PROBE = """
import sys, tempfile, threading
from pathlib import Path
from racetrackd import db
if sys.argv[1] == "sqlite-default":
    del db.PRAGMAS["cache_size"]
registry = db.open_database(Path(tempfile.mkdtemp(prefix="racetrackd-bench-memory-db-")) / "registry.db")
registry.execute_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT)")
with registry.atomic():
    for _ in range(2000):  # 20 MB: build logs, audit events and tasks of a registry in use
        registry.execute_sql("INSERT INTO filler (body) VALUES (?)", ("x" * 10000,))
def private_dirty_kib():
    with open("/proc/self/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Private_Dirty"))
before = private_dirty_kib()
scanned = threading.Barrier(int(sys.argv[2]) + 1)
def scan():
    registry.execute_sql("SELECT sum(length(body)) FROM filler").fetchone()
    scanned.wait()
    scanned.wait()
threads = [threading.Thread(target=scan) for _ in range(int(sys.argv[2]))]
for thread in threads:
    thread.start()
scanned.wait()
print((private_dirty_kib() - before) / 1024)
scanned.wait()
"""


def registry_connections(source: Path) -> dict[str, float]:
    """MiB a process grows by when CONTROL_THREADS threads (one registry connection each, as peewee
    gives them) have each read a 20 MB registry once: SQLite's default page cache against the daemon's."""
    grown = {}
    for variant in ("sqlite-default", "racetrackd"):
        result = subprocess.run(
            [sys.executable, "-c", REGISTRY_CACHE_PROBE, variant, str(CONTROL_THREADS)],
            env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        grown[variant] = float(result.stdout.strip())
    return grown


def _present_anonymous_pages(pid: int) -> dict[int, int]:
    """Address -> physical frame of each resident anonymous page (heap, anonymous mappings, stacks)."""
    found: dict[int, int] = {}
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if len(fields) > 5 and not fields[5].startswith("["):
                continue  # a file mapping: the page cache's pages, shared with every reader of the file
            start, end = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries)):
                if entry >> 63:  # present
                    found[start + i * PAGE] = entry & ((1 << 55) - 1)
    return found


def page_copies(processes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For the addresses every process maps: MiB of addresses by how many physical copies exist, and
    the MiB that only the gunicorn master still holds while every other process has its own copy.
    None without the right to read frame numbers (root)."""
    try:
        pages = {p["pid"]: _present_anonymous_pages(p["pid"]) for p in processes}
    except OSError:
        return None
    if not pages or not any(frame for found in pages.values() for frame in found.values()):
        return None  # frame numbers read as 0: not root
    masters = [p["pid"] for p in processes if p["role"] == "http master"]
    common = set.intersection(*(set(found) for found in pages.values()))
    by_copies: collections.Counter[int] = collections.Counter()
    master_alone = 0
    for address in common:
        frames = [found[address] for found in pages.values()]
        copies = len(set(frames))
        by_copies[copies] += 1
        if masters and copies == len(frames):
            master_alone += 1
    mib = PAGE / 2**20
    return {
        "addresses_mib": {str(k): round(v * mib, 1) for k, v in sorted(by_copies.items())},
        "physical_mib": round(sum(k * v for k, v in by_copies.items()) * mib, 1),
        "master_holds_alone_mib": round(master_alone * mib, 1),
    }


def run_variant(label: str, source: Path, args: argparse.Namespace, base_image: str) -> dict[str, Any]:
    client = docker.from_env()
    instance = f"bench-memory-{uuid.uuid4().hex[:6]}"
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-memory-"))
    port, token = launcher.free_port(), uuid.uuid4().hex
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=instance, base_image=base_image)
    env["PYTHONPATH"] = str(source)  # this variant's racetrackd before the installed one
    rtd_env = {
        **env,
        "PYTHONPATH": str(REPO),
        "RTD_REMOTE": f"http://127.0.0.1:{port}",
        "RTD_TOKEN": token,
        "RTD_CONFIG": str(data_dir / "rtd.yaml"),
    }
    log_path = data_dir / "daemon.log"
    daemon = launcher.start(env, log_path, cwd=source, new_session=False)
    result: dict[str, Any] = {"label": label}
    try:
        base_url = f"http://127.0.0.1:{port}"
        launcher.wait_ready(base_url, daemon, log_path, step=0.1)
        result["started"] = snapshot(daemon.pid)
        names = [f"adder{i:02d}" for i in range(args.jobs)]
        for name in names:
            job_dir = data_dir / name
            shutil.copytree(SAMPLE, job_dir)
            manifest = job_dir / "job.yaml"
            manifest.write_text(manifest.read_text().replace("name: adder", f"name: {name}", 1))
            print(f"[{label}] deploying {name} ...", flush=True)
            submit(rtd_env, job_dir)
        call_all(base_url, names, token, len(names))  # every job's route and connection exists once
        time.sleep(args.settle)
        result["idle"] = snapshot(daemon.pid)
        result["idle"]["copies"] = page_copies(result["idle"]["processes"])
        print(f"[{label}] idle with {args.jobs} jobs: {result['idle']['pss_mib']:.1f} MiB PSS", flush=True)
        seconds = call_all(base_url, names, token, args.calls)
        result["calls_per_s"] = args.calls / seconds
        time.sleep(args.settle)
        result["after_calls"] = snapshot(daemon.pid)
        print(
            f"[{label}] after {args.calls} calls ({result['calls_per_s']:.0f}/s): "
            f"{result['after_calls']['pss_mib']:.1f} MiB PSS",
            flush=True,
        )
        control_plane_reads(base_url, names, token, args.control_calls)
        time.sleep(args.settle)
        result["after_control"] = snapshot(daemon.pid)
        print(
            f"[{label}] after {args.control_calls} control-plane reads: "
            f"{result['after_control']['pss_mib']:.1f} MiB PSS",
            flush=True,
        )
    finally:
        launcher.stop(daemon)
        remove_labelled(client, instance)
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


STAGES = (
    ("started", "just started"),
    ("idle", "idle"),
    ("after_calls", "after the calls"),
    ("after_control", "after the control-plane reads"),
)


def by_role(snap: dict[str, Any]) -> str:
    parts = [f"{p['role']} {p['pss_mib']:.1f}" for p in snap["processes"]]
    return ", ".join(parts)


def role_cells(snap: dict[str, Any]) -> list[str]:
    """Daemon, http master, http workers (joined with +), in MiB PSS."""
    cells = []
    for role in ("daemon", "http master", "http worker"):
        found = [f"{p['pss_mib']:.1f}" for p in snap["processes"] if p["role"] == role]
        cells.append(" + ".join(found) or "–")
    return cells


def census(copies: dict[str, Any] | None) -> str:
    if copies is None:
        return "not read (needs root)"
    spread = ", ".join(
        f"{n} {'copy' if n == '1' else 'copies'} {mib} MiB" for n, mib in copies["addresses_mib"].items()
    )
    return f"{spread}; the master alone holds {copies['master_holds_alone_mib']} MiB"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    command = "`.venv/bin/python bench/memory.py" + (f" --jobs {args.jobs}" if args.jobs != 10 else "")
    command += f" --calls {args.calls}" if args.calls != 10000 else ""
    command += (f" --control-calls {args.control_calls}" if args.control_calls != 2000 else "") + "`"
    lines = [
        f"{MARKER} ({time.strftime('%Y-%m-%d')}, 2 cores, {command})",
        "",
        "PSS (proportional set size: a page shared by n processes counts 1/n in each, so the figures add up)",
        "of the daemon's process tree (main process, gunicorn master, 2 HTTP workers: the defaults), summed",
        "from `/proc/<pid>/smaps_rollup`. Each variant is a daemon of its own in the same run:",
        f"{args.jobs} copies of samples/adder deployed, one call to each, {args.settle:g} s of rest (idle); then",
        f"{args.calls} calls through /pub from {CLIENT_THREADS} keep-alive clients spread over the jobs, "
        f"{args.settle:g} s of rest;",
        f"then {args.control_calls} control-plane reads (job list, deployments, audit trail, each job's build log)",
        f"from {CONTROL_THREADS} clients at once, {args.settle:g} s of rest.",
        "The baseline is the tree of `" + args.baseline_ref + "` run with the same virtualenv.",
        "",
        f"| variant | just started | idle, {args.jobs} jobs | after {args.calls} calls | "
        f"after {args.control_calls} control-plane reads |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result['label']} | " + " | ".join(f"{result[key]['pss_mib']:.1f} MiB" for key, _ in STAGES) + " |"
        )
    lines += [
        "",
        "Per process (MiB PSS):",
        "",
        "| variant | stage | daemon | http master | http workers |",
        "|---|---|---:|---:|---:|",
    ]
    for result in results:
        for key, stage in STAGES:
            lines.append(f"| {result['label']} | {stage} | " + " | ".join(role_cells(result[key])) + " |")
    lines += ["", "Anonymous pages at idle, by the number of physical copies of each address all 4 processes map:"]
    lines += [f"{result['label']}: {census(result['idle'].get('copies'))}." for result in results]
    ours = results[-1]
    lines.append("")
    if len(results) > 1:
        base = results[0]
        ratios = ", ".join(
            f"{stage} **{ours[key]['pss_mib'] / base[key]['pss_mib']:.2f}×**" for key, stage in STAGES[1:]
        )
        lines += [f"This checkout against the baseline: {ratios}.", ""]
    idle_met = "met" if ours["idle"]["pss_mib"] <= IDLE_TARGET_MIB else "**not met**"
    calls_met = "met" if ours["after_calls"]["pss_mib"] <= CALLS_TARGET_MIB else "**not met**"
    lines.append(
        f"Targets: ≤ {IDLE_TARGET_MIB} MB idle with {args.jobs} jobs: {ours['idle']['pss_mib']:.1f} MiB, {idle_met}; "
        f"≤ {CALLS_TARGET_MIB} MB after {args.calls} calls: {ours['after_calls']['pss_mib']:.1f} MiB, {calls_met}."
    )
    cache = registry_connections(REPO)
    lines += [
        "",
        f"One registry connection per thread ({CONTROL_THREADS} threads, each reading a 20 MB registry once, in one "
        f"process): SQLite's default page cache {cache['sqlite-default']:.1f} MiB, the daemon's "
        f"(`PAGE_CACHE_KIB` in racetrackd/db.py) {cache['racetrackd']:.1f} MiB "
        f"(**{cache['racetrackd'] / cache['sqlite-default']:.2f}×**). The registry of the run above is small (a few",
        "build logs of a few KiB), so the bound does not show in its figures; it shows once threads have read",
        "long build logs or a long audit trail.",
        "",
        *FINDINGS,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--control-calls", type=int, default=2000, help="control-plane reads (stage 3)")
    parser.add_argument("--settle", type=float, default=5, help="seconds of rest before each reading")
    parser.add_argument("--baseline-ref", default="main", help="git ref of the baseline, or `none` to skip it")
    parser.add_argument("--no-report", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    base_image = find_base_image(docker.from_env())
    scratch = Path(tempfile.mkdtemp(prefix="racetrackd-bench-memory-src-"))
    results = []
    try:
        if args.baseline_ref != "none":
            source = export_ref(args.baseline_ref, scratch / "baseline")
            results.append(run_variant(f"baseline (`{args.baseline_ref}`)", source, args, base_image))
        results.append(run_variant("this checkout", REPO, args, base_image))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(results, indent=1))
    section = report(results, args)
    print(section)
    if not args.no_report:
        write_section(MARKER, section)


if __name__ == "__main__":
    main()
