"""racetrackd on a server with docker-compose, the way README "Install on a server" tells a user.

The repo's docker-compose.yml builds the racetrackd image and runs it against the real Docker
engine; rtd deploys jobs through the published port; then the daemon is taken down and brought
back (`down` + `up`, and a replaced container) while its jobs keep serving. Everything gets names
of its own (project, network, volume, container, instance, port) through the env file, so nothing
collides with the host's own racetrackd (network `racetrack`, port 7102) or another test run.
The image keeps one tag between runs, so its layers stay cached.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import yaml

from tests.integration.conftest import (
    FIXTURES,
    REPO,
    Daemon,
    _remove_labelled,
    remove_networks,
)
from tests.integration.test_auth import wait_for, wait_until_served
from tests.launcher import HOST_CA_BUNDLE, free_port

pytestmark = pytest.mark.integration

COMPOSE_FILE = REPO / "docker-compose.yml"
IMAGE = "racetrackd/racetrackd:e2e-test"  # one tag for every run: the next build reuses its layers
ADDER = REPO / "samples" / "adder"
ADDER_PERFORM = "/pub/job/adder/latest/api/v1/perform"
READY_TIMEOUT = 120


def compose_command() -> list[str]:
    """docker-compose (v1, Debian's) or `docker compose` (v2); a missing one fails CI, never skips there."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    message = "neither docker-compose nor `docker compose` is installed (scripts/setup-host.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _compose_env() -> dict[str, str]:
    """This process's environment without settings of the developer's own: the env file decides them
    (compose lets the shell's variables win over the env file)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RACETRACK_", "RACETRACKD_", "RTD_", "COMPOSE_"))}


@dataclasses.dataclass
class Stack:
    """One compose project of racetrackd, named apart from everything else on the engine."""

    command: list[str]
    env_file: Path
    name: str  # the project, the container, the network and the volume all carry it
    port: int
    docker: docker.DockerClient
    daemon: Daemon | None = None

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.command, "--env-file", str(self.env_file), "-f", str(COMPOSE_FILE), *args],
            cwd=REPO,
            env=_compose_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def container(self) -> Any:
        return self.docker.containers.get(self.name)

    def wait_ready(self) -> None:
        def ready() -> bool:
            try:
                return requests.get(self.url + "/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        if not wait_for(ready, timeout=READY_TIMEOUT, interval=0.5):
            raise AssertionError(f"racetrackd never answered /ready:\n{self.logs()}")

    def admin_token(self) -> str:
        """As the README says to get it: from inside the daemon's container."""
        return self.compose("exec", "-T", "racetrackd", "racetrackd", "admin-token").stdout.strip()

    def logs(self) -> str:
        try:
            return str(self.container().logs(tail=60).decode(errors="replace"))
        except docker.errors.NotFound:
            return "(no racetrackd container)"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, base_image: str
) -> Iterator[Stack]:
    command = compose_command()
    # The image installs its Python dependencies from wheels made here: no package index in the build.
    wheels = subprocess.run(
        [str(REPO / "scripts" / "build-wheels.sh")], cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    assert wheels.returncode == 0, f"scripts/build-wheels.sh failed:\n{wheels.stderr}"
    directory = tmp_path_factory.mktemp("compose")
    name = f"rtd-e2e-{uuid.uuid4().hex[:8]}"
    stack = Stack(command, directory / "racetrackd.env", name, free_port(), docker_client)
    settings = {
        "COMPOSE_PROJECT_NAME": name,
        "RACETRACKD_IMAGE": IMAGE,
        "RACETRACKD_BASE_IMAGE": base_image,
        "RACETRACKD_CONTAINER_NAME": name,
        "RACETRACKD_VOLUME": f"{name}-data",
        "RACETRACKD_BIND_ADDRESS": "127.0.0.1",
        "RACETRACKD_ENV_FILE": str(stack.env_file),
        "RACETRACK_PORT": str(stack.port),
        "RACETRACK_NETWORK": name,
        "RACETRACK_INSTANCE": name.replace("rtd-e2e-", "e2e-"),
        "RACETRACK_PYTHON_BASE_IMAGE": base_image,
        "RACETRACK_SUPERVISOR_INTERVAL": "1",
        "RACETRACK_AUTH_FAILURE_LIMIT": "10000",
    }
    if HOST_CA_BUNDLE.is_file():  # the corporate-proxy case: job builds trust the host's CAs
        settings["RACETRACK_BUILD_CA_BUNDLE"] = str(HOST_CA_BUNDLE)
    stack.env_file.write_text(env_file_from_example(settings))
    instance = settings["RACETRACK_INSTANCE"]
    previous_image = _image_id(docker_client, IMAGE)
    docker_client.networks.create(name, driver="bridge")  # README: created once, outside the project
    try:
        stack.compose("up", "-d", "--build")
        stack.wait_ready()
        stack.daemon = Daemon(
            stack.url, stack.admin_token(), instance, directory, directory / "unused.log", docker_client
        )
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        _remove_labelled(docker_client, instance)
        remove_networks(docker_client, name)
        if previous_image and previous_image != _image_id(docker_client, IMAGE):
            try:  # the image the last run built, now untagged: ours, and no longer useful
                docker_client.images.remove(previous_image)
            except docker.errors.APIError:
                pass


def env_file_from_example(settings: dict[str, str]) -> str:
    """.env.example with `settings` in place of its values (and added when it has no line for them),
    as a user makes .env: so the example itself is what runs here."""
    lines, unset = [], dict(settings)
    for line in (REPO / ".env.example").read_text().splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={unset.pop(key)}" if not line.startswith("#") and key in unset else line)
    return "\n".join([*lines, *(f"{key}={value}" for key, value in unset.items())]) + "\n"


def _image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        return None


def daemon_of(stack: Stack) -> Daemon:
    assert stack.daemon is not None
    return stack.daemon


def job_container(stack: Stack, name: str) -> Any:
    return next(c for c in daemon_of(stack).containers() if c.labels.get("job-name") == name)


def call_directly(stack: Stack, name: str, version: str, payload: dict[str, Any]) -> requests.Response:
    """Call a job at its own address on the shared network, past the daemon (the host routes to it)."""
    container = job_container(stack, name)
    address = container.attrs["NetworkSettings"]["Networks"][stack.name]["IPAddress"]
    return requests.post(f"http://{address}:7000/pub/job/{name}/{version}/api/v1/perform", json=payload, timeout=10)


def started(container: Any) -> tuple[str, str, int]:
    container.reload()
    return container.id, container.attrs["State"]["StartedAt"], container.attrs["RestartCount"]


def test_the_example_settings_give_what_the_readme_promises() -> None:
    """`cp .env.example .env` as it stands: the names a newcomer's install gets."""
    env = {**_compose_env(), "RACETRACKD_ENV_FILE": str(REPO / ".env.example")}  # no .env in a fresh clone
    result = subprocess.run(
        [*compose_command(), "--env-file", str(REPO / ".env.example"), "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    config = yaml.safe_load(result.stdout)
    service = config["services"]["racetrackd"]
    assert service["container_name"] == "racetrackd"
    assert service["image"] == "racetrackd/racetrackd:latest"
    assert service["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"
    assert service["restart"] == "unless-stopped"
    assert "7102:7102" in str(service["ports"]) or "'published': '7102'" in str(service["ports"])
    assert {
        key: service["environment"][key]
        for key in ("RACETRACK_HOST", "RACETRACK_PORT", "RACETRACK_NETWORK", "RACETRACK_DATA_DIR", "RACETRACK_INSTANCE")
    } == {
        "RACETRACK_HOST": "0.0.0.0",
        "RACETRACK_PORT": "7102",
        "RACETRACK_NETWORK": "racetrack",
        "RACETRACK_DATA_DIR": "/var/lib/racetrackd",
        "RACETRACK_INSTANCE": "main",
    }
    assert config["networks"]["racetrack"]["name"] == "racetrack"
    assert config["networks"]["racetrack"]["external"] in (True, {"name": "racetrack"})
    assert config["volumes"]["data"]["name"] == "racetrackd-data"
    assert "/var/run/docker.sock" in str(service["volumes"])


@pytest.fixture(scope="module")
def adder(stack: Stack) -> Daemon:
    daemon = daemon_of(stack)
    daemon.rtd("submit", str(ADDER), check=True)
    wait_until_served(daemon, ADDER_PERFORM, {"a": 40, "b": 2})
    return daemon


def test_compose_up_builds_racetrackd_and_serves_a_job_deployed_with_rtd_on_the_published_port(
    stack: Stack, adder: Daemon
) -> None:
    answer = requests.post(
        stack.url + ADDER_PERFORM, json={"a": 40, "b": 2}, headers={"X-Racetrack-Auth": adder.token}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == 42

    # Reached by container name on the shared network: nothing of the job is published on the host.
    job = adder.api("GET", "/lifecycle/api/v1/job/adder/0.0.1").json()
    container = job_container(stack, "adder")
    assert job["internal_name"] == f"{container.name}:7000"
    assert not container.attrs["HostConfig"]["PortBindings"]
    assert stack.name in container.attrs["NetworkSettings"]["Networks"]

    # The image's health check (python, GET /ready) passes.
    def health() -> str:
        daemon_container = stack.container()
        return str(daemon_container.attrs["State"].get("Health", {}).get("Status"))

    assert wait_for(lambda: health() == "healthy", timeout=120, interval=2), f"health: {health()}"


def test_a_job_calls_another_through_the_daemon_container_by_name(stack: Stack, adder: Daemon) -> None:
    adder.rtd("submit", str(FIXTURES / "chain"), check=True)
    adder.rtd("grant", "add", "job_family:chain", "call_job", "--job", "adder", check=True)
    wait_until_served(adder, "/pub/job/chain/latest/api/v1/perform", {"a": 40, "b": 2})

    answer = adder.api("POST", "/pub/job/chain/latest/api/v1/perform", json={"a": 40, "b": 2})

    assert answer.status_code == 200, answer.text
    assert answer.json()["answer"] == 42
    env = job_container(stack, "chain").attrs["Config"]["Env"]
    assert f"PUB_URL=http://{stack.name}:{stack.port}/pub" in env


def test_a_build_fetches_its_secrets_from_the_daemon_container_and_packages_through_the_ca_bundle(
    stack: Stack, adder: Daemon, tmp_path: Path
) -> None:
    job_dir = tmp_path / "with-requirements"
    shutil.copytree(FIXTURES / "with-requirements", job_dir)
    with (job_dir / "job.yaml").open("a") as manifest:
        manifest.write("secret_build_env_file: secret-build.env\n")
    # Any secret build env makes the requirements step fetch it from the daemon while it runs
    # (RUN steps use the host's network; the daemon is a container on the jobs' network).
    (job_dir / "secret-build.env").write_text("E2E_BUILD_SECRET=only-for-the-build\n")

    adder.rtd("submit", str(job_dir), check=True)
    wait_until_served(adder, "/pub/job/with-requirements/latest/api/v1/perform")

    answer = adder.api("POST", "/pub/job/with-requirements/latest/api/v1/perform", json={})
    assert answer.json() == "1.16.0"  # six, installed from the package index during the build
    build_log = adder.rtd("build-logs", "with-requirements", check=True).stdout
    assert "with-build-secrets.py" in build_log
    assert "cannot fetch the secret build env" not in build_log


def test_down_and_up_again_keeps_the_jobs_their_containers_and_the_data(stack: Stack, adder: Daemon) -> None:
    before = started(job_container(stack, "adder"))
    token = stack.admin_token()

    stack.compose("down")
    with pytest.raises(docker.errors.NotFound):
        stack.container()
    assert call_directly(stack, "adder", "0.0.1", {"a": 1, "b": 2}).json() == 3  # still serving, daemon gone
    stack.compose("up", "-d")
    stack.wait_ready()

    assert stack.admin_token() == token  # the data volume came back: same registry, same generated token
    listed = adder.rtd("list", "--json", check=True).stdout
    assert '"adder"' in listed
    wait_until_served(adder, ADDER_PERFORM, {"a": 40, "b": 2})
    assert adder.api("POST", ADDER_PERFORM, json={"a": 40, "b": 2}).json() == 42
    deployments = adder.api("GET", "/lifecycle/api/v1/deploy?job_name=adder").json()
    assert any(d["status"] == "done" for d in deployments)
    assert started(job_container(stack, "adder")) == before  # never restarted, never redeployed


def test_the_daemon_container_is_replaced_while_a_job_keeps_answering(stack: Stack, adder: Daemon) -> None:
    old_daemon = stack.container().id
    job_before = started(job_container(stack, "adder"))
    answers: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def keep_calling() -> None:
        deadline = time.monotonic() + 600
        while not done.is_set() and time.monotonic() < deadline:
            try:
                response = call_directly(stack, "adder", "0.0.1", {"a": 40, "b": 2})
                if response.json() == 42:
                    answers.append(response.status_code)
                else:
                    failures.append(response.text)
            except (requests.RequestException, ValueError) as exc:
                failures.append(repr(exc))
            time.sleep(0.1)

    caller = threading.Thread(target=keep_calling, daemon=True)
    caller.start()
    try:
        stack.compose("stop")
        with pytest.raises(requests.ConnectionError):
            requests.get(stack.url + "/ready", timeout=5)
        calls_while_down = len(answers)
        assert wait_for(lambda: len(answers) > calls_while_down + 5, timeout=30), failures[-3:]
        stack.compose("up", "-d", "--force-recreate")
        stack.wait_ready()
        wait_until_served(adder, ADDER_PERFORM, {"a": 40, "b": 2})
    finally:
        done.set()
        caller.join(timeout=30)

    assert stack.container().id != old_daemon
    assert failures == []
    assert answers
    assert started(job_container(stack, "adder")) == job_before
    assert adder.api("POST", ADDER_PERFORM, json={"a": 40, "b": 2}).json() == 42
