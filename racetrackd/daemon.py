"""Run the daemon: gunicorn serving HTTP (a child process) and, in this process, the deployment
worker, the supervisor and the async-call runner.

`serve` runs in the foreground until SIGTERM/SIGINT; `start` launches `serve` in the background
(logging to DATA_DIR/racetrackd.log, pid in DATA_DIR/racetrackd.pid) and waits until it answers;
`stop` ends it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from racetrackd import metrics
from racetrackd.deploy.building import ImageBuilder
from racetrackd.deploy.deployer import Deployer
from racetrackd.deploy.worker import DeploymentWorker, WorkerLock
from racetrackd.errors import RacetrackError
from racetrackd.gateway.asynccalls import AsyncCallRunner
from racetrackd.jobs.addressing import daemon_url_for_builds, extra_bind_addresses
from racetrackd.jobs.supervisor import Supervisor
from racetrackd.services import build_services
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

PID_FILE = "racetrackd.pid"
LOG_FILE = "racetrackd.log"
# The data dir holds the registry (sealed secrets, token digests, build logs), the daemon log, uploads
# and workspaces: nobody but the daemon's user has any business reading them.
PRIVATE_UMASK = 0o077


def restrict_data_dir(data_dir: Path) -> None:
    """Make what the daemon creates from now on private to its user (umask 077: files 0600, dirs 0700),
    and tighten what an earlier version left readable (registry, its -wal/-shm, log, uploads, workspaces)."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for path in data_dir.iterdir():
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o700)
        elif path.is_file():
            path.chmod(0o600)


def serve(settings: Settings) -> int:
    """Serve until a signal; returns the exit code."""
    restrict_data_dir(settings.data_dir)  # before the registry, log or any child process is made
    lock = WorkerLock(settings.data_dir)
    lock.acquire()
    services = build_services(settings, make_networks=True)  # before the HTTP workers, which build their own
    runtime, addressing, plugins = services.runtime, services.addressing, services.plugins
    builder = ImageBuilder(
        settings,
        runtime,
        services.vault,
        daemon_url_for_builds(addressing, runtime),
        isolate_builds=addressing.isolates_containers,
    )
    for plugin in plugins.plugins():  # broken ones are logged as they load; say once what serves
        if plugin.error is None:
            log.info(
                "job-type plugin %s %s: %s",
                plugin.name,
                plugin.version,
                ", ".join(jt.full_name for jt in plugin.job_types) or "no job types",
            )
    deployer = Deployer(settings, runtime, plugins, addressing, services.accounts, builder, services.orchestrator)
    worker = DeploymentWorker(deployer, settings.worker_poll_interval, settings.build_concurrency)
    supervisor = Supervisor(settings, services.orchestrator, deployer)
    async_calls = AsyncCallRunner(settings, services.wake)
    metrics.prepare_multiprocess_dir(settings.metrics_dir)
    http = _start_gunicorn(settings, extra_bind_addresses(settings, addressing))

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %s, stopping", signum)
        worker.stop()
        supervisor.stop()
        async_calls.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    # If gunicorn dies, the daemon is useless: stop the worker too and report failure.
    def _watch_http() -> None:
        http.wait()
        worker.stop()

    threading.Thread(target=_watch_http, daemon=True, name="http-watch").start()
    log.info("racetrackd listening on %s:%s (gateway %s/pub)", settings.host, settings.port, settings.public_url)
    worker.fail_interrupted()  # before the reconcile, so their half-started containers count as orphans
    threading.Thread(
        target=supervisor.run_forever, args=(settings.supervisor_interval,), daemon=True, name="supervisor"
    ).start()
    threading.Thread(target=async_calls.run_forever, daemon=True, name="async-calls").start()
    try:
        worker.run_forever()
    finally:
        if http.poll() is None:
            http.terminate()
            try:
                http.wait(timeout=30)
            except subprocess.TimeoutExpired:
                http.kill()
        lock.release()
    return 0 if http.returncode in (0, -signal.SIGTERM) else 1


def _start_gunicorn(settings: Settings, extra_binds: list[str]) -> subprocess.Popen[bytes]:
    binds = [f"{settings.host}:{settings.port}", *extra_binds]
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        *[arg for bind in binds for arg in ("--bind", bind)],
        "--workers",
        str(settings.http_workers),
        "--worker-class",
        "asgi",
        "--config",
        "python:racetrackd.gunicorn_hooks",
        "--graceful-timeout",
        "20",
        "--keep-alive",
        "75",
        "--log-level",
        settings.log_level,
        "--error-logfile",
        "-",
        "--no-control-socket",
        "racetrackd.asgi:create_asgi_app()",
    ]
    environ = {**os.environ, **settings.as_environ(), metrics.MULTIPROC_ENV: str(settings.metrics_dir)}
    return subprocess.Popen(command, env=environ)


def start(settings: Settings, wait_seconds: float = 60) -> int:
    """Launch `racetrackd serve` in the background and wait until it answers /ready; returns its pid."""
    restrict_data_dir(settings.data_dir)  # the log file below is made private too
    existing = running_pid(settings)
    if existing is not None:
        raise RacetrackError(f"racetrackd is already running (pid {existing})", hint="racetrackd stop")
    log_path = settings.data_dir / LOG_FILE
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "racetrackd", "serve"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **settings.as_environ()},
            start_new_session=True,
        )
    (settings.data_dir / PID_FILE).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + wait_seconds
    url = f"http://{_local_host(settings)}:{settings.port}/ready"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RacetrackError(f"racetrackd exited at start-up; see {log_path}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # our own loopback URL
                if response.status == 200:
                    return process.pid
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RacetrackError(f"racetrackd did not answer {url} within {wait_seconds:g} s; see {log_path}")


def stop(settings: Settings, wait_seconds: float = 40) -> int | None:
    """Stop the background daemon; returns its pid, or None when none was running."""
    pid = running_pid(settings)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    (settings.data_dir / PID_FILE).unlink(missing_ok=True)
    return pid


def running_pid(settings: Settings) -> int | None:
    path = settings.data_dir / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def _local_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
