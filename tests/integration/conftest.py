"""Integration fixtures: the real daemon as a subprocess on a free loopback port, the real Docker engine.

Every container and image the daemon creates carries the label `racetrackd.instance=<this run>`;
teardown removes them by that label, so a test run never touches other racetrackd instances.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from tests import launcher
from tests.launcher import REPO
from tests.launcher import clean_env as _clean_env

FIXTURES = REPO / "tests" / "fixtures" / "jobs"
BASE_IMAGE_CANDIDATES = ("python:3.11-slim", "racetrackd/python3-base:bookworm")
# golang jobs: a Go toolchain image, and a Debian image to run in (the python3 base image is one).
GOLANG_BASE_IMAGE_CANDIDATES = ("golang:1.21-bookworm", "racetrackd/golang-base:bookworm")
GOLANG_RUNTIME_IMAGE_CANDIDATES = ("debian:bookworm-slim",)


@dataclass
class Daemon:
    url: str
    token: str
    instance: str
    data_dir: Path
    log_path: Path
    docker: docker.DockerClient
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # This checkout's racetrackd by default; tests/e2e/test_wheel.py runs one installed from the wheel.
    command: tuple[str, ...] = launcher.SERVE
    cwd: Path = REPO

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = launcher.start(self.env, self.log_path, command=self.command, cwd=self.cwd)
        launcher.wait_ready(self.url, self.process, self.log_path)

    def stop(self) -> None:
        launcher.stop(self.process)

    def kill(self) -> None:
        """SIGKILL the daemon and its HTTP workers at once."""
        if self.process is not None:
            launcher.kill(self.process)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Racetrack-Auth": self.token, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def rtd(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """rtd as the admin, talking to this daemon."""
        env = {"RTD_REMOTE": self.url, "RTD_TOKEN": self.token, "RTD_CONFIG": str(self.data_dir / "rtd-config.yaml")}
        return run_rtd(env, *args, check=check)

    def containers(self) -> list[Any]:
        """This daemon's containers. The SDK inspects each one it lists: one the daemon removes
        meanwhile (a replaced release retiring in the background) fails the list, so it is asked again."""
        labels = {"label": f"racetrackd.instance={self.instance}"}
        for _ in range(5):
            try:
                return list(self.docker.containers.list(all=True, filters=labels))
            except docker.errors.NotFound:
                time.sleep(0.2)
        return list(self.docker.containers.list(all=True, filters=labels))


def run_rtd(
    env: dict[str, str], *args: str, stdin: str | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real rtd in a subprocess, with `env` over a clean environment (no RTD_*/RACETRACK_* of the developer's)."""
    result = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**_clean_env(), **env},
        capture_output=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        text=True,
        timeout=900,
        cwd=REPO,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"rtd {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the Docker engine is required in CI: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    """A python3 base image present locally (CI builds one with `racetrackd base-images build`)."""
    name = _first_local_image(docker_client, BASE_IMAGE_CANDIDATES)
    if name is None:
        pytest.fail("no python3 base image; run: racetrackd base-images build")
    return name


def _first_local_image(docker_client: docker.DockerClient, candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        try:
            docker_client.images.get(name)
        except docker.errors.ImageNotFound:
            continue
        return name
    return None


def launch_daemon(
    data_dir: Path,
    docker_client: docker.DockerClient,
    base_image: str,
    *,
    unset: tuple[str, ...] = (),
    command: tuple[str, ...] | None = None,
    cwd: Path | None = None,
    **extra_env: str,
) -> Daemon:
    """A real daemon on a free loopback port with its own instance label; call .stop() (or .kill()).
    `unset`: settings of the test environment below to leave at the daemon's default; `command` and
    `cwd`: another racetrackd than this checkout's."""
    instance = f"test-{uuid.uuid4().hex[:8]}"
    port = launcher.free_port()
    token = uuid.uuid4().hex
    env = {
        **launcher.daemon_env(port=port, data_dir=data_dir, token=token, instance=instance, base_image=base_image),
        "RACETRACK_AUTH_REQUIRED": "true",
        "RACETRACK_AUTH_FAILURE_LIMIT": "10000",  # tests fail auth on purpose, from one address; test_auth checks the limit
        # When absent, the defaults stand: a golang build then fails naming the image to build (setup-host.sh --with-golang does).
        "RACETRACK_GOLANG_BASE_IMAGE": _first_local_image(docker_client, GOLANG_BASE_IMAGE_CANDIDATES)
        or GOLANG_BASE_IMAGE_CANDIDATES[0],
        "RACETRACK_GOLANG_RUNTIME_IMAGE": _first_local_image(docker_client, GOLANG_RUNTIME_IMAGE_CANDIDATES)
        or base_image,
        # rust jobs build in racetrackd/rust-base:bookworm (the default; setup-host.sh --with-rust builds it)
        "RACETRACK_RUST_RUNTIME_IMAGE": _first_local_image(docker_client, GOLANG_RUNTIME_IMAGE_CANDIDATES)
        or base_image,
        "RACETRACK_HTTP_WORKERS": "2",
        "RACETRACK_JOB_START_TIMEOUT": "120",
        "RACETRACK_SUPERVISOR_INTERVAL": "1",
        # Tests serve repositories from loopback git and http servers (and local paths).
        "RACETRACK_GIT_ALLOWED_SCHEMES": "https,http,git,file",
        "RACETRACK_GIT_ALLOW_PRIVATE_REMOTES": "true",  # those servers are on loopback (off by default)
    }
    env.update(extra_env)
    for name in unset:
        env.pop(name, None)
    handle = Daemon(f"http://127.0.0.1:{port}", token, instance, data_dir, data_dir / "daemon.log", docker_client, env)
    if command is not None:
        handle.command = command
    if cwd is not None:
        handle.cwd = cwd
    handle.start()
    return handle


@pytest.fixture(scope="session")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    handle = launch_daemon(tmp_path_factory.mktemp("racetrackd-data"), docker_client, base_image)
    try:
        yield handle
    finally:
        handle.stop()
        _remove_labelled(docker_client, handle.instance)


def _remove_labelled(client: docker.DockerClient, instance: str) -> None:
    label = {"label": f"racetrackd.instance={instance}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for image in client.images.list(filters=label):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.APIError:
            pass  # still shared with another tag; pruned by the engine later


def remove_networks(client: docker.DockerClient, network: str) -> None:
    """Remove a test's own jobs' network and the build network the daemon made beside it (`<name>-build`).

    By name, not by a handle: the daemon may have remade the network (isolated) since the test made it.
    Left behind, they would use up the engine's address pools (about 30 bridges by default)."""
    for name in (network, f"{network}-build"):
        for found in client.networks.list(names=[name]):
            if found.name == name:
                try:
                    found.remove()
                except docker.errors.APIError:
                    pass  # still in use by a container another test run owns; its teardown removes it
