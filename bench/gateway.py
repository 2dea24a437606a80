"""Benchmark: the gateway (/pub) against calling the job directly and against nginx, under wrk.

    .venv/bin/python bench/gateway.py [--duration 10] [--warmup 2] [--rounds 2] [--profile-seconds 8]
                                      [--quiet-wait 8] [--quiet-budget 30]

Starts its own daemon with the daemon's defaults (instance `bench-gateway-*`, free loopback port,
temporary data dir; job addressing `auto`, i.e. `container-ip` on a Linux host), deploys
samples/adder, and measures with `wrk` (a Lua script POSTs {"a": 40, "b": 2} with the
X-Racetrack-Auth header of an ESC granted call_job on adder: the checked path an outside caller
takes, not the admin's) at 16 connections (-t2 -c16) and at 1 connection (-t1 -c1), each run
after a warm-up of the same shape, in --rounds rounds (the best undisturbed run of each counts):
  1. direct to the job's port published on 127.0.0.1 (the baseline; docker-proxy is in the way),
  2. direct to the container's IP on the racetrack network, port 7000 (a second reference),
  3. nginx as a reverse proxy to the published port (upstream keepalive 32, HTTP/1.1,
     `worker_processes auto`, access_log off), and the same nginx to the container IP,
  4. the gateway, /pub/job/adder/0.0.1/api/v1/perform.
During each run it also reads the CPU time of every party from /proc (job container, daemon
workers, docker-proxy, nginx, wrk, kernel threads, and every other process: the machine may be
shared, so it waits for other processes to go quiet before a run and marks a run they disturbed).
Finally a further 16-connection run to /pub is profiled: `py-spy record --nonblocking` on each
gunicorn worker of the daemon, summarised by self time. Results go to stdout and replace the "## Gateway: direct vs nginx vs /pub" section of
docs/benchmarks.md. Needs `wrk` and `nginx` (apt-get install wrk nginx-light); nginx runs as a
child process with its own config in a temporary directory on a free loopback port. Everything
the run starts (daemon, nginx, job container and image) is stopped or removed at the end, also
on failure; all traffic is to 127.0.0.1 and the job's container.
"""

from __future__ import annotations

