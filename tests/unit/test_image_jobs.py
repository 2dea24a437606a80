"""Jobs from an existing image (the docker-image job type) without Docker: the manifest's image
reference, the job type as plugins load it, the deploy request (manifest only, registry
credentials), the deployment (resolve, pull, pin, record) on a FakeRuntime, rollback's image, and
image pruning that never removes a user's image. End to end: tests/integration/test_image_jobs.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from cli.main import main
from jobmanifest import ManifestInvalid, validate_manifest
from pluginbundle import PluginInvalid, parse_manifest
from racetrackd.app import create_app
from racetrackd.db import Deployment, DeploymentStatus, Job, open_database
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.building import ImageBuilder
from racetrackd.deploy.deployer import Deployer
from racetrackd.deploy.imagejobs import default_pull_policy, registry_of, repository_of
from racetrackd.deploy.releases import request_rollback
from racetrackd.docker.images import prune_job_images
from racetrackd.docker.orchestrator import SWARM, Node, Orchestrator
from racetrackd.errors import JobStartError, ManifestError
from racetrackd.jobs.containers import ContainerReplicas
from racetrackd.plugins.jobtypes import FORWARD, JobType, Serving, check_extra, discover, load_job_types, resolve
from racetrackd.services import build_services
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import FakeDaemon, FakeRuntime, build_context, sample_manifest
from tests.unit.test_dashboard import browser, csrf_of, page_text

DEPLOY = "/lifecycle/api/v1/deploy"
IMAGE = "registry.example/team/svc:1.4"
DIGEST = "sha256:" + "ab" * 32


def docker_image() -> JobType:
    return resolve("docker-image:latest", discover([BUILTIN_PLUGINS_DIR]))


def image_manifest(image: str = IMAGE, **extra: Any) -> dict[str, Any]:
    return sample_manifest(
        name="svc", version="1.0.0", jobtype="docker-image:latest", jobtype_extra={"image": image, **extra}
    )


# --- the manifest and the job type ------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        IMAGE,
        "svc",
        "localhost:5000/team/svc:latest",
        f"registry.example/team/svc@{DIGEST}",
        f"registry.example/team/svc:1.4@{DIGEST}",
        "[::1]:5000/svc:1",
    ],
)
def test_image_references_docker_accepts_pass_the_schema(image: str) -> None:
    assert validate_manifest(image_manifest(image)).jobtype_extra["image"] == image


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("Team/Svc:1.4", "is not an image reference like registry.example/team/svc:1.4"),
        ("svc:", "is not an image reference"),
        ("svc:1.4 --privileged", "is not an image reference"),
        ("-svc", "is not an image reference"),
        ("svc@sha256:abc", "is not an image reference"),
        (f"svc@sha512:{'a' * 128}", "a pinned image names its digest as sha256: and 64 lower-case hex digits"),
    ],
)
def test_a_bad_image_reference_is_refused_naming_the_field(image: str, message: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        validate_manifest(image_manifest(image))

    assert [(error.path, message in error.message) for error in caught.value.errors] == [("jobtype_extra.image", True)]


def test_docker_image_is_built_in_and_serves_like_docker_proxy() -> None:
    job_type = docker_image()

    assert job_type.image_from_manifest is not None and job_type.image_from_manifest.field == "image"
    assert job_type.dockerfile_template == "" and job_type.job_dockerfile is None
    assert job_type.serving_for({"image": IMAGE}) == Serving(port=7001, path_mode=FORWARD, probe_path=None)
    assert job_type.serving_for({"image": IMAGE, "user_module_port": 8080, "probe_path": "/healthz"}) == Serving(
        8080, FORWARD, "/healthz"
    )


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({}, "jobtype_extra.image: required by job type docker-image"),
        ({"image": 14}, "jobtype_extra.image: must be a string"),
        ({"image": "team/Svc"}, "jobtype_extra.image: 'team/Svc' is not an image reference"),
        ({"image": IMAGE, "dockerfile_path": "Dockerfile"}, "jobtype_extra.dockerfile_path: not a setting"),
    ],
)
def test_the_daemon_checks_jobtype_extra_naming_the_field(extra: dict[str, Any], error: str) -> None:
    with pytest.raises(ManifestError, match=error.replace("(", r"\(")):
        check_extra(docker_image(), extra)


def test_a_plugin_whose_image_field_is_not_a_required_string_is_broken(tmp_path: Path) -> None:
    manifest = parse_manifest(
        "name: images\nversion: 1.0.0\ncategory: job-type\njob_types:\n  prebuilt:\n"
        "    image_from_manifest: {field: image}\n    extra_fields:\n      image: {type: string}\n"
    )

    with pytest.raises(PluginInvalid, match=r"image_from_manifest.field: 'image' must be one of .*required"):
        load_job_types(tmp_path, manifest)


@pytest.mark.parametrize(
    ("reference", "registry", "repository"),
    [
        (IMAGE, "registry.example", "registry.example/team/svc"),
        ("python:3.11", "docker.io", "python"),
        ("team/svc", "docker.io", "team/svc"),
        ("localhost:5000/svc:1", "localhost:5000", "localhost:5000/svc"),
        (f"localhost/svc@{DIGEST}", "localhost", "localhost/svc"),
    ],
)
def test_the_registry_and_repository_of_a_reference(reference: str, registry: str, repository: str) -> None:
    assert (registry_of(reference), repository_of(reference)) == (registry, repository)


# --- pruning: racetrackd's tags only ----------------------------------------------------------------


def test_pruning_a_job_never_removes_a_users_image_that_inherited_its_labels(runtime: FakeRuntime) -> None:
    labels = {"racetrackd.instance": "main", "job-name": "svc", "job-version": "1.0.0"}
    runtime.images["racetrackd/job-svc:1.0.0-aaaaaaaa"] = dict(labels)
    # built by a user FROM the job's image: Docker copies the labels into it
    runtime.images["team/svc-debug:1"] = dict(labels)
    runtime.images["racetrackd/job-svc:1.0.0-bbbbbbbb"] = dict(labels)

    prune_job_images(runtime, "main", "svc", "1.0.0", keep=0)

    assert list(runtime.images) == ["team/svc-debug:1"]


def test_pruning_removes_racetrackds_tags_pushed_to_the_registry_and_only_those(runtime: FakeRuntime) -> None:
    """With RACETRACK_REGISTRY the pins (and built images) are named in the registry: they are
    racetrackd's own all the same, so old releases go, while a user's image in that registry stays."""
    labels = {"racetrackd.instance": "main", "job-name": "svc", "job-version": "1.0.0"}
    runtime.images["reg.lab:5000/team/racetrackd/job-svc:1.0.0-aaaaaaaa"] = dict(labels)
    runtime.images["reg.lab:5000/team/svc-debug:1"] = dict(labels)  # a user's, FROM the job's image
    runtime.images["team/racetrackd/job-svc:1"] = dict(labels)  # Docker Hub's `team`: no registry of ours
    runtime.images["reg.lab:5000/racetrackd/job-svc:1.0.0-bbbbbbbb"] = dict(labels)

    prune_job_images(runtime, "main", "svc", "1.0.0", keep=0)

    assert sorted(runtime.images) == ["reg.lab:5000/team/svc-debug:1", "team/racetrackd/job-svc:1"]


# --- the deploy request -----------------------------------------------------------------------------


def test_an_image_job_is_deployed_from_its_manifest_alone(client: FlaskClient) -> None:
    response = client.post(DEPLOY, json={"manifest": image_manifest()})

    assert response.status_code in (200, 201, 202), response.get_json()
    assert Deployment.get().build_context_path is None


def test_an_upload_sent_with_an_image_job_is_not_kept(client: FlaskClient) -> None:
    response = client.post(DEPLOY, json={"manifest": image_manifest(), "build_context": build_context()})

    assert response.status_code in (200, 201, 202), response.get_json()
    assert Deployment.get().build_context_path is None


def test_registry_credentials_are_refused_for_a_job_that_builds(client: FlaskClient) -> None:
    response = client.post(
        DEPLOY,
        json={"manifest": sample_manifest(), "registry_credentials": {"username": "ci", "password": "pw-123456"}},
    )

    assert response.status_code == 400
    assert response.get_json()["error"].startswith("registry_credentials: only docker-image jobs pull an image")


def test_registry_credentials_must_be_a_username_and_a_password(client: FlaskClient) -> None:
    response = client.post(DEPLOY, json={"manifest": image_manifest(), "registry_credentials": {"username": "ci"}})

    assert response.status_code == 400
    assert response.get_json()["error"].startswith("registry_credentials: must be")


# --- the deployment (FakeRuntime) -------------------------------------------------------------------


def _deployer(app: Flask) -> Deployer:
    services = app.extensions["racetrackd"]
    deployer = Deployer(
        services.settings,
        services.runtime,
        services.plugins,
        services.addressing,
        services.accounts,
        ImageBuilder(services.settings, services.runtime, services.vault, "http://172.18.0.1:7102"),
    )
    deployer._wait_until_ready = lambda *args: ("job:7000", args[-1])  # type: ignore[method-assign]  # ready at once
    return deployer


def _deploy(app: Flask, client: FlaskClient, body: dict[str, Any]) -> Deployment:
    response = client.post(DEPLOY, json=body)
    assert response.status_code in (200, 201, 202), response.get_json()
    deployment = Deployment.get_by_id(response.get_json()["id"])
    _deployer(app).run(deployment)
    return Deployment.get_by_id(deployment.id)


def test_a_missing_image_is_pulled_with_the_credentials_sent_and_its_digest_recorded(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.registry = {IMAGE}
    runtime.repo_digests[IMAGE] = (f"registry.example/team/svc@{DIGEST}",)
    runtime.image_ids[IMAGE] = "sha256:" + "11" * 32
    credentials = {"username": "ci", "password": "registry-pa55word"}

    deployment = _deploy(app, client, {"manifest": image_manifest(), "registry_credentials": credentials})

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert runtime.calls_to("pull_image") == [(IMAGE, credentials)]
    assert deployment.source_image_info() == {
        "reference": IMAGE,
        "image_id": "sha256:" + "11" * 32,
        "digest": f"registry.example/team/svc@{DIGEST}",
    }
    # nothing is built but a label-only image over the exact image, under racetrackd's own tag
    (dockerfile, tag, labels, *_), *others = runtime.calls_to("build_image")
    assert not others and tag == deployment.image_name and tag.startswith("racetrackd/job-svc:1.0.0-")
    assert b"FROM sha256:" + b"11" * 32 + b"\n" in runtime.contexts[tag][1]
    assert labels["job-name"] == "svc" and labels["racetrackd.source-image"] == IMAGE
    assert [spec.image for spec in runtime.containers.values()] == [tag]
    # the password: sealed with the deployment, never in its log or its JSON
    assert "registry-pa55word" not in deployment.build_logs_since(0)[0]
    assert "registry-pa55word" not in (deployment.secrets or "")
    shown = client.get(f"{DEPLOY}/{deployment.id}").get_json()
    assert "registry-pa55word" not in json.dumps(shown)
    assert shown["source_image"]["digest"] == f"registry.example/team/svc@{DIGEST}"
    job = client.get("/lifecycle/api/v1/job/svc/1.0.0").get_json()
    assert job["source_image"]["digest"] == f"registry.example/team/svc@{DIGEST}"


def test_an_image_the_engine_has_is_used_without_a_pull(app: Flask, client: FlaskClient, runtime: FakeRuntime) -> None:
    runtime.images[IMAGE] = {}

    deployment = _deploy(app, client, {"manifest": image_manifest()})

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert runtime.calls_to("pull_image") == []
    assert deployment.source_image_info()["digest"] is None  # type: ignore[index]


def test_an_image_neither_present_nor_pullable_fails_naming_the_field_and_the_image(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.registry = set()

    deployment = _deploy(app, client, {"manifest": image_manifest()})

    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.error.startswith(
        f"jobtype_extra.image: image {IMAGE} is not in the Docker engine and could not be pulled: "
    )
    assert Job.find("svc", "1.0.0") is None and runtime.calls_to("build_image") == []


def test_a_failed_start_removes_racetrackds_tag_not_the_users_image(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.images[IMAGE] = {}
    deployer = _deployer(app)

    def crash(*args: Any) -> None:
        raise JobStartError("the job's container exited (code 1)")

    deployer._wait_until_ready = crash  # type: ignore[method-assign]
    response = client.post(DEPLOY, json={"manifest": image_manifest()})
    deployment = Deployment.get_by_id(response.get_json()["id"])
    deployer.run(deployment)

    assert Deployment.get_by_id(deployment.id).status == DeploymentStatus.FAILED
    assert IMAGE in runtime.images
    assert [ref for ref in runtime.images if ref.startswith("racetrackd/")] == []


def test_a_rollback_takes_the_earlier_releases_pinned_image_and_its_digest(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.images[IMAGE] = {}
    runtime.image_ids[IMAGE] = "sha256:" + "01" * 32
    first = _deploy(app, client, {"manifest": image_manifest()})
    runtime.images[IMAGE] = {}
    runtime.image_ids[IMAGE] = "sha256:" + "02" * 32  # the tag moved
    second = _deploy(app, client, {"manifest": image_manifest(), "force": True})
    assert second.source_image_info()["image_id"] == "sha256:" + "02" * 32  # type: ignore[index]

    rollback = request_rollback(runtime, "svc", "1.0.0", None, "admin")

    assert rollback.image_name == first.image_name != second.image_name
    assert rollback.source_image_info() == first.source_image_info()


REGISTRY = "reg.lab:5000"


def test_with_a_registry_the_pin_is_pushed_there_and_every_release_runs_the_pushed_reference(
    make_app: Callable[..., Flask], runtime: FakeRuntime
) -> None:
    """On a multi-node swarm an image built on the manager (`docker build -t svc .`) exists there only:
    the pin goes to RACETRACK_REGISTRY under racetrackd's name, as a built image does, and a rollback
    re-runs that exact pushed pin even after the user's tag moved."""
    app = make_app(REGISTRY=REGISTRY)
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    runtime.images[IMAGE] = {}
    runtime.image_ids[IMAGE] = "sha256:" + "01" * 32

    first = _deploy(app, client, {"manifest": image_manifest()})

    assert first.status == DeploymentStatus.DONE, first.error
    assert first.image_name.startswith(f"{REGISTRY}/racetrackd/job-svc:1.0.0-")
    assert runtime.pushed == [first.image_name]  # the pin only: the user's own tag is not pushed anywhere
    assert [spec.image for spec in runtime.containers.values()] == [first.image_name]
    assert f"pushing {first.image_name}" in first.build_logs_since(0)[0]
    assert first.source_image_info()["image_id"] == "sha256:" + "01" * 32  # type: ignore[index]
    job = client.get("/lifecycle/api/v1/job/svc/1.0.0").get_json()
    assert job["image_tag"] == first.image_name  # what `rtd status` and the API show the release runs

    runtime.image_ids[IMAGE] = "sha256:" + "02" * 32  # the user's tag moved
    second = _deploy(app, client, {"manifest": image_manifest(), "force": True})
    rollback = request_rollback(runtime, "svc", "1.0.0", None, "admin")

    assert runtime.pushed == [first.image_name, second.image_name]
    assert rollback.image_name == first.image_name != second.image_name


