"""RACETRACK_REGISTRY: builds tag and push `<registry>/<image>:<tag>`, jobs run that reference, a
failed push fails the deployment naming the registry; the login the Docker adapter makes travels
with swarm service creates (X-Registry-Auth). tests/integration/test_registry.py pushes to a real
registry; tests/e2e/test_swarm_cluster.py pulls from it on other nodes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from flask import Flask

from racetrackd.db import Deployment, DeploymentStatus, Job
from racetrackd.deploy.building import DeploymentRecord, ImageBuilder
from racetrackd.deploy.deployer import Deployer
from racetrackd.docker.runtime import DockerRuntime, RegistryLogin
from racetrackd.errors import RacetrackError, SettingsError
from racetrackd.services import Services, registry_login
from racetrackd.settings import Settings
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import FakeRuntime, build_context, sample_manifest

API = "/lifecycle/api/v1"
REGISTRY = "10.0.0.5:5000/team"


def _deploy(app: Flask, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """POST /deploy of the sample python3 job, then carry the deployment out as the worker does."""
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    response = client.post(f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": build_context()})
    assert response.status_code == 201, response.get_data(as_text=True)
    services: Services = app.extensions["racetrackd"]
    deployer = Deployer(
        services.settings,
        runtime,
        services.plugins,
        services.addressing,
        services.accounts,
        ImageBuilder(services.settings, runtime, services.vault, "http://172.18.0.1:7102"),
    )
    monkeypatch.setattr(deployer, "_wait_until_ready", lambda *args, **kwargs: ("job:7000", args[-1]))  # ready at once
    deployment = Deployment.claim_next()
    assert deployment is not None
    deployer.run(deployment)
    return Deployment.get_by_id(deployment.id)


def test_with_a_registry_the_image_is_pushed_and_jobs_run_the_pushed_reference(
    make_app: Callable[..., Flask], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(REGISTRY=REGISTRY)

    deployment = _deploy(app, runtime, monkeypatch)

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    image = deployment.image_name
    assert image.startswith(f"{REGISTRY}/racetrackd/job-adder:0.0.1-")
    assert runtime.pushed == [image]
    job = Job.find("adder", "0.0.1")
    assert job is not None and job.image_name == image
    assert runtime.containers[job.container_name].image == image  # what a node pulls
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    logs = client.get(f"{API}/deploy/{deployment.id}/build-logs").get_json()["logs"]
    assert f"pushing {image}\n" in logs and f"{image}: pushed\n" in logs


def test_without_a_registry_nothing_is_pushed_and_the_local_name_is_kept(
    make_app: Callable[..., Flask], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _deploy(make_app(), runtime, monkeypatch)

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert deployment.image_name.startswith("racetrackd/job-adder:0.0.1-")
    assert runtime.calls_to("push_image") == []


def test_a_failed_push_fails_the_deployment_naming_the_registry_and_the_setting(
    make_app: Callable[..., Flask], runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.push_failure = "Get http://10.0.0.5:5000/v2/: dial tcp 10.0.0.5:5000: connect: connection refused"
    app = make_app(REGISTRY=REGISTRY)

    deployment = _deploy(app, runtime, monkeypatch)

    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.error.startswith(
        f"pushing the image to the registry {REGISTRY} (RACETRACK_REGISTRY) failed: pushing image {REGISTRY}/racetrackd/job-adder:"
    )
    assert "connection refused" in deployment.error
    assert Job.find("adder", "0.0.1") is None  # no job runs an image no node could pull
    assert runtime.containers == {}


# --- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["10.0.0.5:5000", "reg.example:5000/team", "registry.local", "localhost/a/b"])
def test_registry_references_docker_reads_as_a_registry_are_accepted(
    make_settings: Callable[..., Settings], value: str
) -> None:
    assert make_settings(REGISTRY=value + "/").registry == value


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://10.0.0.5:5000", "without a scheme"),
        ("team", "would be read as a Docker Hub account"),
        ("reg.example:5000/Team", "expected host[:port][/path]"),
        ("reg.example:5000/a//b", "expected host[:port][/path]"),
    ],
)
def test_registry_references_docker_would_misread_are_refused_naming_the_variable(
    make_settings: Callable[..., Settings], value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        make_settings(REGISTRY=value)

    assert "RACETRACK_REGISTRY" in raised.value.message and says in raised.value.message


def test_half_a_registry_login_is_refused_at_start(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")

    with pytest.raises(
        SettingsError, match="RACETRACK_REGISTRY_USERNAME is set without RACETRACK_REGISTRY_PASSWORD_FILE"
    ):
        make_settings(REGISTRY=REGISTRY, REGISTRY_USERNAME="ci")
    with pytest.raises(
        SettingsError, match="RACETRACK_REGISTRY_PASSWORD_FILE is set without RACETRACK_REGISTRY_USERNAME"
    ):
        make_settings(REGISTRY=REGISTRY, REGISTRY_PASSWORD_FILE=str(password_file))
    with pytest.raises(SettingsError, match="RACETRACK_REGISTRY_USERNAME is set without RACETRACK_REGISTRY$"):
        make_settings(REGISTRY_USERNAME="ci", REGISTRY_PASSWORD_FILE=str(password_file))
    with pytest.raises(SettingsError, match="does not exist"):
        make_settings(REGISTRY=REGISTRY, REGISTRY_USERNAME="ci", REGISTRY_PASSWORD_FILE=str(tmp_path / "missing"))


def test_the_login_is_to_the_registry_host_with_the_password_from_its_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    settings = make_settings(REGISTRY=REGISTRY, REGISTRY_USERNAME="ci", REGISTRY_PASSWORD_FILE=str(password_file))

    login = registry_login(settings)

    assert login == RegistryLogin("10.0.0.5:5000", "ci", password_file)
    assert login.password() == "s3cret"
    assert "s3cret" not in json.dumps(settings.as_environ())  # the file's name is passed on, never its content
    assert registry_login(make_settings(REGISTRY=REGISTRY)) is None


# --- the Docker adapter, over the real SDK with its HTTP calls captured -----------------------------


class _Engine:
    """What the Docker SDK sends: each POST's path, headers and JSON body; canned answers."""

    def __init__(self, push_output: list[dict[str, Any]] | None = None, login_status: int = 200) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.push_output = push_output or [{"status": "Pushed", "id": "abc"}, {"status": "0.0.1: digest: sha256:1"}]
        self.login_status = login_status

    def client(self, monkeypatch: pytest.MonkeyPatch) -> docker.DockerClient:
        client = docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.41")
        # No ~/.docker/config.json of the developer's: the SDK reads it when it has no auth yet.
        monkeypatch.setattr(docker.auth, "load_config", lambda *args, **kwargs: docker.auth.AuthConfig({}))
        monkeypatch.setattr(client.api, "_post_json", self._post_json)
        monkeypatch.setattr(client.api, "_post", self._post)
        monkeypatch.setattr(client.api, "_stream_helper", lambda response, decode=False: iter(self.push_output))
        return client

    def _post_json(self, url: str, data: Any, **kwargs: Any) -> Any:
        self.posts.append((url.split("/v1.41", 1)[-1], dict(kwargs.get("headers") or {}), data))
        if url.endswith("/auth") and self.login_status != 200:
            return _Response(self.login_status, {"message": "get http://10.0.0.5:5000/v2/: unauthorized"})
        return _Response(200 if url.endswith("/auth") else 201, {"ID": "service-id", "Status": "Login Succeeded"})

    def _post(self, url: str, **kwargs: Any) -> Any:
        self.posts.append((url.split("/v1.41", 1)[-1], dict(kwargs.get("headers") or {}), kwargs.get("params")))
        return _Response(200, {})

    def auth_header(self, path_end: str) -> dict[str, str]:
        headers = [headers for path, headers, _ in self.posts if path.endswith(path_end)]
        assert headers, f"no POST to {path_end}: {[path for path, _, _ in self.posts]}"
        assert "X-Registry-Auth" in headers[-1], (path_end, self.posts)
        decoded: dict[str, str] = json.loads(base64.urlsafe_b64decode(headers[-1]["X-Registry-Auth"]))
        return decoded


