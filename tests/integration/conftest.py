"""Integration fixtures: the real daemon as a subprocess on a free loopback port, the real Docker engine.

Every container and image the daemon creates carries the label `racetrackd.instance=<this run>`;
teardown removes them by that label, so a test run never touches other racetrackd instances.
"""

from __future__ import annotations

import os
import socket
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

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "jobs"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE_CANDIDATES = ("python:3.11-slim", "racetrackd/python3-base:bookworm")


@dataclass
class Daemon:
    url: str
    token: str
    instance: str
    data_dir: Path
    log_path: Path
    docker: docker.DockerClient

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Racetrack-Auth": self.token, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def rtd(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**_clean_env(), "RTD_REMOTE": self.url, "RTD_TOKEN": self.token,
               "RTD_CONFIG": str(self.data_dir / "rtd-config.yaml")}
        result = subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, stdin=subprocess.DEVNULL,
                                text=True, timeout=900, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"rtd {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def containers(self) -> list[Any]:
        return self.docker.containers.list(all=True, filters={"label": f"racetrackd.instance={self.instance}"})


def _clean_env() -> dict[str, str]:
    """The test process's environment without any RACETRACK_*/RTD_* of the developer's own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RACETRACK_", "RTD_"))}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    for name in BASE_IMAGE_CANDIDATES:
        try:
            docker_client.images.get(name)
        except docker.errors.ImageNotFound:
            continue
        return name
    pytest.fail("no python3 base image; run: racetrackd base-images build")


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
           base_image: str) -> Iterator[Daemon]:
    data_dir = tmp_path_factory.mktemp("racetrackd-data")
    instance = f"test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    token = uuid.uuid4().hex
    env = {
        **_clean_env(),
        "RACETRACK_HOST": "127.0.0.1",
        "RACETRACK_PORT": str(port),
        "RACETRACK_DATA_DIR": str(data_dir),
        "RACETRACK_ADMIN_TOKEN": token,
        "RACETRACK_AUTH_REQUIRED": "true",
        "RACETRACK_INSTANCE": instance,
        "RACETRACK_PYTHON_BASE_IMAGE": base_image,
        "RACETRACK_HTTP_WORKERS": "2",
        "RACETRACK_JOB_START_TIMEOUT": "120",
        # Tests serve repositories from loopback git and http servers (and local paths).
        "RACETRACK_GIT_ALLOWED_SCHEMES": "https,http,git,file",
    }
    if HOST_CA_BUNDLE.is_file():  # the corporate-proxy case: builds trust the host's CAs
        env["RACETRACK_BUILD_CA_BUNDLE"] = str(HOST_CA_BUNDLE)
    log_path = data_dir / "daemon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "racetrackd", "serve"], env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    handle = Daemon(url, token, instance, data_dir, log_path, docker_client)
    try:
        _wait_ready(url, process, log_path)
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
        _remove_labelled(docker_client, instance)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"racetrackd exited at start-up:\n{log_path.read_text()}")
        try:
            if requests.get(url + "/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"racetrackd never became ready:\n{log_path.read_text()}")


def _remove_labelled(client: docker.DockerClient, instance: str) -> None:
    label = {"label": f"racetrackd.instance={instance}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True)
    for image in client.images.list(filters=label):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.APIError:
            pass  # still shared with another tag; pruned by the engine later