def test_a_failed_push_of_the_pin_fails_the_deployment_naming_the_registry_and_keeps_the_users_image(
    make_app: Callable[..., Flask], runtime: FakeRuntime
) -> None:
    app = make_app(REGISTRY=REGISTRY)
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    runtime.images[IMAGE] = {}
    runtime.push_failure = "unauthorized: authentication required"

    deployment = _deploy(app, client, {"manifest": image_manifest()})

    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.error.startswith(f"pushing the image to the registry {REGISTRY} (RACETRACK_REGISTRY) failed: "), (
        deployment.error
    )
    assert "unauthorized: authentication required" in deployment.error
    assert Job.find("svc", "1.0.0") is None and runtime.containers == {}
    assert IMAGE in runtime.images and [ref for ref in runtime.images if "racetrackd/job-svc" in ref] == []


class _SwarmOfNodes:
    """The FakeRuntime's containers behind the seam, reporting itself a swarm of these nodes."""

    kind = SWARM

    def __init__(self, inner: Orchestrator, nodes: list[Node]) -> None:
        self._inner = inner
        self._nodes = nodes

    def nodes(self) -> list[Node]:
        return self._nodes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _node(hostname: str, role: str = "worker", state: str = "ready", availability: str = "active") -> Node:
    return Node(hostname=hostname, role=role, state=state, availability=availability, address="10.0.0.1")