class _Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.body = body
        self.headers: dict[str, str] = {}

    def json(self) -> dict[str, Any]:
        return self.body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests

            error = requests.HTTPError(f"{self.status_code} error")
            error.response = self  # type: ignore[assignment]
            raise error

    @property
    def text(self) -> str:
        return json.dumps(self.body)

    @property
    def reason(self) -> str:
        return "unauthorized" if self.status_code == 401 else "ok"

    @property
    def url(self) -> str:
        return "http://127.0.0.1:9/v1.41/auth"


def _login(tmp_path: Path) -> RegistryLogin:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    return RegistryLogin("10.0.0.5:5000", "ci", password_file)


def test_the_login_travels_with_pushes_and_swarm_service_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _Engine()
    client = engine.client(monkeypatch)
    runtime = DockerRuntime(lambda: client, registry_login=_login(tmp_path))
    lines: list[str] = []

    runtime.push_image("10.0.0.5:5000/team/racetrackd/job-adder:0.0.1-1a2b3c4d", lines.append)
    # What a swarm backend does with the same client: the other nodes pull with these credentials.
    # (services.create and update_service both go through these headers; create then inspects, which this fake skips)
    image = "10.0.0.5:5000/team/racetrackd/job-adder:0.0.1-1a2b3c4d"
    client.api.create_service(docker.types.TaskTemplate(docker.types.ContainerSpec(image)), name="job-adder")

    login_body = next(body for path, _, body in engine.posts if path.endswith("/auth"))
    assert login_body == {"username": "ci", "password": "s3cret", "email": None, "serveraddress": "10.0.0.5:5000"}
    assert engine.auth_header("/images/10.0.0.5:5000/team/racetrackd/job-adder/push")["username"] == "ci"
    service_auth = engine.auth_header("/services/create")
    assert (service_auth["username"], service_auth["password"]) == ("ci", "s3cret")
    assert lines == ["abc: Pushed\n", "0.0.1: digest: sha256:1\n"]