import argparse
import collections
import json
import linecache
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import docker
import requests
from _report import base_image as find_base_image
from _report import export_ref, remove_labelled, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the shared launcher
from tests import launcher  # after the path it is found on

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "adder"
PY_SPY = Path(sys.executable).parent / "py-spy"
MARKER = "## Gateway: direct vs nginx vs /pub"
NETWORK = "racetrack"  # RACETRACK_NETWORK's default; the daemon runs with its defaults
JOB_PATH = "/api/v1/perform"
PUB_PATH = "/pub/job/adder/0.0.1/api/v1/perform"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Issue 21's targets: /pub keeps at least this share of direct req/s at 16 connections, adds at most
# this to p50 at 1 connection, and its workers spend at most half the CPU per call measured before
# (178 µs at 16 connections, docs/benchmarks.md of 2026-11-30).
THROUGHPUT_TARGET = 0.80
LATENCY_TARGET_MS = 0.3
WORKER_CPU_TARGET_US = 178 / 2
QUIET = 0.10  # other processes under this share of a core: the machine is ours
DISTURBED = 0.20  # other processes over this share of a core during a run: it was disturbed

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{{"a": 40, "b": 2}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Racetrack-Auth"] = "{token}"
"""

NGINX_CONF = """worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream job_published {{ server 127.0.0.1:{published}; keepalive 32; }}
    upstream job_ip {{ server {ip}:7000; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port_published};
        location / {{ proxy_pass http://job_published; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{port_ip};
        location / {{ proxy_pass http://job_ip; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""

# (key, label in the report)
PATHS = (
    ("direct", "direct, published port 127.0.0.1 (baseline)"),
    ("direct_ip", "direct, container IP :7000"),
    ("nginx", "nginx → published port"),
    ("nginx_ip", "nginx → container IP"),
    ("pub", "gateway /pub (→ container IP)"),
)
CONNECTIONS = ((16, 2), (1, 1))  # (connections, wrk threads)


# ---- helpers -------------------------------------------------------------------------------------
def wait_until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what}: not ready after {timeout:.0f} s")


def esc_caller(daemon_url: str, admin_headers: dict[str, str]) -> str:
    """A token of a new ESC granted call_job on adder (what an outside program calling a job holds)."""
    api = f"{daemon_url}/lifecycle/api/v1"
    esc = requests.post(f"{api}/escs", json={"name": "bench"}, headers=admin_headers, timeout=10).json()
    requests.post(
        f"{api}/auth/grants",
        json={"subject": f"esc:{esc['id']}", "scope": "call_job", "job_name": "adder"},
        headers=admin_headers,
        timeout=10,
    ).raise_for_status()
    made = requests.post(f"{api}/escs/{esc['id']}/auth_token", json={}, headers=admin_headers, timeout=10)
    made.raise_for_status()
    return str(made.json()["token"])


def answers_42(url: str, token: str) -> bool:
    response = requests.post(url, json={"a": 40, "b": 2}, headers={"X-Racetrack-Auth": token}, timeout=5)
    return response.status_code == 200 and response.json() == 42


def submit(env: dict[str, str], job_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "submit", "--force", str(job_dir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"rtd submit failed:\n{result.stdout}\n{result.stderr}")


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise SystemExit("nginx is required: apt-get install -y nginx-light (the system service need not run)")
    return found


def require_tools() -> str:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install -y wrk")
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy is required at {PY_SPY}: .venv/bin/pip install py-spy")
    return find_nginx()


# ---- /proc: processes and CPU time ---------------------------------------------------------------
def parent_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def children(pid: int) -> list[int]:
    return sorted(child for child, parent in parent_map().items() if parent == pid)


def descendants(pid: int) -> list[int]:
    parents = parent_map()
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def is_http_master(pid: int) -> bool:
    """gunicorn's master: forked from the daemon (named racetrackd-http), or run as `python -m gunicorn` by older ones."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return name == "racetrackd-http" or b"gunicorn" in cmdline(pid)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLK_TCK


class Proc(NamedTuple):
    started: int  # clock ticks after boot: tells a reused pid apart
    cpu: float  # seconds of user + system time so far
    kernel: bool  # a kernel thread (child of kthreadd)
    name: str


def all_processes_cpu() -> dict[int, Proc]:
    """Every process on the machine, by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                name, _, rest = Path(f"/proc/{entry}/stat").read_text().partition(" (")[2].rpartition(")")
            except OSError:
                continue
            fields = rest.split()
            found[int(entry)] = Proc(
                int(fields[19]),
                (int(fields[11]) + int(fields[12])) / CLK_TCK,
                int(fields[1]) == 2 or entry == "2",
                name,
            )
    return found


def others_cpu(
    before: dict[int, Proc], after: dict[int, Proc], ours: set[int]
) -> tuple[float, float, dict[str, float]]:
    """CPU seconds between two snapshots of the processes not in `ours`: user-space ones, kernel
    threads, and the user-space ones by name."""
    user = kernel = 0.0
    by_name: dict[str, float] = collections.defaultdict(float)
    for pid, proc in after.items():
        if pid in ours:
            continue
        previous = before.get(pid)
        used = proc.cpu - previous.cpu if previous and previous.started == proc.started else proc.cpu
        if proc.kernel:
            kernel += used
        else:
            user += used
            by_name[proc.name] += used
    return user, kernel, dict(sorted(by_name.items(), key=lambda item: -item[1])[:3])


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    )
    return user + nice + system + irq + softirq, user + nice + system + idle + iowait + irq + softirq + steal


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the process's main thread so far."""
    on_cpu, waiting, _slices = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def docker_proxy_pids(host_port: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"docker-proxy") and host_port.encode() in argv:
            pids.append(int(entry))
    return pids


def wait_quiet(ours: set[int], limit: float, look: float = 0.5) -> float:
    """Wait (at most `limit` s, in looks of `look` s) until processes outside this benchmark use
    under QUIET of a core; returns what they used in the last look."""
    deadline = time.monotonic() + limit
    while True:
        before = all_processes_cpu()
        time.sleep(look)
        user, _kernel, _names = others_cpu(before, all_processes_cpu(), ours | {os.getpid()})
        if user / look < QUIET or time.monotonic() >= deadline:
            return user / look


class CpuProbe:
    """CPU used by named groups of processes, by children waited for meanwhile (wrk, py-spy), by
    kernel threads and by every other process, over one run."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def __enter__(self) -> CpuProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> CpuProbe:
        self._start = time.monotonic()
        self._all = all_processes_cpu()
        self._cpu = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        self._machine = machine_busy()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = usage.ru_utime + usage.ru_stime
        return self

    def stop(self) -> None:
        elapsed = time.monotonic() - self._start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.result = {name: (cpu_seconds(pids) - self._cpu[name]) / elapsed for name, pids in self.groups.items()}
        self.result["children"] = (usage.ru_utime + usage.ru_stime - self._children) / elapsed
        ours = {os.getpid(), *(pid for pids in self.groups.values() for pid in pids)}
        user, kernel, names = others_cpu(self._all, all_processes_cpu(), ours)
        self.result["others"] = user / elapsed
        self.result["kernel threads"] = kernel / elapsed
        self.top_others = {name: used / elapsed for name, used in names.items()}
        busy, total = machine_busy()
        self.result["machine"] = (busy - self._machine[0]) / max(1, total - self._machine[1]) * (os.cpu_count() or 1)


# ---- wrk -----------------------------------------------------------------------------------------
def parse_wrk(out: str, url: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise SystemExit(f"no Requests/sec in wrk's output for {url}:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}

    def percentile(p: str) -> float:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        return float(found.group(1)) * scale[found.group(2)] if found else float("nan")

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests_done = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "requests": float(requests_done.group(1)) if requests_done else 0.0,
        "errors": (float(bad.group(1)) if bad else 0.0) + (sum(float(g) for g in errors.groups()) if errors else 0.0),
    }


def wrk_command(url: str, connections: int, threads: int, seconds: float, script: Path) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]


def wrk(url: str, connections: int, threads: int, seconds: float, script: Path) -> dict[str, float]:
    result = subprocess.run(
        wrk_command(url, connections, threads, seconds, script),
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    if result.returncode != 0:
        raise SystemExit(f"wrk failed against {url}:\n{result.stdout}\n{result.stderr}")
    return parse_wrk(result.stdout, url)


# ---- nginx ---------------------------------------------------------------------------------------
def start_nginx(nginx: str, conf_dir: Path, published: str, ip: str) -> tuple[subprocess.Popen[bytes], int, int]:
    conf_dir.mkdir(mode=0o755)
    conf_dir.chmod(0o755)  # workers may run as an unprivileged user
    port_published, port_ip = launcher.free_port(), launcher.free_port()
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(dir=conf_dir, published=published, ip=ip, port_published=port_published, port_ip=port_ip)
    )
    base = [nginx, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, check=False, timeout=30)
    if check.returncode != 0:
        raise SystemExit(f"nginx rejected its config:\n{check.stderr}")
    process = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=(conf_dir / "stderr.log").open("wb"))

    def listening() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"nginx exited:\n{(conf_dir / 'error.log').read_text(errors='replace')}")
        with socket.create_connection(("127.0.0.1", port_ip), timeout=1):
            pass
        with socket.create_connection(("127.0.0.1", port_published), timeout=1):
            return True

    wait_until(listening, "nginx", timeout=20)
    return process, port_published, port_ip


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 20) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# ---- profile -------------------------------------------------------------------------------------
def classify(frames: list[str]) -> str:
    """The group of one sample by its self-time (leaf) frame; stdlib leaves go to their caller's group."""
    leaf_function, leaf_file, leaf_line = parse_frame(frames[-1])
    if leaf_file.endswith("gunicorn/workers/gasgi.py") and leaf_function.endswith(".run"):
        return "loop"  # inside uvloop's run_until_complete (C): idle in epoll, socket reads, dispatch
    source = linecache.getline(leaf_file, leaf_line) if leaf_line else ""
    if re.search(r"\.(write|writelines|send|sendall|sendmsg|recv|recv_into)\(", source):
        return "socket"
    for frame in reversed(frames):
        _function, file, _line = parse_frame(frame)
        if "/prometheus_client/" in file:
            return "prometheus"
        if "/gunicorn/" in file:
            return "gunicorn"
        if "/racetrackd/" in file or "/jobmanifest/" in file or "/httptools/" in file:
            return "ours"
        if "/a2wsgi/" in file or "/flask/" in file or "/werkzeug/" in file:
            return "other"
    return "other"


def parse_frame(frame: str) -> tuple[str, str, int]:
    found = re.match(r"^(.*) \((.*?)(?::(\d+))?\)$", frame)
    if found is None:
        return frame, "", 0
    return found.group(1), found.group(2), int(found.group(3) or 0)


def short_frame(frame: str) -> str:
    function, file, line = parse_frame(frame)
    for marker in ("/site-packages/", str(REPO) + "/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{function} ({file}:{line})"


def profile_pub(
    pub_url: str, script: Path, worker_pids: list[int], job_pids: list[int], seconds: int, out_dir: Path
) -> dict[str, Any]:
    """Profile the daemon's HTTP workers while wrk sends 16 connections to /pub."""
    load = subprocess.Popen(
        wrk_command(pub_url, 16, 2, seconds + 4, script), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    spies: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(2)
        cpu_before = {pid: cpu_seconds([pid]) for pid in worker_pids}
        sched_before = {pid: schedstat(pid) for pid in worker_pids}
        probe = CpuProbe({"racetrackd workers": worker_pids, "job": job_pids, "load": [load.pid]}).start()
        started = time.monotonic()
        for pid in worker_pids:
            spies.append(
                subprocess.Popen(
                    [
                        str(PY_SPY),
                        "record",
                        "--nonblocking",
                        "-f",
                        "raw",
                        "-d",
                        str(seconds),
                        "-p",
                        str(pid),
                        "--idle",
                        "--threads",
                        "--full-filenames",
                        "-o",
                        str(out_dir / f"py-spy-{pid}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(out_dir / f"py-spy-{pid}.log").open("wb"),
                )
            )
        for spy in spies:
            spy.wait(timeout=seconds + 30)
        elapsed = time.monotonic() - started
        probe.stop()
        cpu_share = {pid: (cpu_seconds([pid]) - cpu_before[pid]) / elapsed for pid in worker_pids}
        sched = {
            pid: [(now - then) / elapsed for now, then in zip(schedstat(pid), sched_before[pid], strict=True)]
            for pid in worker_pids
        }
        stdout, stderr = load.communicate(timeout=seconds + 60)
        if load.returncode != 0:
            raise SystemExit(f"wrk failed during the profile:\n{stdout}\n{stderr}")
    finally:
        for spy in spies:
            stop_process(spy)
        stop_process(load)
    for pid in worker_pids:
        if not (out_dir / f"py-spy-{pid}.txt").exists():
            log = (out_dir / f"py-spy-{pid}.log").read_text(errors="replace")
            raise SystemExit(f"py-spy wrote no profile for worker {pid}:\n{log}")

    groups: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for pid in worker_pids:
        for line in (out_dir / f"py-spy-{pid}.txt").read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            frames = stack.split(";")
            if len(frames) < 2 or "MainThread" not in frames[0]:
                continue  # the event loop runs on the main thread; others (route reloads, a2wsgi) idle here
            count = int(count_text)
            total += count
            groups[classify(frames[1:])] += count
            leaves[short_frame(frames[-1])] += count
    if total == 0:
        raise SystemExit("py-spy recorded no samples of the workers' main threads")
    # py-spy --idle samples wall time, whether the thread runs, waits for a CPU or sleeps; the main
    # threads' schedstat says how much of that wall time they slept (in epoll: the loop was idle).
    on_cpu = sum(on for on, _wait in sched.values()) / len(worker_pids)
    runnable = sum(wait for _on, wait in sched.values()) / len(worker_pids)
    idle = max(0.0, 1.0 - on_cpu - runnable)
    loop = groups.pop("loop", 0) / total
    shares = {name: count / total for name, count in groups.items()}
    shares["loop_busy"] = max(0.0, loop - idle)
    shares["idle"] = min(idle, loop)
    return {
        "wrk": parse_wrk(stdout, pub_url),
        "samples": total,
        "workers": len(worker_pids),
        "disturbed": probe.result["others"] >= DISTURBED,
        "cpu_per_worker": [cpu_share[pid] for pid in worker_pids],
        "cpu": probe.result,
        "main_on_cpu": on_cpu,
        "main_runnable": runnable,
        "main_asleep": idle,
        "loop_wall_share": loop,
        "shares": shares,
        "top": [(frame, count / total) for frame, count in leaves.most_common(12)],
    }


# ---- the daemons ---------------------------------------------------------------------------------
class Daemon(NamedTuple):
    label: str
    instance: str
    process: subprocess.Popen[bytes]
    port: int
    master: int
    workers: list[int]
    http_pids: dict[int, bytes]  # gunicorn's master and workers, with their command lines
    caller_token: str
    internal_name: str
    container: Any
    job_pids: list[int]


def start_daemon(client: docker.DockerClient, base_image: str, source: Path, data_dir: Path, label: str) -> Daemon:
    """A private daemon run from `source` (this checkout, or an exported ref) with its defaults, with
    samples/adder deployed and an ESC granted call_job on it."""
    data_dir.mkdir(parents=True)
    instance = f"bench-gateway-{uuid.uuid4().hex[:6]}"
    job_dir = data_dir / "adder"
    shutil.copytree(SAMPLE, job_dir)
    port, token = launcher.free_port(), uuid.uuid4().hex
    env = launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=instance, base_image=base_image)
    env.update({"RTD_REMOTE": f"http://127.0.0.1:{port}", "RTD_TOKEN": token, "RTD_CONFIG": str(data_dir / "rtd.yaml")})
    log_path = data_dir / "daemon.log"
    process = launcher.start(env, log_path, cwd=source, new_session=False)  # Ctrl-C reaches it too
    http_pids: dict[int, bytes] = {}
    try:
        launcher.wait_ready(f"http://127.0.0.1:{port}", process, log_path, step=0.1)
        masters = [pid for pid in children(process.pid) if is_http_master(pid)]
        if len(masters) != 1:
            raise SystemExit(f"expected one gunicorn master under the daemon (pid {process.pid}), found {masters}")
        deadline = time.monotonic() + 10
        while len(workers := children(masters[0])) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the master forks its workers one after the other
        http_pids = {pid: cmdline(pid) for pid in [masters[0], *workers]}
        print(
            f"{label}: daemon {process.pid}, gunicorn master {masters[0]}, workers {workers}; deploying ...", flush=True
        )
        submit(env, job_dir)
        headers = {"X-Racetrack-Auth": token}
        job = requests.get(
            f"http://127.0.0.1:{port}/lifecycle/api/v1/job/adder/0.0.1", headers=headers, timeout=10
        ).json()
        caller_token = esc_caller(f"http://127.0.0.1:{port}", headers)
        container = next(
            c
            for c in client.containers.list(filters={"label": f"racetrackd.instance={instance}"})
            if c.labels.get("job-name") == "adder"
        )
        container.reload()
        job_pids = [container.attrs["State"]["Pid"], *descendants(container.attrs["State"]["Pid"])]
    except BaseException:
        stop_daemon(client, Daemon(label, instance, process, port, 0, [], http_pids, "", "", None, []))
        raise
    return Daemon(
        label,
        instance,
        process,
        port,
        masters[0],
        workers,
        http_pids,
        caller_token,
        job["internal_name"],
        container,
        job_pids,
    )


def stop_daemon(client: docker.DockerClient, daemon: Daemon) -> None:
    launcher.stop(daemon.process)
    for pid, command in daemon.http_pids.items():  # gunicorn would outlive a killed daemon: end ours, by pid
        if command and cmdline(pid) == command:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    remove_labelled(client, daemon.instance)


# ---- the run -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10, help="seconds of each measured wrk run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of wrk before each measured run")
    parser.add_argument(
        "--rounds", type=int, default=2, help="measured runs per path and connection count (best counts)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=8,
        help="at most this many seconds to wait before each run for other processes to go quiet",
    )
    parser.add_argument("--quiet-budget", type=float, default=30, help="at most this many seconds of such waits in all")
    parser.add_argument("--profile-seconds", type=int, default=8, help="seconds py-spy samples each worker")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the daemon of git REF (e.g. main; exported with git archive) with its own adder, "
        "and measure its /pub in the same rounds",
    )
    args = parser.parse_args()
    nginx = require_tools()

    client = docker.from_env()
    base_image = find_base_image(client)
    data_dir = Path(tempfile.mkdtemp(prefix="racetrackd-bench-gateway-"))
    script = data_dir / "post.lua"
    started = time.monotonic()
    nginx_process: subprocess.Popen[bytes] | None = None
    daemons: list[Daemon] = []
    results: dict[str, Any] = {"base_image": base_image, "baseline_ref": args.baseline}
    try:
        ours = start_daemon(client, base_image, REPO, data_dir / "ours", "this checkout")
        daemons.append(ours)
        results["instance"] = ours.instance
        baseline: Daemon | None = None
        if args.baseline:
            source = export_ref(args.baseline, data_dir / "baseline-source")
            baseline = start_daemon(client, base_image, source, data_dir / "baseline", args.baseline)
            daemons.append(baseline)
            results["baseline_commit"] = subprocess.run(
                ["git", "rev-parse", "--short", args.baseline], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout.strip()
        results["head_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        # The caller's token for every path but the baseline daemon's /pub (its own ESC: pub_base, below).
        caller_token = ours.caller_token
        script.write_text(WRK_SCRIPT.format(token=caller_token))
        container, workers, job_pids = ours.container, ours.workers, ours.job_pids
        published = container.ports["7000/tcp"][0]["HostPort"]
        ip = container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        proxy_pids = docker_proxy_pids(published)
        results.update(
            {
                "internal_name": ours.internal_name,
                "published": published,
                "ip": ip,
                "addressing": "container-ip" if ours.internal_name == f"{ip}:7000" else ours.internal_name,
                "docker_proxy": bool(proxy_pids),
                "limits": {
                    "cpus": (container.attrs["HostConfig"].get("NanoCpus") or 0) / 1e9,
                    "memory_mib": (container.attrs["HostConfig"].get("Memory") or 0) / 2**20,
                },
            }
        )

        nginx_process, nginx_published, nginx_ip = start_nginx(nginx, data_dir / "nginx", published, ip)
        nginx_pids = [nginx_process.pid, *children(nginx_process.pid)]
        urls = {
            "direct": f"http://127.0.0.1:{published}{JOB_PATH}",
            "direct_ip": f"http://{ip}:7000{JOB_PATH}",
            "nginx": f"http://127.0.0.1:{nginx_published}{JOB_PATH}",
            "nginx_ip": f"http://127.0.0.1:{nginx_ip}{JOB_PATH}",
            "pub": f"http://127.0.0.1:{ours.port}{PUB_PATH}",
        }
        tokens = dict.fromkeys(urls, caller_token)
        if baseline is not None:
            urls["pub_base"] = f"http://127.0.0.1:{baseline.port}{PUB_PATH}"
            tokens["pub_base"] = baseline.caller_token
            baseline_script = data_dir / "post-baseline.lua"
            baseline_script.write_text(WRK_SCRIPT.format(token=baseline.caller_token))
        for key, url in urls.items():
            wait_until(lambda url=url, key=key: answers_42(url, tokens[key]), f"{key} at {url}", timeout=30)
        results["urls"] = urls
        cpu_groups = {
            "job": job_pids,
            "docker-proxy": proxy_pids,
            "nginx": nginx_pids,
            "racetrackd workers": workers,
            "racetrackd daemon+master": [ours.process.pid, ours.master],
        }
        if baseline is not None:  # its job and its daemon: counted apart, shown in the baseline's row
            cpu_groups["baseline job"] = baseline.job_pids
            cpu_groups["baseline workers"] = baseline.workers
            cpu_groups["baseline daemon+master"] = [baseline.process.pid, baseline.master]
        paths = PATHS
        if baseline is not None:
            paths += (("pub_base", f"gateway /pub of `{args.baseline}` (its own adder, → container IP)"),)
        results["paths"] = paths
        ours = {pid for pids in cpu_groups.values() for pid in pids}
        results["others_at_start"] = wait_quiet(ours, 15)  # e.g. the image build winding down
        all_runs: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        quiet_budget = args.quiet_budget
        for round_number in range(args.rounds):
            order = paths if round_number % 2 == 0 else tuple(reversed(paths))  # even out drift
            for connections, threads in CONNECTIONS:
                for key, _label in order:
                    url = urls[key]
                    path_script = baseline_script if key == "pub_base" else script
                    waited = time.monotonic()
                    others_before = wait_quiet(ours, min(args.quiet_wait, quiet_budget))
                    quiet_budget = max(0.0, quiet_budget - (time.monotonic() - waited))
                    wrk(url, connections, threads, args.warmup, path_script)
                    with CpuProbe(cpu_groups) as probe:
                        run: dict[str, Any] = wrk(url, connections, threads, args.duration, path_script)
                    run.update(
                        cpu=probe.result,
                        round=round_number + 1,
                        others_before=others_before,
                        top_others=probe.top_others,
                        disturbed=probe.result["others"] >= DISTURBED,
                    )
                    all_runs[f"{key}@{connections}"].append(run)
                    print(
                        f"round {round_number + 1}  {key:10} c{connections:<3} {run['rps']:8.0f} req/s  "
                        f"p50 {run['p50_ms']:7.3f} ms  p99 {run['p99_ms']:7.3f} ms  errors {run['errors']:.0f}  "
                        f"other processes {probe.result['others'] * 100:.0f}% of a core ("
                        + ", ".join(f"{name} {share * 100:.0f}%" for name, share in probe.top_others.items())
                        + ")"
                        + ("  (disturbed)" if run["disturbed"] else ""),
                        flush=True,
                    )
        # Other load on the machine only slows a run down: each path's best undisturbed round counts
        # (the best disturbed one when every round was disturbed; the report marks it).
        results["runs"] = {
            name: max(rounds, key=lambda run: (not run["disturbed"], run["rps"])) for name, rounds in all_runs.items()
        }
        results["all_runs"] = all_runs

        wait_quiet(ours, min(args.quiet_wait, quiet_budget))
        print(f"profiling the daemon's workers {workers} under 16 connections to /pub ...", flush=True)
        results["profile"] = profile_pub(urls["pub"], script, workers, job_pids, args.profile_seconds, data_dir)
        results["elapsed_s"] = time.monotonic() - started
    finally:
        stop_process(nginx_process)
        for daemon in daemons:
            stop_daemon(client, daemon)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str))
    write_report(results, args)


# ---- report --------------------------------------------------------------------------------------
def ms(value: float) -> str:
    return f"{value:.2f} ms" if value >= 0.1 or value <= -0.1 else f"{value * 1000:.0f} µs"


def write_report(r: dict[str, Any], args: argparse.Namespace) -> None:
    runs = r["runs"]
    paths = r["paths"]
    rows = []
    for connections, threads in CONNECTIONS:
        base = runs[f"direct@{connections}"]
        for key, label in paths:
            run = runs[f"{key}@{connections}"]
            ratio = run["rps"] / base["rps"]
            added = run["p50_ms"] - base["p50_ms"]
            errors = f" ({run['errors']:.0f} errors)" if run["errors"] else ""
            errors += " ‡" if run["disturbed"] else ""
            rows.append(
                f"| {label} | {connections} (-t{threads}) | {run['rps']:.0f}{errors} | {ratio:.2f}× | "
                f"{ms(run['p50_ms'])} | {ms(run['p99_ms'])} | "
                f"{'—' if key == 'direct' else ('+' if added >= 0 else '') + ms(added)} |"
            )
    pub16, direct16 = runs["pub@16"], runs["direct@16"]
    all_runs = r["all_runs"]
    disturbed = [name for name, run in runs.items() if run["disturbed"]]
    disturbed_note = (
        f" **Disturbed rows: {', '.join(disturbed)}** (other load on the machine; re-run on a quiet one)."
        if disturbed
        else " No row was disturbed."
    )
    spread = ", ".join(
        f"round {i + 1}: {pub['rps'] / direct['rps']:.2f}× at 16 conns, "
        f"{'+' if pub1['p50_ms'] >= direct1['p50_ms'] else ''}{ms(pub1['p50_ms'] - direct1['p50_ms'])} p50 at 1"
        for i, (pub, direct, pub1, direct1) in enumerate(
            zip(all_runs["pub@16"], all_runs["direct@16"], all_runs["pub@1"], all_runs["direct@1"], strict=True)
        )
    )
    throughput_ratio = pub16["rps"] / direct16["rps"]
    added_p50 = runs["pub@1"]["p50_ms"] - runs["direct@1"]["p50_ms"]
    nginx_ratio = runs["nginx@16"]["rps"] / direct16["rps"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    throughput_verdict = verdict(throughput_ratio >= THROUGHPUT_TARGET)
    if pub16["disturbed"] or direct16["disturbed"]:
        throughput_verdict += " (from disturbed runs: not conclusive)"
    if throughput_ratio < THROUGHPUT_TARGET:
        needed = THROUGHPUT_TARGET * direct16["rps"]
        throughput_verdict += (
            f", short by {THROUGHPUT_TARGET - throughput_ratio:.2f} of direct "
            f"({needed - pub16['rps']:.0f} req/s; {needed:.0f} needed)"
        )
    latency_verdict = verdict(added_p50 <= LATENCY_TARGET_MS)
    if runs["pub@1"]["disturbed"] or runs["direct@1"]["disturbed"]:
        latency_verdict += " (from disturbed runs: not conclusive)"
    if added_p50 > LATENCY_TARGET_MS:
        latency_verdict += f", over by {ms(added_p50 - LATENCY_TARGET_MS)}"

    cpu_names = (
        "job",
        "docker-proxy",
        "nginx",
        "racetrackd workers",
        "racetrackd daemon+master",
        "children",
        "kernel threads",
    )
    cpu_rows = []
    for key, label in paths:
        run = runs[f"{key}@16"]
        cpu = run["cpu"]
        if key == "pub_base":  # its own job and daemon stand in the columns of ours
            cpu = {
                **cpu,
                "job": cpu["baseline job"],
                "racetrackd workers": cpu["baseline workers"],
                "racetrackd daemon+master": cpu["baseline daemon+master"],
            }
        cells = [f"{cpu[name] * 100:.0f}%" if cpu[name] >= 0.005 else "—" for name in cpu_names]
        rest = cpu["machine"] - cpu["others"] - sum(cpu[name] for name in cpu_names)
        per_call = {
            name: cpu[name] / run["rps"] * 1e6 for name in ("job", "docker-proxy", "nginx", "racetrackd workers")
        }
        in_between = (
            " + ".join(
                f"{name} {per_call[name]:.0f}"
                for name in ("docker-proxy", "nginx", "racetrackd workers")
                if per_call[name] >= 5
            )
            or "—"
        )
        cpu_rows.append(
            f"| {label} | {run['rps']:.0f} | "
            + " | ".join(cells)
            + f" | {cpu['others'] * 100:.0f}%{' ‡' if run['disturbed'] else ''} | {max(0.0, rest) * 100:.0f}% | "
            f"{cpu['machine'] * 100:.0f}% | "
            f"{per_call['job']:.0f} | {in_between} |"
        )

    cpu_pub, cpu_direct, cpu_nginx = runs["pub@16"]["cpu"], direct16["cpu"], runs["nginx_ip@16"]["cpu"]
    workers_per_call = cpu_pub["racetrackd workers"] / pub16["rps"] * 1e6
    nginx_per_call = cpu_nginx["nginx"] / runs["nginx_ip@16"]["rps"] * 1e6
    job_per_call = cpu_pub["job"] / pub16["rps"] * 1e6
    cpu_summary = (
        f"Through /pub the daemon's workers spend {workers_per_call:.0f} µs of CPU per call: "
        f"{workers_per_call / nginx_per_call:.1f}× what nginx spends ({nginx_per_call:.0f} µs) and "
        f"{workers_per_call / job_per_call:.2f}× the job's own {job_per_call:.0f} µs. On {os.cpu_count()} cores shared "
        f"by wrk, the job and the proxy, that CPU comes out of the job's share: it gets {cpu_pub['job'] * 100:.0f}% "
        f"of a core through /pub against {cpu_direct['job'] * 100:.0f}% direct (the machine at "
        f"{cpu_pub['machine'] * 100:.0f}% against {cpu_direct['machine'] * 100:.0f}%)."
    )
    baseline_note = ""
    if "pub_base@16" in runs:
        base16 = runs["pub_base@16"]
        base_per_call = base16["cpu"]["baseline workers"] / base16["rps"] * 1e6
        base1_added = runs["pub_base@1"]["p50_ms"] - runs["direct@1"]["p50_ms"]
        baseline_note = (
            f"\n\n**Against `{r['baseline_ref']}` ({r['baseline_commit']}) in the same run** (its daemon, run from "
            f"`git archive {r['baseline_ref']}`, deployed its own adder, the same image and limits; the rounds "
            f"alternate both gateways): its workers spend {base_per_call:.0f} µs per call against "
            f"{workers_per_call:.0f} µs here ({workers_per_call / base_per_call:.2f}×; halved: "
            f"{verdict(workers_per_call <= base_per_call / 2)}); its /pub keeps "
            f"{base16['rps'] / direct16['rps']:.2f}× of direct at 16 connections (here {throughput_ratio:.2f}×) and adds "
            f"{'+' if base1_added >= 0 else ''}{ms(base1_added)} to p50 at 1 (here {'+' if added_p50 >= 0 else ''}{ms(added_p50)})."
        )
    prof = r["profile"]
    shares = prof["shares"]
    group_rows = [
        ("socket writes (Python frames calling `transport.write`: the send(2) runs inside)", shares.get("socket", 0)),
        ("event loop busy in uvloop's C code (socket reads, epoll, callback dispatch)", shares.get("loop_busy", 0)),
        ("gunicorn request parsing / scope / response framing", shares.get("gunicorn", 0)),
        (
            "our gateway code (racetrackd/gateway/app.py, upstream.py, routing, auth; httptools it calls)",
            shares.get("ours", 0),
        ),
        ("prometheus metrics (prometheus_client, multiprocess mmap values)", shares.get("prometheus", 0)),
        ("event loop idle (asleep in epoll: the main threads' schedstat)", shares.get("idle", 0)),
        ("other", shares.get("other", 0)),
    ]
    busy_total = 1.0 - shares.get("idle", 0)
    group_table = "\n".join(
        f"| {name} | {share * 100:.1f}% | "
        f"{'—' if name.startswith('event loop idle') or not busy_total else f'{share / busy_total * 100:.1f}%'} |"
        for name, share in group_rows
    )
    top_rows = "\n".join(f"| `{frame}` | {share * 100:.1f}% |" for frame, share in prof["top"][:10])
    cpu_workers = ", ".join(f"{share * 100:.0f}%" for share in prof["cpu_per_worker"])
    prof_wrk = prof["wrk"]
    limits = r["limits"]

    command = " ".join([".venv/bin/python", "bench/gateway.py", *sys.argv[1:]])
    section = f"""{MARKER} ({time.strftime("%Y-%m-%d")}, {os.cpu_count()} cores, `{command}`)

samples/adder (`POST /api/v1/perform {{"a": 40, "b": 2}}` → 42) deployed by a private daemon run with
its defaults (2 HTTP workers on uvloop, this checkout {r["head_commit"]}; job addressing `auto` → `{r["addressing"]}`, the
gateway reaches the job at `{r["internal_name"]}`). The job container is limited to {limits["cpus"]:g} CPU and
{limits["memory_mib"]:.0f} MiB (the daemon's defaults). Every row is `wrk --latency` for {args.duration:g} s after a
{args.warmup:g} s warm-up of the same shape, with one Lua script (POST body, `Content-Type`, `X-Racetrack-Auth` of an ESC granted `call_job` on adder)
for all paths; all in one run, so ratios are against the baseline of this run. The published port goes
through docker-proxy ({"running for this port" if r["docker_proxy"] else "not found: iptables only"});
the container IP and /pub do not. nginx {nginx_version()}: `worker_processes auto`, upstream `keepalive 32`,
`proxy_http_version 1.1`, `proxy_set_header Connection ""`, `access_log off`. wrk, the job, the proxies
and the daemon all share the machine's {os.cpu_count()} cores.

| path | connections | req/s | ratio to direct | p50 | p99 | added p50 |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Each row is the best of {args.rounds} rounds by req/s (the rounds alternate the order of the paths; other
load on the machine only slows a run down); before each run the benchmark waits up to {args.quiet_wait:g} s (at most {args.quiet_budget:g} s in all) for
processes outside it to use under {QUIET:.0%} of a core, and a run during which they used {DISTURBED:.0%} or more
counts as disturbed (‡) and is taken only when every round of that row was. /pub against direct within each
round: {spread}.{disturbed_note}

Targets: /pub keeps ≥ {THROUGHPUT_TARGET:.0%} of direct (published port) throughput at 16 connections:
{throughput_ratio:.2f}× — {throughput_verdict}. /pub adds ≤ {LATENCY_TARGET_MS:g} ms to p50 at 1 connection:
{"+" if added_p50 >= 0 else ""}{ms(added_p50)} — {latency_verdict}. The workers spend ≤ {WORKER_CPU_TARGET_US:.0f} µs of CPU per call
(half the 178 µs of 2026-11-30): {workers_per_call:.0f} µs — {verdict(workers_per_call <= WORKER_CPU_TARGET_US)}. (nginx → published port keeps {nginx_ratio:.2f}× at 16 connections.)

CPU during the 16-connection runs (share of one core, from /proc; "machine" is the whole box, at most {os.cpu_count()}00%;
"kernel threads" are mostly ksoftirqd doing TCP for this traffic; "other processes" is every other user-space
process on the machine, i.e. load from outside this benchmark; "rest" is the machine less all processes:
interrupt and softirq time not charged to a process; µs per call is CPU time divided by calls):

| path | req/s | job | docker-proxy | nginx | racetrackd workers | racetrackd daemon+master | wrk | kernel threads | other processes | rest | machine | job µs/call | in-between µs/call |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(cpu_rows)}

{cpu_summary}{baseline_note}

**Profile of /pub.** A further 16-connection wrk run to /pub ({prof_wrk["rps"]:.0f} req/s while profiled) with
`py-spy record --nonblocking --idle --threads -f raw -d {args.profile_seconds}` on each of the {prof["workers"]} gunicorn workers;
{prof["samples"]} samples of the workers' event-loop (main) threads, by self time (leaf frame; a standard-library
leaf counts for the package that called it). Samples are wall time: a frame's share includes time its thread
was runnable but waiting for a CPU. From the main threads' /proc schedstat over the same 8 s: on a CPU
{prof["main_on_cpu"] * 100:.0f}%, runnable waiting for a CPU {prof["main_runnable"] * 100:.0f}%, asleep {prof["main_asleep"] * 100:.0f}% (whole worker processes,
all threads: {cpu_workers} of a core; the job {prof["cpu"]["job"] * 100:.0f}%, wrk {prof["cpu"]["load"] * 100:.0f}%,
py-spy {prof["cpu"]["children"] * 100:.0f}%, other processes {prof["cpu"]["others"] * 100:.0f}%{" ‡ (disturbed)" if prof["disturbed"] else ""},
the machine {prof["cpu"]["machine"] * 100:.0f}%). py-spy cannot see inside uvloop without `--native` (not available with
`--nonblocking`), so the {prof["loop_wall_share"] * 100:.0f}% of samples whose leaf is `ASGIWorker.run` (uvloop's C loop) is split into
idle (asleep, per schedstat) and busy (the rest).

| where the time goes | share of wall time | share of busy time |
|---|---:|---:|
{group_table}

Top self-time frames (share of wall time, both workers):

| frame | share |
|---|---:|
{top_rows}
"""
    write_section(MARKER, section)


def nginx_version() -> str:
    try:
        result = subprocess.run([find_nginx(), "-v"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, SystemExit, subprocess.TimeoutExpired):
        return "(version unknown)"
    found = re.search(r"nginx/([\w.]+)", result.stderr + result.stdout)
    return found.group(1) if found else "(version unknown)"


if __name__ == "__main__":
    main()