@pytest.fixture
def swarm_mode_app(make_settings: Callable[..., Settings], runtime: FakeRuntime) -> Flask:
    """An app in swarm mode (placement_constraints are accepted); each test gives the deployer its nodes."""
    app = create_app(services=build_services(make_settings(orchestrator="swarm"), runtime))
    app.testing = True
    return app


def _deploy_on_swarm(app: Flask, nodes: list[Node], body: dict[str, Any]) -> Deployment:
    client = app.test_client()
    client.environ_base["HTTP_X_RACETRACK_AUTH"] = ADMIN_TOKEN
    response = client.post(DEPLOY, json=body)
    assert response.status_code in (200, 201, 202), response.get_json()
    deployer = _deployer(app)
    # the FakeRuntime's containers behind the seam, as a swarm of `nodes`
    inner = ContainerReplicas(app.extensions["racetrackd"].runtime, app.extensions["racetrackd"].addressing)
    deployer.orchestrator = _SwarmOfNodes(inner, nodes)  # type: ignore[assignment]
    deployment = Deployment.get_by_id(response.get_json()["id"])
    deployer.run(deployment)
    return Deployment.get_by_id(deployment.id)


def test_without_a_registry_a_multi_node_swarm_refuses_the_deployment_before_any_pull_naming_the_setting(
    swarm_mode_app: Flask, runtime: FakeRuntime
) -> None:
    runtime.registry = {IMAGE}
    nodes = [_node("manager", role="manager"), _node("worker-1"), _node("worker-2")]

    deployment = _deploy_on_swarm(swarm_mode_app, nodes, {"manifest": image_manifest()})

    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.error.startswith(
        "RACETRACK_REGISTRY is not set, and 3 swarm nodes may run this job (manager, worker-1, worker-2): "
    ), deployment.error
    assert 'placement_constraints: ["node.role == manager"]' in deployment.error
    assert runtime.calls_to("pull_image") == [] and runtime.calls_to("build_image") == []
    assert Job.find("svc", "1.0.0") is None


