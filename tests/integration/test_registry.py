"""RACETRACK_REGISTRY against a real registry: Debian's docker-registry package, in the swarm-lab
node image (built locally from Debian packages, nothing pulled), asking for a password. The daemon
builds, logs in, pushes, and runs the pushed reference; a registry gone fails the deployment."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests import launcher
from tests.integration.conftest import FIXTURES, REPO, Daemon, launch_daemon

pytestmark = pytest.mark.integration

NODE_IMAGE = "racetrackd/swarm-node:bookworm"
PROBE = FIXTURES / "hostname-probe"


@dataclass
class Registry:
    address: str  # 127.0.0.1:<port>: loopback, which every engine treats as an insecure registry
    username: str
    password_file: Path
    container: Any

    def get(self, path: str) -> requests.Response:
        token = base64.b64encode(f"{self.username}:{self.password_file.read_text().strip()}".encode()).decode()
        return requests.get(f"http://{self.address}{path}", headers={"Authorization": f"Basic {token}"}, timeout=10)


@pytest.fixture(scope="module")
def registry(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    subprocess.run([str(REPO / "scripts" / "swarm-lab.sh"), "image"], check=True, timeout=900)
    secrets = tmp_path_factory.mktemp("registry")
    password_file = secrets / "registry-password"
    password_file.write_text(uuid.uuid4().hex + "\n")
    port = launcher.free_port()
    container = docker_client.containers.run(
        NODE_IMAGE,
        ["registry"],
        detach=True,
        name=f"test-registry-{uuid.uuid4().hex[:8]}",
        labels={"racetrackd.test": "registry"},
        environment={"LAB_REGISTRY_USER": "ci"},
        volumes={str(secrets): {"bind": "/lab", "mode": "ro"}},
        ports={"5000/tcp": ("127.0.0.1", port)},
    )
    found = Registry(f"127.0.0.1:{port}", "ci", password_file, container)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://{found.address}/v2/", timeout=2).status_code == 401:
                    break  # up, and asking for the password
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, container.logs(tail=20).decode()
            time.sleep(0.3)
        yield found
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def pushing_daemon(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Daemon]:
    handle = launch_daemon(
        tmp_path_factory.mktemp("racetrackd-registry"),
        docker_client,
        base_image,
        RACETRACK_REGISTRY=registry.address,
        RACETRACK_REGISTRY_USERNAME=registry.username,
        RACETRACK_REGISTRY_PASSWORD_FILE=str(registry.password_file),
    )
    try:
        yield handle
    finally:
        handle.stop()
        for container in handle.containers():
            container.remove(force=True)
        for image in docker_client.images.list(filters={"label": f"racetrackd.instance={handle.instance}"}):
            docker_client.images.remove(image.id, force=True)


def test_a_deployment_pushes_its_image_and_the_job_runs_the_pushed_reference(
    registry: Registry, pushing_daemon: Daemon
) -> None:
    result = pushing_daemon.rtd("submit", str(PROBE), check=True)
    assert "hostname-probe 1.0.0 is running" in result.stdout

    job = pushing_daemon.api("GET", "/lifecycle/api/v1/job/hostname-probe/1.0.0").json()
    image = job["image_tag"]
    repository, _, tag = image.rpartition(":")
    name = f"racetrackd-{pushing_daemon.instance}/job-hostname-probe"  # another instance than the default
    assert repository == f"{registry.address}/{name}"
    # In the registry: pulled from there by any other node.
    assert name in registry.get("/v2/_catalog").json()["repositories"]
    assert tag in registry.get(f"/v2/{name}/tags/list").json()["tags"]
    # The job's container runs that reference, and answers.
    (container,) = [c for c in pushing_daemon.containers() if c.labels.get("job-name") == "hostname-probe"]
    assert container.attrs["Config"]["Image"] == image
    answer = pushing_daemon.api("POST", "/pub/job/hostname-probe/1.0.0/api/v1/perform", json={})
    assert answer.status_code == 200, answer.text
    logs = pushing_daemon.api("GET", "/lifecycle/api/v1/job/hostname-probe/1.0.0/build-logs").json()["logs"]
    assert f"pushing {image}" in logs
    assert registry.password_file.read_text().strip() not in pushing_daemon.log_path.read_text()


def test_a_registry_that_is_gone_fails_the_deployment_naming_it(registry: Registry, pushing_daemon: Daemon) -> None:
    registry.container.stop(timeout=2)
    try:
        result = pushing_daemon.rtd("submit", "--force", str(PROBE))
    finally:
        registry.container.start()

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"pushing the image to the registry {registry.address} (RACETRACK_REGISTRY) failed" in output
    # The job that ran before keeps running its earlier image.
    answer = pushing_daemon.api("POST", "/pub/job/hostname-probe/1.0.0/api/v1/perform", json={})
    assert answer.status_code == 200, answer.text