def test_a_refused_push_is_an_error_quoting_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _Engine(
        push_output=[{"status": "Preparing", "id": "abc"}, {"error": "unauthorized: authentication required"}]
    )
    runtime = DockerRuntime(lambda: engine.client(monkeypatch))

    with pytest.raises(RacetrackError) as raised:
        runtime.push_image("10.0.0.5:5000/racetrackd/job-adder:0.0.1-1a2b3c4d", lambda line: None)

    assert raised.value.message == (
        "pushing image 10.0.0.5:5000/racetrackd/job-adder:0.0.1-1a2b3c4d: unauthorized: authentication required"
    )


def test_a_registry_down_at_start_does_not_stop_the_engine_client_and_the_push_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _Engine(login_status=401)
    runtime = DockerRuntime(lambda: engine.client(monkeypatch), registry_login=_login(tmp_path))

    assert runtime.image_exists is not None and runtime._client is not None  # the client is made all the same
    assert "cannot log in to registry 10.0.0.5:5000 yet" in caplog.text
    with pytest.raises(RacetrackError) as raised:
        runtime.push_image("10.0.0.5:5000/racetrackd/job-adder:1", lambda line: None)

    assert raised.value.message.startswith("logging in to registry 10.0.0.5:5000 as ci:")
    assert "s3cret" not in caplog.text and "s3cret" not in raised.value.message
    assert not [path for path, _, _ in engine.posts if path.endswith("/push")]


def test_the_builder_tags_the_registry_reference_and_reports_the_push(
    make_settings: Callable[..., Settings], runtime: FakeRuntime, tmp_path: Path
) -> None:
    from jobmanifest import validate_manifest
    from racetrackd.auth.vault import Vault
    from racetrackd.db import open_database
    from racetrackd.deploy import jobsecrets
    from racetrackd.plugins.jobtypes import discover
    from racetrackd.settings import BUILTIN_PLUGINS_DIR
    from tests.unit.fakes import write_job

    settings = make_settings(REGISTRY="localhost:5000")
    open_database(settings.database_path)
    builder = ImageBuilder(settings, runtime, Vault(b"k" * 32), "http://172.18.0.1:7102")
    job_dir = write_job(tmp_path / "job", {"entrypoint.py": "class J:\n    def perform(self):\n        return 1\n"})
    manifest = validate_manifest(sample_manifest())
    deployment = Deployment.create(job_name="adder", job_version="0.0.1", manifest_yaml=manifest.yaml)
    job_type = next(jt for jt in discover([BUILTIN_PLUGINS_DIR]) if jt.name == "python3")

    result = builder.build(
        manifest, job_type, job_dir, jobsecrets.NONE, deployment_id=deployment.id, report=DeploymentRecord(deployment)
    )

    assert result.image.startswith("localhost:5000/racetrackd/job-adder:0.0.1-")
    assert [args[1] for args in runtime.calls_to("build_image")] == [result.image]
    assert runtime.pushed == [result.image]