@pytest.mark.parametrize(
    ("nodes", "constraints"),
    [
        ([_node("manager", role="manager")], []),  # a single-node swarm: the image is where it runs
        ([_node("manager", role="manager"), _node("worker-1", state="down")], []),
        ([_node("manager", role="manager"), _node("worker-1", availability="drain")], []),
        ([_node("manager", role="manager"), _node("worker-1")], ["node.role == manager"]),
        ([_node("manager", role="manager"), _node("worker-1")], ["node.hostname==manager"]),
        ([_node("manager", role="manager"), _node("worker-1")], ["node.role != worker"]),
    ],
)
def test_without_a_registry_a_swarm_where_only_this_node_may_run_the_job_deploys_it(
    swarm_mode_app: Flask, runtime: FakeRuntime, nodes: list[Node], constraints: list[str]
) -> None:
    runtime.images[IMAGE] = {}
    manifest = image_manifest()
    if constraints:
        manifest["placement_constraints"] = constraints

    deployment = _deploy_on_swarm(swarm_mode_app, nodes, {"manifest": manifest})

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert runtime.pushed == []


def test_without_a_registry_a_multi_node_swarm_refuses_a_built_job_too(
    swarm_mode_app: Flask, runtime: FakeRuntime
) -> None:
    nodes = [_node("manager", role="manager"), _node("worker-1")]

    deployment = _deploy_on_swarm(
        swarm_mode_app, nodes, {"manifest": sample_manifest(), "build_context": build_context()}
    )

    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.error.startswith("RACETRACK_REGISTRY is not set, and 2 swarm nodes may run this job")
    assert runtime.calls_to("build_image") == []


