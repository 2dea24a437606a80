"""The official Racetrack CLI (`racetrack`, PyPI `racetrack-client`) against a real racetrackd.

People moving over from Racetrack keep their CLI and their habits: set the remote, log in,
deploy a job directory, list, read logs and build logs, call, delete, list plugins. The client
runs in a virtualenv of its own (its pins are not ours), with its own HOME so its config file
(`~/.racetrack/config.yaml`) is this test's alone.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import REPO, Daemon, _clean_env
from tests.integration.test_cli_auth import PASSWORD
from tests.integration.test_image_builder import exec_in_job

CLIENT_VERSION = "2.35.1"


@pytest.fixture(scope="session")
def racetrack_cli() -> Path:
    """The `racetrack` executable, installed once per machine into a cached virtualenv."""
    venv = Path.home() / ".cache" / "racetrackd-tests" / f"racetrack-client-{CLIENT_VERSION}"
    executable = venv / "bin" / "racetrack"
    if not executable.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"racetrack-client=={CLIENT_VERSION}"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if installed.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(f"could not install racetrack-client {CLIENT_VERSION}:\n{installed.stderr[-2000:]}")
    return executable


class RacetrackCli:
    """Runs `racetrack` with a HOME of its own; non-TTY, so it logs errors only."""

    def __init__(self, executable: Path, home: Path) -> None:
        self.executable = executable
        self.home = home
        self.env = {**_clean_env(), "HOME": str(home)}

    def __call__(self, *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.executable), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if expect_ok:
            assert result.returncode == 0, (
                f"racetrack {' '.join(args)}: exit {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    @property
    def config(self) -> dict[str, object]:
        return yaml.safe_load((self.home / ".racetrack" / "config.yaml").read_text())

    def with_password(self, *args: str, password: str) -> tuple[int, str]:
        """Run with a terminal, answering the password prompt (getpass reads /dev/tty, not stdin)."""
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child becomes racetrack
            os.execve(str(self.executable), [str(self.executable), *args], self.env)
        output, answered, deadline = b"", False, time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 1)
                if not ready:
                    continue
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"password" in output.lower():
                    os.write(fd, password.encode() + b"\n")
                    answered = True
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.fixture(scope="module")
def racetrack(racetrack_cli: Path, daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> RacetrackCli:
    cli = RacetrackCli(racetrack_cli, tmp_path_factory.mktemp("racetrack-home"))
    cli("set", "remote", daemon.url)
    cli("login", daemon.token)
    return cli


RUNTIME_SECRET = "rc-runtime-secret-5f0c2a"


def racetrack_job_dir(root: Path, name: str, version: str = "0.0.1") -> Path:
    """samples/adder as a Racetrack user keeps it: the manifest names a git remote (the client insists)
    and a secret runtime env file, which the client reads and sends as secret_vars."""
    directory = root / name
    shutil.copytree(REPO / "samples" / "adder", directory)
    (directory / "secret.env").write_text(f"MIGRATED_SECRET={RUNTIME_SECRET}\n")
    manifest = yaml.safe_load((directory / "job.yaml").read_text())
    manifest.update(
        name=name,
        version=version,
        git={"remote": f"https://git.example.com/team/{name}"},
        secret_runtime_env_file="secret.env",
    )
    (directory / "job.yaml").write_text(yaml.safe_dump(manifest))
    return directory


@pytest.fixture(scope="module")
def deployed(racetrack: RacetrackCli, daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A job deployed by `racetrack deploy` from a local directory; deleted at the end if still there."""
    name = f"rc-adder-{uuid.uuid4().hex[:6]}"
    racetrack("deploy", str(racetrack_job_dir(tmp_path_factory.mktemp("rc-jobs"), name)), "--build-context", "local")
    yield name
    daemon.api("DELETE", f"/lifecycle/api/v1/job/{name}/0.0.1")


def listed(racetrack: RacetrackCli, *args: str) -> dict[str, list[str]]:
    """`racetrack list` as rows keyed by job name."""
    lines = racetrack("list", *args).stdout.strip().splitlines()
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_remote_and_login_are_saved_and_get_pub_points_at_the_gateway(racetrack: RacetrackCli, daemon: Daemon) -> None:
    assert racetrack("get", "remote", "-q").stdout.strip() == f"{daemon.url}/lifecycle"
    assert racetrack("get", "pub", "-q").stdout.strip() == f"{daemon.url}/pub"
    assert racetrack("get", "auth-token").stdout.strip() == daemon.token
    assert (racetrack.home / ".racetrack" / "config.yaml").stat().st_mode & 0o077 == 0


