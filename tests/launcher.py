"""Start racetrackd as a subprocess on a free loopback port and wait until it serves.

One launcher for the integration tests (tests/integration/conftest.py) and the benchmarks
(bench/*.py), which used to carry near-copies of it. It lives under tests/ because the tests are
its main user and already import `tests.*`; the benchmarks put the repository root on sys.path and
import it from there (bench/ is a folder of scripts, not a package the tests should depend on).
Plain Python: no pytest and no racetrackd import, so the daemon under test is only ever the
subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SERVE = (sys.executable, "-m", "racetrackd", "serve")  # this checkout's racetrackd


class DaemonFailed(AssertionError):
    """The daemon exited at start-up or never became ready (an assertion: a test that needs it fails)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This process's environment without any RACETRACK_*/RTD_* of the developer's own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RACETRACK_", "RTD_"))}


def daemon_env(*, port: int, data_dir: Path, token: str, instance: str, base_image: str) -> dict[str, str]:
    """A clean environment with the settings every launched daemon needs: loopback on `port`, its own
    data dir, admin token and instance label, the python3 base image, and the host's CAs for builds."""
    env = {
        **clean_env(),
        "RACETRACK_HOST": "127.0.0.1",
        "RACETRACK_PORT": str(port),
        "RACETRACK_DATA_DIR": str(data_dir),
        "RACETRACK_ADMIN_TOKEN": token,
        "RACETRACK_INSTANCE": instance,
        "RACETRACK_PYTHON_BASE_IMAGE": base_image,
    }
    if HOST_CA_BUNDLE.is_file():  # the corporate-proxy case: builds trust the host's CAs
        env["RACETRACK_BUILD_CA_BUNDLE"] = str(HOST_CA_BUNDLE)
    return env


def start(
    env: dict[str, str], log_path: Path, *, command: tuple[str, ...] = SERVE, cwd: Path = REPO, new_session: bool = True
) -> subprocess.Popen[bytes]:
    """Launch the daemon with its output appended to `log_path`. In a session of its own by default,
    so that `kill` can take gunicorn down with it, as a crash would."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=new_session
        )


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, *, timeout: float = 60, step: float = 0.2
) -> None:
    """Until `url`/ready answers 200; DaemonFailed (with the log) if the daemon exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DaemonFailed(f"racetrackd exited at start-up:\n{log_path.read_text()}")
        try:
            if requests.get(url + "/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # refused, or too slow to answer while workers boot
            pass
        time.sleep(step)
    raise DaemonFailed(f"racetrackd never became ready:\n{log_path.read_text()}")


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 40) -> None:
    """SIGTERM (the daemon drains and stops its workers); SIGKILL what is left after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon and its HTTP workers at once (its whole session when it has one)."""
    if os.getpgid(process.pid) == process.pid:
        os.killpg(process.pid, signal.SIGKILL)
    else:  # started with new_session=False: its group is the caller's
        process.kill()
    process.wait(timeout=10)
