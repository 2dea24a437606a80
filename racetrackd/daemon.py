"""Run the daemon: gunicorn serving HTTP (a child process) and, in this process, the deployment
worker, the supervisor and the async-call runner.

`serve` runs in the foreground until SIGTERM/SIGINT; `start` launches `serve` in the background
(logging to DATA_DIR/racetrackd.log, pid in DATA_DIR/racetrackd.pid) and waits until it answers;
`stop` ends it.
"""

from __future__ import annotations

import gc
import json
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
from typing import Any

from racetrackd import footprint, metrics
from racetrackd.db import database
from racetrackd.deploy.building import ImageBuilder
from racetrackd.deploy.deployer import Deployer
from racetrackd.deploy.worker import DeploymentWorker, WorkerLock
from racetrackd.errors import RacetrackError
from racetrackd.gateway.asynccalls import AsyncCallRunner
from racetrackd.jobs.addressing import daemon_url_for_builds, extra_bind_addresses
from racetrackd.jobs.supervisor import Supervisor
from racetrackd.jobs.waker import Waker
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
    waker = Waker(services.orchestrator, settings.job_start_timeout)  # wake-ups the HTTP workers claim
    metrics.prepare_multiprocess_dir(settings.metrics_dir)
    http = _start_gunicorn(settings, extra_bind_addresses(settings, addressing), lock)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %s, stopping", signum)
        worker.stop()
        supervisor.stop()
        async_calls.stop()
        waker.stop()

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
    threading.Thread(target=waker.run_forever, daemon=True, name="waker").start()
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


def _start_gunicorn(settings: Settings, extra_binds: list[str], lock: WorkerLock) -> HttpServer:
    """Fork gunicorn's master from this process once every module the HTTP workers use is loaded.

    A fresh `python -m gunicorn` would load its own copy of racetrackd in the master and again in each
    worker; forked, the master and the workers share this process's pages (the modules, the plugin
    store's job types, ...) until one of them writes to a page, so the daemon holds about one copy of
    its code instead of four (docs/benchmarks.md, "Control plane memory"). The master builds the app
    once (`--preload`) and forks the workers from it, so they share what it built as well; each worker
    opens its own registry connection and Docker client (gunicorn_hooks.pre_fork, DockerRuntime).
    """
    binds = [f"{settings.host}:{settings.port}", *extra_binds]
    argv = [
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
        "--preload",
        "racetrackd.asgi:create_asgi_app(wakes_in_main_process=True)",
    ]
    environ = {
        **os.environ,
        **settings.as_environ(),
        metrics.MULTIPROC_ENV: str(settings.metrics_dir),
        footprint.MAIN_PID_ENV: str(os.getpid()),  # so a worker reports the memory of the whole daemon
    }
    _load_http_modules()
    # No thread runs yet (the supervisor, the async-call runner and the deployment worker start after
    # this), so the child inherits no lock held half-way; the registry connection is closed first, as
    # SQLite's own state must never cross a fork (it reconnects on the next query).
    if threading.active_count() > 1:  # a thread started too early: what it holds would stay locked in the child
        log.warning("forking the HTTP master with threads running: %s", [t.name for t in threading.enumerate()])
    database.close()
    gc.freeze()  # the collector would otherwise write to every object's header, unsharing its page
    pid = os.fork()
    if pid == 0:  # the child: become gunicorn's master, never return into the daemon's code
        code = 1
        try:
            lock.release()  # the child's copy of the descriptor: the flock stays the daemon's
            code = _run_gunicorn(argv, environ)
        except BaseException:  # whatever gunicorn raises ends the child, never returns into the daemon
            log.exception("gunicorn failed")
        finally:
            for stream in (sys.stdout, sys.stderr):  # os._exit skips the flush at exit
                stream.flush()
            os._exit(code)
    return HttpServer(pid)


def _load_http_modules() -> None:
    """Import what the HTTP workers run (the ASGI app and the control plane with everything under it,
    gunicorn's asgi worker, uvloop), so that it is loaded once, here, before the fork."""

    try:
        import uvloop  # noqa: F401  (the asgi worker's event loop when it is installed)
    except ImportError:
        pass


def _run_gunicorn(argv: list[str], environ: dict[str, str]) -> int:
    """In the forked child: gunicorn's command line, with the environment a separate process would get."""
    os.environ.clear()
    os.environ.update(environ)
    metrics.use_multiprocess_dir()  # prometheus-client chose its value class at import, without the dir
    root = logging.getLogger()  # as in a fresh interpreter: gunicorn sets up its own logging
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    _set_process_name(footprint.HTTP_PROCESS_NAME)
    sys.argv = argv
    from gunicorn.app.wsgiapp import WSGIApplication

    try:
        WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn").run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _set_process_name(name: str) -> None:
    """The command name `ps` shows (the command line stays the daemon's: the master is its fork)."""
    try:
        Path("/proc/self/comm").write_text(name[:15])
    except OSError:  # not Linux: the name is cosmetic
        pass


class HttpServer:
    """The forked gunicorn master, watched like a subprocess: poll, wait, terminate, kill, returncode."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._reaping = threading.Lock()

    def poll(self) -> int | None:
        if self.returncode is None and self._reaping.acquire(blocking=False):
            try:
                if self.returncode is None:
                    done, status = os.waitpid(self.pid, os.WNOHANG)
                    if done:
                        self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped elsewhere: its code is lost
                self.returncode = 1
            finally:
                self._reaping.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(["gunicorn"], timeout or 0)
            time.sleep(0.1)
        return code

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


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


def reported_memory(settings: Settings) -> dict[str, Any] | None:
    """The memory a daemon on this host's port reports (/info's daemon_memory): for one run in the
    foreground (`racetrackd serve`), which leaves no pid file; None when nothing answers there."""
    url = f"http://{_local_host(settings)}:{settings.port}/lifecycle/api/v1/info"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # our own loopback URL
            memory = json.load(response).get("daemon_memory")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None
    return memory if isinstance(memory, dict) else None


def _local_host(settings: Settings) -> str:
    return "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