def test_deploy_from_a_directory_then_list_shows_it_running(
    racetrack: RacetrackCli, deployed: str, daemon: Daemon
) -> None:
    assert listed(racetrack)[deployed] == [deployed, "0.0.1", "RUNNING"]
    row = listed(racetrack, "-c", "pub_url")[deployed]
    assert row[-1] == f"{daemon.url}/pub/job/{deployed}/0.0.1"
    job = daemon.api("GET", f"/lifecycle/api/v1/job/{deployed}/0.0.1").json()
    assert job["deployed_by"] == "admin"


def test_the_clients_secret_env_file_reaches_the_job_and_nothing_shows_it(
    racetrack: RacetrackCli, deployed: str, daemon: Daemon
) -> None:
    assert f"MIGRATED_SECRET={RUNTIME_SECRET}" in exec_in_job(daemon, deployed, "0.0.1", "env")
    shown = [
        racetrack("list", "-c", "all").stdout,
        racetrack("build-logs", deployed).stdout,
        daemon.api("GET", f"/lifecycle/api/v1/job/{deployed}/0.0.1").text,
        daemon.api("GET", f"/lifecycle/api/v1/deploy?job_name={deployed}").text,
    ]
    assert not [text for text in shown if RUNTIME_SECRET in text]


def test_call_runs_perform_through_the_gateway(racetrack: RacetrackCli, deployed: str) -> None:
    assert racetrack("call", deployed, "/api/v1/perform", '{"a": 40, "b": 2}').stdout.strip() == "42"
    assert racetrack("call", deployed, "/api/v1/perform", "a: 1\nb: 2", "--version", "0.0.1").stdout.strip() == "3"


def test_logs_and_build_logs(racetrack: RacetrackCli, deployed: str) -> None:
    racetrack("call", deployed, "/api/v1/perform", '{"a": 1, "b": 1}')
    assert "/api/v1/perform 200" in racetrack("logs", deployed, "--tail", "50").stdout
    build_log = racetrack("build-logs", deployed).stdout
    assert "Successfully built" in build_log
    assert len(racetrack("build-logs", deployed, "--tail", "2").stdout.strip().splitlines()) == 2


def test_plugin_list_shows_the_installed_job_types(racetrack: RacetrackCli) -> None:
    assert "python3" in racetrack("plugin", "list").stdout
    assert "python3:" in racetrack("plugin", "list", "--job-types").stdout


def test_move_stays_on_docker_and_refuses_other_targets(racetrack: RacetrackCli, deployed: str) -> None:
    racetrack("move", deployed, "--version", "0.0.1", "--infrastructure", "docker")
    refused = racetrack("move", deployed, "--version", "0.0.1", "--infrastructure", "kubernetes", expect_ok=False)

    assert refused.returncode != 0
    assert "infrastructure_target: 'kubernetes' is not installed" in refused.stdout + refused.stderr
    assert listed(racetrack)[deployed] == [deployed, "0.0.1", "RUNNING"]


def test_delete_removes_the_job(racetrack: RacetrackCli, daemon: Daemon, tmp_path: Path) -> None:
    name = f"rc-gone-{uuid.uuid4().hex[:6]}"
    racetrack("deploy", str(racetrack_job_dir(tmp_path, name)), "--build-context", "local")
    assert name in listed(racetrack)

    racetrack("delete", name, "--version", "0.0.1")

    assert name not in listed(racetrack)
    gone = racetrack("call", name, "/api/v1/perform", '{"a": 1, "b": 1}', expect_ok=False)
    assert gone.returncode != 0 and "not found" in (gone.stdout + gone.stderr).lower()


def test_wrong_token_is_refused_with_the_servers_message(racetrack_cli: Path, daemon: Daemon, tmp_path: Path) -> None:
    stranger = RacetrackCli(racetrack_cli, tmp_path)
    stranger("set", "remote", daemon.url)

    refused = stranger("login", "rtd_not-a-real-token", expect_ok=False)

    assert refused.returncode != 0
    assert "invalid auth token" in (refused.stdout + refused.stderr).lower()


def test_login_with_username_and_password(racetrack_cli: Path, daemon: Daemon, tmp_path: Path) -> None:
    username = f"rc-user-{uuid.uuid4().hex[:6]}"
    created = daemon.api("POST", "/lifecycle/api/v1/users", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    user = RacetrackCli(racetrack_cli, tmp_path)
    user("set", "remote", daemon.url)

    code, output = user.with_password("login", "--username", username, password=PASSWORD)

    assert code == 0, output
    token = user("get", "auth-token").stdout.strip()
    assert token and token != daemon.token
    assert user("list").returncode == 0
    wrong_code, wrong_output = RacetrackCli(racetrack_cli, tmp_path / "other").with_password(
        "login", "--username", username, "--remote", daemon.url, password="not the password"
    )
    assert wrong_code != 0 and "incorrect username or password" in wrong_output.lower()