def test_stored_registry_credentials_are_reused_only_for_the_same_registry(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    services = app.extensions["racetrackd"]
    runtime.images[IMAGE] = {}
    credentials = {"username": "ci", "password": "registry-pa55word"}
    _deploy(app, client, {"manifest": image_manifest(), "registry_credentials": credentials})

    same = _deploy(app, client, {"manifest": image_manifest("registry.example/team/svc:1.5"), "force": True})
    other = _deploy(app, client, {"manifest": image_manifest("elsewhere.example/svc:1"), "force": True})

    assert jobsecrets.of_deployment(same, services.vault).registry_credentials == credentials
    assert jobsecrets.of_deployment(other, services.vault).registry_credentials is None


# --- rtd ------------------------------------------------------------------------------------------


def test_rtd_validate_takes_a_manifest_file(runner: CliRunner, tmp_path: Path) -> None:
    job_yaml = tmp_path / "svc.yaml"
    job_yaml.write_text(json.dumps(image_manifest()))

    result = runner.invoke(main, ["validate", str(job_yaml)], input="")

    assert result.exit_code == 0, result.output
    assert f"image: {IMAGE}" in result.output


def test_rtd_submit_of_an_image_job_sends_the_manifest_only(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    daemon = FakeDaemon(monkeypatch)
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(json.dumps(image_manifest()))
    (tmp_path / "big.bin").write_bytes(b"\0" * 1024)  # not uploaded
    done = {
        "id": "d1",
        "status": "done",
        "phase": None,
        "error": None,
        "warnings": None,
        "job": {"name": "svc", "version": "1.0.0", "pub_url": "http://x/pub/job/svc/1.0.0", "path_mode": "forward"},
    }
    daemon.answer("POST", DEPLOY, (201, {"id": "d1"}))
    daemon.answer("GET", f"{DEPLOY}/d1", (200, done))

    result = runner.invoke(
        main,
        ["submit", str(job_yaml), "--registry-username", "ci", "--registry-password", "pw-123456"],
        input="",
    )

    assert result.exit_code == 0, result.output
    (_, _, kwargs, _) = next(call for call in daemon.calls if call[0] == "POST")
    body = kwargs["json"]
    assert body["build_context"] is None and body["manifest"]["jobtype_extra"]["image"] == IMAGE
    assert body["registry_credentials"] == {"username": "ci", "password": "pw-123456"}
    assert f"image {IMAGE} (manifest only)" in result.output


def test_the_dashboard_shows_the_image_and_the_digest_a_release_is_pinned_at(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.registry = {IMAGE}
    runtime.repo_digests[IMAGE] = (f"registry.example/team/svc@{DIGEST}",)
    deployment = _deploy(app, client, {"manifest": image_manifest()})

    job_page = page_text(browser(app).get("/dashboard/jobs/svc/1.0.0"))
    deployment_page = page_text(browser(app).get(f"/dashboard/deployments/{deployment.id}"))

    assert f"Source image</dt><dd><code>{IMAGE}</code>" in job_page
    assert f"<code>registry.example/team/svc@{DIGEST}</code>" in job_page
    assert f"<code>{IMAGE}</code> pinned at <code>registry.example/team/svc@{DIGEST}</code>" in deployment_page


def test_the_dashboards_deploy_form_takes_an_image_jobs_manifest_alone(app: Flask) -> None:
    client = browser(app)
    csrf = csrf_of(page_text(client.get("/dashboard/deploy")))

    response = client.post("/dashboard/deploy", data={"manifest": yaml.safe_dump(image_manifest()), "csrf_token": csrf})

    assert response.status_code == 303, response.get_data(as_text=True)
    assert Deployment.get().build_context_path is None


def test_an_image_pinned_by_digest_records_that_digest(app: Flask, client: FlaskClient, runtime: FakeRuntime) -> None:
    pinned = f"registry.example/team/svc@{DIGEST}"
    runtime.registry = {pinned}

    deployment = _deploy(app, client, {"manifest": image_manifest(pinned)})

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert runtime.calls_to("pull_image") == [(pinned, None)]
    assert deployment.source_image_info()["digest"] == pinned  # type: ignore[index]


def test_a_registry_of_the_version_before_gets_the_source_image_column(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    db = open_database(path)
    Deployment.create(id="old", job_name="a", job_version="1.0.0", manifest_yaml="x")
    db.execute_sql("ALTER TABLE deployment DROP COLUMN source_image")
    db.execute_sql("PRAGMA user_version = 12")
    db.close()

    open_database(path)

    old = Deployment.get_by_id("old")
    assert old.source_image is None and old.source_image_info() is None
    old.source_image = '{"reference": "svc:1", "image_id": "sha256:1", "digest": null}'
    old.save()
    assert Deployment.get_by_id("old").source_image_info() == {
        "reference": "svc:1",
        "image_id": "sha256:1",
        "digest": None,
    }


# --- pull policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "policy"),
    [
        ("svc", "always"),
        ("svc:latest", "always"),
        ("localhost:5000/svc", "always"),  # the registry's port is not a tag
        ("localhost:5000/svc:1.4", "missing"),
        (IMAGE, "missing"),
        (f"svc:latest@{DIGEST}", "missing"),  # a digest never moves
    ],
)
def test_the_default_pull_policy_pulls_only_tags_that_move_by_design(reference: str, policy: str) -> None:
    assert default_pull_policy(reference) == policy


def test_a_latest_image_is_pulled_again_even_when_the_engine_has_it(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.images["team/svc:latest"] = {}

    deployment = _deploy(app, client, {"manifest": image_manifest("team/svc:latest")})

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert runtime.calls_to("pull_image") == [("team/svc:latest", None)]


def test_a_latest_image_that_cannot_be_pulled_runs_the_engines_copy_saying_so(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.images["team/svc:latest"] = {}
    runtime.registry = set()  # offline

    deployment = _deploy(app, client, {"manifest": image_manifest("team/svc:latest")})

    assert deployment.status == DeploymentStatus.DONE, deployment.error
    assert "could not pull team/svc:latest (" in deployment.build_logs_since(0)[0]
    assert "using the Docker engine's copy" in deployment.build_logs_since(0)[0]


def test_pull_policy_always_fails_when_the_pull_does_even_with_a_copy_in_the_engine(
    app: Flask, client: FlaskClient, runtime: FakeRuntime
) -> None:
    runtime.images[IMAGE] = {}
    runtime.registry = set()

    deployment = _deploy(app, client, {"manifest": image_manifest(pull_policy="always")})

    assert deployment.status == DeploymentStatus.FAILED
    assert deployment.error.startswith(f"jobtype_extra.image: image {IMAGE} is not in the Docker engine and could not")


@pytest.mark.parametrize(("present", "done"), [(True, True), (False, False)])
def test_pull_policy_never_runs_only_what_the_engine_has(
    app: Flask, client: FlaskClient, runtime: FakeRuntime, present: bool, done: bool
) -> None:
    if present:
        runtime.images["team/svc:latest"] = {}

    deployment = _deploy(app, client, {"manifest": image_manifest("team/svc:latest", pull_policy="never")})

    assert runtime.calls_to("pull_image") == []
    assert (deployment.status == DeploymentStatus.DONE) == done, deployment.error
    if not done:
        assert deployment.error.startswith("jobtype_extra.image: image team/svc:latest is not in the Docker engine (")
        assert "pull_policy is never" in deployment.error


def test_an_unknown_pull_policy_is_refused_naming_the_field(client: FlaskClient) -> None:
    response = client.post(DEPLOY, json={"manifest": image_manifest(pull_policy="sometimes")})

    assert response.status_code == 400
    assert "jobtype_extra.pull_policy: 'sometimes' is not one of always, missing, never" in response.get_json()["error"]
