"""The HTTP API (lifecycle, gateway, probes) through Flask's test client, over a FakeRuntime."""

from __future__ import annotations

import base64
import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from racetrackd import db, naming
from racetrackd import manifest as manifest_module
from racetrackd.docker.runtime import ContainerSpec, Runtime
from racetrackd.serving import FORWARD, Serving
from racetrackd.settings import BUILTIN_PLUGINS_DIR, Settings
from tests.unit.conftest import ADMIN_TOKEN
from tests.unit.fakes import FakeRuntime, build_context, sample_manifest

API = "/lifecycle/api/v1"


BUILD_CONTEXT = build_context()  # a deploy needs an upload (or a git.remote) to build from


def add_job(name: str = "adder", version: str = "0.0.1", status: str = db.JobStatus.RUNNING) -> db.Job:
    return db.Job.create(
        name=name,
        version=version,
        status=status,
        manifest_yaml=yaml.safe_dump(sample_manifest(name=name, version=version)),
        job_type_version="python3:1.0.0",
        image_name=f"racetrackd/job-{name}:{version}",
        container_name=f"job-{name}-v-{version.replace('.', '-')}",
        internal_name=f"job-{name}-v-{version.replace('.', '-')}:7000",
        deployment_timestamp=1_700_000_000,
    )


def run_containers(runtime: FakeRuntime, job: db.Job, replicas: int = 1) -> None:
    """The job's containers as the deployer labels them (the main one and `-1`, `-2`, ... replicas)."""
    labels = naming.job_labels("main", job.name, job.version, "d-1")
    for index in range(replicas):
        runtime.run_container(
            ContainerSpec(
                name=naming.replica_container_name(job.container_name, index),
                image=job.image_name,
                env={},
                labels=labels,
                network="racetrack",
                publish_port=True,
            )
        )


def assert_error(response: Any, status: int, error_type: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["type"] == error_type
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


def field_errors(response: Any) -> dict[str, str]:
    """The `errors` list of a 400 invalid-manifest body, as {field: message}; it agrees with `error`."""
    message = assert_error(response, 400, "invalid-manifest")
    errors = response.get_json()["errors"]
    assert errors and all(set(e) == {"field", "message"} for e in errors)
    assert message == "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return {e["field"]: e["message"] for e in errors}


# --- the fake itself ---------------------------------------------------------------------------


def test_fake_runtime_implements_every_runtime_method_with_the_same_parameters() -> None:
    protocol_methods = {name for name, _ in inspect.getmembers(Runtime, inspect.isfunction) if not name.startswith("_")}

    assert protocol_methods
    for name in protocol_methods:
        expected = list(inspect.signature(getattr(Runtime, name)).parameters)
        assert list(inspect.signature(getattr(FakeRuntime, name)).parameters) == expected, name


# --- deploy ------------------------------------------------------------------------------------


def test_deploy_with_a_bad_manifest_is_400_naming_the_field_and_stores_nothing(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy", json={"manifest": sample_manifest(name="My_Job"), "build_context": build_context()}
    )

    message = assert_error(response, 400, "invalid-manifest")
    assert message.startswith("name: ")
    assert list(field_errors(response)) == ["name"]
    assert "container and DNS names" in field_errors(response)["name"]
    assert db.Deployment.select().count() == 0


def test_deploy_with_several_manifest_errors_reports_them_all(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": {"name": "adder", "version": "1"}}
    )

    message = assert_error(response, 400, "invalid-manifest")
    assert "owner_email:" in message and "version:" in message and "jobtype:" in message
    errors = field_errors(response)
    assert sorted(errors) == ["jobtype", "owner_email", "version"]
    assert errors["owner_email"] == "required"
    assert errors["jobtype"] == "required"


def test_deploy_with_a_misspelt_field_suggests_the_right_one(client: FlaskClient) -> None:
    manifest = sample_manifest(jobtype=None, jobtyp="python3:latest")

    errors = field_errors(client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": manifest}))

    assert errors == {"jobtyp": "unknown field (did you mean 'jobtype'?)", "jobtype": "required"}
    assert db.Deployment.select().count() == 0


def test_deploy_over_the_host_memory_cap_is_400_naming_the_setting(make_app: Callable[..., Flask]) -> None:
    app = make_app(auth_required="false", max_job_memory="1Gi")

    response = app.test_client().post(
        f"{API}/deploy", json={"manifest": sample_manifest(resources={"memory_min": "512Mi", "memory_max": "2Gi"})}
    )

    assert field_errors(response) == {
        "resources.memory_max": "2Gi is over this host's cap of 1Gi (RACETRACK_MAX_JOB_MEMORY)"
    }
    assert db.Deployment.select().count() == 0


def test_deploy_over_the_host_cpus_is_400(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "_host_cpus", lambda: 2)

    response = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(resources={"cpu_max": "3"})}
    )

    assert field_errors(response) == {"resources.cpu_max": "3 is more than the 2 CPUs of this host"}


@pytest.mark.parametrize("body", [None, "[]", '"manifest"'])
def test_deploy_without_a_json_object_is_400(client: FlaskClient, body: str | None) -> None:
    response = client.post(f"{API}/deploy", data=body, content_type="application/json")

    assert "JSON object" in assert_error(response, 400, "validation-error")
    assert db.Deployment.select().count() == 0


def test_deploy_queues_a_deployment(client: FlaskClient, app: Flask) -> None:
    context = build_context()  # once: a gzip header holds the time, so two calls a second apart differ
    response = client.post(f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": context})

    assert response.status_code == 201
    deployment_id = response.get_json()["id"]
    shown = client.get(f"{API}/deploy/{deployment_id}")
    assert shown.status_code == 200
    body = shown.get_json()
    assert body["id"] == deployment_id
    assert body["status"] == "in_progress"
    assert body["phase"] == "queued"
    assert body["job_name"] == "adder"
    assert body["job_version"] == "0.0.1"
    assert body["deployed_by"] == "admin"
    assert body["job"] is None
    assert yaml.safe_load(body["manifest_yaml"])["name"] == "adder"
    # The upload is kept in the data dir for the worker.
    settings: Settings = app.extensions["racetrackd"].settings
    stored = db.Deployment.get_by_id(deployment_id)
    assert Path(stored.build_context_path).parent == settings.data_dir / "uploads"
    assert Path(stored.build_context_path).read_bytes() == base64.b64decode(context)


def test_deployments_are_listed_newest_first(client: FlaskClient) -> None:
    first = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(version="1.0.0")}
    ).get_json()["id"]
    second = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(version="1.0.1")}
    ).get_json()["id"]
    db.Deployment.update(create_time=db.Deployment.create_time - 10).where(db.Deployment.id == first).execute()

    listed = client.get(f"{API}/deploy").get_json()

    assert [d["id"] for d in listed] == [second, first]
    assert [d["id"] for d in client.get(f"{API}/deploy?limit=1").get_json()] == [second]
    assert_error(client.get(f"{API}/deploy?limit=few"), 400, "validation-error")


def test_unknown_deployment_is_404(client: FlaskClient) -> None:
    assert "nope" in assert_error(client.get(f"{API}/deploy/nope"), 404, "not-found")


def test_deploy_of_an_existing_job_is_409_unless_forced(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")

    conflict = client.post(f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": build_context()})

    assert "adder 0.0.1" in assert_error(conflict, 409, "already-exists")
    assert "--force" in conflict.get_json()["hint"]
    assert db.Deployment.select().count() == 0

    forced = client.post(
        f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": build_context(), "force": True}
    )

    assert forced.status_code == 201
    assert db.Deployment.get_by_id(forced.get_json()["id"]).force is True


def test_deploy_of_a_version_already_in_progress_is_409_even_forced(client: FlaskClient) -> None:
    first = client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest()})
    assert first.status_code == 201

    conflict = client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest()})
    forced = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(), "force": True}
    )

    assert "already in progress" in assert_error(conflict, 409, "already-exists")
    assert "already in progress" in assert_error(forced, 409, "already-exists")
    assert db.Deployment.select().count() == 1


def test_deploy_of_a_deleted_version_is_409_unless_forced(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")
    assert client.delete(f"{API}/job/adder/0.0.1").status_code == 204

    conflict = client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest()})

    message = assert_error(conflict, 409, "already-exists")
    assert message == "job adder 0.0.1 was deleted; versions are not reused"
    assert "--force" in conflict.get_json()["hint"]
    assert db.Deployment.select().count() == 0
    # Other versions, and the same version when forced, are fine.
    assert (
        client.post(
            f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(version="0.0.2")}
        ).status_code
        == 201
    )
    forced = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(), "force": True}
    )
    assert forced.status_code == 201
    assert db.Deployment.get_by_id(forced.get_json()["id"]).force is True


def test_deploy_of_a_new_version_of_an_existing_job_is_accepted(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")

    response = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(version="0.0.2")}
    )

    assert response.status_code == 201


def test_deploy_with_a_non_boolean_force_is_400(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(), "force": "yes"}
    )

    assert assert_error(response, 400, "validation-error").startswith("force: ")


def test_deploy_with_an_unknown_jobtype_lists_the_installed_ones(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(jobtype="cobol:latest")}
    )

    message = assert_error(response, 400, "invalid-manifest")
    assert "'cobol:latest'" in message
    assert "golang:1.0.0" in message and "python3:1.0.0" in message and "rust:1.0.0" in message
    assert list(field_errors(response)) == ["jobtype"]
    assert db.Deployment.select().count() == 0


def test_deploy_without_the_required_jobtype_extra_is_400(client: FlaskClient) -> None:
    response = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest(jobtype_extra={})}
    )

    assert "jobtype_extra.entrypoint_path" in assert_error(response, 400, "invalid-manifest")
    assert field_errors(response) == {"jobtype_extra.entrypoint_path": "required by job type python3"}
    assert db.Deployment.select().count() == 0


def test_deploy_with_an_unknown_jobtype_extra_key_is_400(client: FlaskClient) -> None:
    manifest = sample_manifest(jobtype_extra={"entrypoint_path": "entrypoint.py", "entrypoint_clas": "Adder"})

    errors = field_errors(client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": manifest}))

    assert errors == {
        "jobtype_extra.entrypoint_clas": "not a setting of job type python3 (did you mean 'entrypoint_class'?)"
    }
    assert db.Deployment.select().count() == 0


def test_manifest_check_answers_what_a_deploy_would_refuse_deploying_nothing(client: FlaskClient) -> None:
    typo = sample_manifest(jobtype_extra={"entrypoint_pth": "entrypoint.py"})
    unknown = sample_manifest(jobtype="pyhton3:latest")

    refused = client.post(f"{API}/manifest/check", json={"manifest": typo})
    not_installed = client.post(f"{API}/manifest/check", json={"manifest": unknown})
    fine = client.post(f"{API}/manifest/check", json={"manifest": sample_manifest(lang="python3:latest", jobtype=None)})

    assert field_errors(refused) == {
        "jobtype_extra.entrypoint_pth": "not a setting of job type python3 (did you mean 'entrypoint_path'?)",
        "jobtype_extra.entrypoint_path": "required by job type python3",
    }
    assert list(field_errors(not_installed)) == ["jobtype"]
    assert (fine.status_code, fine.get_json()) == (200, {"warnings": ["lang is deprecated: rename it to jobtype"]})
    assert db.Deployment.select().count() == 0


@pytest.mark.parametrize(
    ("base_image", "warned"), [("python:3.11-slim", False), ("racetrackd/python3-base:bookworm", True)]
)
def test_a_python_version_the_base_image_cannot_honour_is_a_warning(
    make_app: Callable[..., Flask], base_image: str, warned: bool
) -> None:
    client = make_app(PYTHON_BASE_IMAGE=base_image).test_client()
    manifest = sample_manifest(jobtype_extra={"entrypoint_path": "entrypoint.py", "python_version": "3.9"})

    response = client.post(
        f"{API}/manifest/check", json={"manifest": manifest}, headers={"X-Racetrack-Auth": ADMIN_TOKEN}
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    expected = (
        "jobtype_extra.python_version: 3.9 is not applied: this host builds python3 jobs on "
        "racetrackd/python3-base:bookworm (RACETRACK_PYTHON_BASE_IMAGE), and the job runs on its Python"
    )
    assert response.get_json()["warnings"] == ([expected] if warned else [])


def test_manifest_check_needs_a_token(app: Flask) -> None:
    response = app.test_client().post(f"{API}/manifest/check", json={"manifest": sample_manifest()})

    assert response.status_code == 401


def with_unsupported_extra(app: Flask, name: str) -> None:
    """Install (as files in the data dir) a python3 job type 1.0.1 with an extra field marked `supported: false`."""
    services = app.extensions["racetrackd"]
    target = services.settings.data_dir / "plugins" / "python3-job-type-1.0.1"
    shutil.copytree(BUILTIN_PLUGINS_DIR / "python3", target)
    manifest = yaml.safe_load((target / "plugin-manifest.yaml").read_text())
    manifest["version"] = "1.0.1"
    manifest["job_types"]["python3"]["extra_fields"][name] = {"type": "string", "supported": False}
    (target / "plugin-manifest.yaml").write_text(yaml.safe_dump(manifest))
    services.plugins.changes.ring()


def test_warnings_for_unsupported_jobtype_extra_keys_show_on_the_deployment(client: FlaskClient, app: Flask) -> None:
    with_unsupported_extra(app, "shoe_size")
    manifest = sample_manifest(jobtype_extra={"entrypoint_path": "entrypoint.py", "shoe_size": "44"})

    response = client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": manifest})

    assert response.status_code == 201, response.get_data(as_text=True)
    shown = client.get(f"{API}/deploy/{response.get_json()['id']}").get_json()
    assert shown["warnings"] == "jobtype_extra.shoe_size is accepted for Racetrack compatibility but not acted on yet"


def test_deprecated_manifest_fields_show_as_warnings(client: FlaskClient) -> None:
    manifest = sample_manifest(jobtype=None, lang="python3:latest")

    response = client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": manifest})

    assert response.status_code == 201, response.get_data(as_text=True)
    shown = client.get(f"{API}/deploy/{response.get_json()['id']}").get_json()
    assert shown["warnings"].splitlines() == ["lang is deprecated: rename it to jobtype"]


def test_idle_timeout_on_a_docker_proxy_job_is_taken_without_a_warning(client: FlaskClient) -> None:
    # acted on through the gateway's last_call_time (tests/unit/test_scale_to_zero.py)
    manifest = sample_manifest(jobtype="docker-proxy:latest", jobtype_extra=None, idle_timeout="15m")

    response = client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": manifest})

    assert response.status_code == 201, response.get_data(as_text=True)
    shown = client.get(f"{API}/deploy/{response.get_json()['id']}").get_json()
    assert shown["warnings"] is None


def test_a_bad_proxy_mode_is_400_naming_the_field(client: FlaskClient) -> None:
    manifest = sample_manifest(jobtype="docker-proxy:latest", jobtype_extra={"proxy_mode": "sideways"})

    errors = field_errors(client.post(f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": manifest}))

    assert errors == {"jobtype_extra.proxy_mode": "'sideways' is not one of forward, rewrite"}
    assert db.Deployment.select().count() == 0


def test_a_deployment_without_warnings_shows_none(client: FlaskClient) -> None:
    deployment_id = client.post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest()}
    ).get_json()["id"]

    assert client.get(f"{API}/deploy/{deployment_id}").get_json()["warnings"] is None


@pytest.mark.parametrize("context", ["not base64!", 123])
def test_deploy_with_a_bad_build_context_is_400_and_stores_nothing(
    client: FlaskClient, app: Flask, context: Any
) -> None:
    response = client.post(f"{API}/deploy", json={"manifest": sample_manifest(), "build_context": context})

    assert assert_error(response, 400, "validation-error").startswith("build_context: ")
    assert db.Deployment.select().count() == 0
    assert not (app.extensions["racetrackd"].settings.data_dir / "uploads").exists()


# --- jobs --------------------------------------------------------------------------------------


def test_list_jobs_in_jobdto_shape(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")
    add_job("multiplier", "1.0.0", status=db.JobStatus.STARTING)

    response = client.get(f"{API}/job")

    assert response.status_code == 200
    jobs = response.get_json()
    assert [(j["name"], j["version"], j["status"]) for j in jobs] == [
        ("adder", "0.0.1", "running"),
        ("multiplier", "1.0.0", "starting"),
    ]
    adder = jobs[0]
    assert adder["pub_url"] == "http://127.0.0.1:7102/pub/job/adder/0.0.1"
    assert adder["manifest"]["name"] == "adder"
    assert adder["job_type_version"] == "python3:1.0.0"
    assert adder["infrastructure_target"] == "docker"
    assert adder["internal_name"] == "job-adder-v-0-0-1:7000"
    assert {"id", "create_time", "update_time", "error", "image_tag", "deployed_by", "last_call_time"} <= set(adder)


def test_pub_url_uses_the_external_url(make_app: Callable[..., Flask]) -> None:
    app = make_app(external_url="https://racetrack.example.com/", auth_required="false")
    add_job("adder", "0.0.1")

    jobs = app.test_client().get(f"{API}/job").get_json()

    assert jobs[0]["pub_url"] == "https://racetrack.example.com/pub/job/adder/0.0.1"


def test_the_job_says_the_url_that_serves_it_by_path_mode(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")
    web = add_job("web", "1.0.0")
    web.serving = Serving(port=8080, path_mode=FORWARD).to_json()
    web.save()

    served = {job["name"]: job["serving_url"] for job in client.get(f"{API}/job").get_json()}

    assert served == {
        "adder": "http://127.0.0.1:7102/pub/job/adder/0.0.1/",
        "web": "http://127.0.0.1:7102/pub/job/web/1.0.0/api/v1/",  # its bare pub_url answers 404
    }


def test_list_jobs_when_there_are_none(client: FlaskClient) -> None:
    assert client.get(f"{API}/job").get_json() == []


def test_get_job_by_exact_version(client: FlaskClient) -> None:
    add_job("adder", "0.0.1")
    add_job("adder", "0.0.2")

    assert client.get(f"{API}/job/adder/0.0.1").get_json()["version"] == "0.0.1"


def test_latest_is_the_highest_stable_running_version(client: FlaskClient) -> None:
    add_job("adder", "1.2.0")
    add_job("adder", "1.10.0")  # numerically higher than 1.2.0
    add_job("adder", "2.0.0", status=db.JobStatus.STARTING)  # not serving yet
    add_job("adder", "3.0.0-rc.1")  # a pre-release
    add_job("other", "9.0.0")

    job = client.get(f"{API}/job/adder/latest").get_json()

    assert job["version"] == "1.10.0"


def test_x_version_alias(client: FlaskClient) -> None:
    add_job("adder", "1.2.0")
    add_job("adder", "1.3.0")
    add_job("adder", "2.0.0")

    assert client.get(f"{API}/job/adder/1.x").get_json()["version"] == "1.3.0"
    assert client.get(f"{API}/job/adder/1.2.x").get_json()["version"] == "1.2.0"


def test_latest_prefers_a_release_to_its_pre_release(client: FlaskClient) -> None:
    add_job("adder", "1.0.0-rc.1")
    add_job("adder", "1.0.0")
    add_job("adder", "1.0.1-alpha")

    assert client.get(f"{API}/job/adder/latest").get_json()["version"] == "1.0.0"


def test_aliases_see_jobs_in_error_or_lost_but_exact_versions_see_every_job(client: FlaskClient) -> None:
    add_job("adder", "1.0.0")
    add_job("adder", "1.1.0", status=db.JobStatus.ERROR)
    add_job("adder", "1.2.0", status=db.JobStatus.STARTING)

    assert client.get(f"{API}/job/adder/1.x").get_json()["version"] == "1.1.0"
    assert client.get(f"{API}/job/adder/1.2.0").get_json()["status"] == "starting"


def test_latest_with_only_starting_versions_is_404(client: FlaskClient) -> None:
    add_job("adder", "1.0.0", status=db.JobStatus.STARTING)

    assert_error(client.get(f"{API}/job/adder/latest"), 404, "job-not-found")


@pytest.mark.parametrize("path", ["/job/ghost/0.0.1", "/job/ghost/latest"])
def test_unknown_job_is_404_json(client: FlaskClient, path: str) -> None:
    assert "ghost" in assert_error(client.get(API + path), 404, "job-not-found")


def test_delete_removes_the_row_and_every_container(client: FlaskClient, runtime: FakeRuntime) -> None:
    run_containers(runtime, add_job("adder", "0.0.1"), replicas=2)
    run_containers(runtime, add_job("adder", "0.0.2"))

    response = client.delete(f"{API}/job/adder/0.0.1")

    assert response.status_code == 204
    assert sorted(runtime.calls_to("remove_container")) == [("job-adder-v-0-0-1",), ("job-adder-v-0-0-1-1",)]
    assert sorted(runtime.containers) == ["job-adder-v-0-0-2"]
    assert db.Job.find("adder", "0.0.1") is None
    assert db.Job.find("adder", "0.0.2") is not None
    assert [j["version"] for j in client.get(f"{API}/job").get_json()] == ["0.0.2"]
    # The version is remembered as used, with who deleted it.
    deleted = db.DeletedJob.get()
    assert (deleted.name, deleted.version, deleted.deleted_by) == ("adder", "0.0.1", "admin")
    assert db.DeletedJob.exists_for("adder", "0.0.1") and not db.DeletedJob.exists_for("adder", "0.0.2")


def test_delete_of_an_unknown_job_is_404_and_touches_no_container(client: FlaskClient, runtime: FakeRuntime) -> None:
    assert_error(client.delete(f"{API}/job/ghost/0.0.1"), 404, "job-not-found")
    assert runtime.calls_to("remove_container") == []
    assert db.DeletedJob.select().count() == 0


def test_delete_by_alias_deletes_the_version_it_resolves_to(client: FlaskClient, runtime: FakeRuntime) -> None:
    run_containers(runtime, add_job("adder", "1.0.0"))
    run_containers(runtime, add_job("adder", "1.1.0"))

    assert client.delete(f"{API}/job/adder/latest").status_code == 204

    assert runtime.calls_to("remove_container") == [("job-adder-v-1-1-0",)]
    assert [(d.name, d.version) for d in db.DeletedJob.select()] == [("adder", "1.1.0")]


def test_move_to_docker_is_a_no_op_that_answers_the_job(client: FlaskClient, runtime: FakeRuntime) -> None:
    run_containers(runtime, add_job("adder", "0.0.1"))

    response = client.post(f"{API}/job/adder/0.0.1/move", json={"infrastructure_target": "docker"})

    assert response.status_code == 200
    assert (response.get_json()["name"], response.get_json()["infrastructure_target"]) == ("adder", "docker")
    assert runtime.calls_to("remove_container") == [] and runtime.calls_to("create_container") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"infrastructure_target": "kubernetes"},
            "infrastructure_target: 'kubernetes' is not installed (installed: docker)",
        ),
        ({}, "infrastructure_target: required, a string"),
        (None, "infrastructure_target: required, a string"),
    ],
)
def test_move_elsewhere_is_400_naming_the_field_and_changes_nothing(
    client: FlaskClient, runtime: FakeRuntime, body: Any, message: str
) -> None:
    run_containers(runtime, add_job("adder", "0.0.1"))

    response = client.post(f"{API}/job/adder/0.0.1/move", json=body)

    assert assert_error(response, 400, "validation-error") == message
    assert db.Job.find("adder", "0.0.1") is not None and runtime.calls_to("remove_container") == []


def test_move_of_an_unknown_job_is_404(client: FlaskClient) -> None:
    assert_error(
        client.post(f"{API}/job/ghost/0.0.1/move", json={"infrastructure_target": "docker"}), 404, "job-not-found"
    )


def test_unknown_api_path_is_404_json(client: FlaskClient) -> None:
    assert_error(client.get(f"{API}/nothing-here"), 404, "not-found")


def test_wrong_method_is_405_json(client: FlaskClient) -> None:
    assert_error(client.put(f"{API}/job"), 405, "method-not-allowed")


# --- auth --------------------------------------------------------------------------------------


@pytest.fixture
def auth_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(auth_required="true")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/job"),
        ("GET", f"{API}/deploy"),
        ("POST", f"{API}/deploy"),
        ("GET", f"{API}/job/adder/0.0.1"),
        ("DELETE", f"{API}/job/adder/0.0.1"),
    ],
)
def test_requests_without_a_token_are_401_json(auth_app: Flask, method: str, path: str) -> None:
    add_job("adder", "0.0.1")

    response = auth_app.test_client().open(path, method=method, json={})

    assert "X-Racetrack-Auth" in assert_error(response, 401, "unauthorized")
    assert db.Job.find("adder", "0.0.1") is not None


def test_a_wrong_token_is_401(auth_app: Flask) -> None:
    response = auth_app.test_client().get(f"{API}/job", headers={"X-Racetrack-Auth": "wrong"})

    assert assert_error(response, 401, "unauthorized") == "invalid, expired or revoked auth token"


@pytest.mark.parametrize("header", ["X-Racetrack-Auth", "X-Racetrack-User-Auth", "X-Racetrack-Esc-Auth"])
def test_the_admin_token_in_a_header_is_accepted(auth_app: Flask, header: str) -> None:
    response = auth_app.test_client().get(f"{API}/job", headers={header: ADMIN_TOKEN})

    assert response.status_code == 200


def test_the_admin_token_in_a_cookie_is_accepted(auth_app: Flask) -> None:
    test_client = auth_app.test_client()
    test_client.set_cookie("X-Racetrack-Auth", ADMIN_TOKEN)

    assert test_client.get(f"{API}/job").status_code == 200


@pytest.mark.parametrize(
    "path", [f"{API}/info", "/live", "/ready", "/health", "/lifecycle/live", "/lifecycle/ready", "/lifecycle/health"]
)
def test_info_and_probes_are_open(auth_app: Flask, path: str) -> None:
    response = auth_app.test_client().get(path)

    assert response.status_code == 200
    assert response.get_json()["service"] == "racetrackd"


def test_info_describes_the_daemon(auth_app: Flask) -> None:
    info = auth_app.test_client().get(f"{API}/info").get_json()

    assert info["auth_required"] is True
    assert info["external_pub_url"] == "http://127.0.0.1:7102/pub"
    assert info["lifecycle_url"] == "http://127.0.0.1:7102/lifecycle"


def test_info_reports_the_daemons_own_memory_without_pids(auth_app: Flask) -> None:
    memory = auth_app.test_client().get(f"{API}/info").get_json()["daemon_memory"]

    # In-process, the control plane is the whole daemon: this process is its main process.
    assert [p["role"] for p in memory["processes"]][0] == "daemon"
    assert memory["pss_bytes"] == sum(p["pss_bytes"] for p in memory["processes"]) > 0
    assert all("pid" not in p for p in memory["processes"])  # /info answers without a token


def test_health_reports_the_database(client: FlaskClient) -> None:
    health = client.get("/health").get_json()

    assert health["database_connected"] is True
    assert health["status"] == "pass"


def test_without_auth_required_no_token_is_needed(make_app: Callable[..., Flask]) -> None:
    app = make_app(auth_required="false")

    response = app.test_client().post(
        f"{API}/deploy", json={"build_context": BUILD_CONTEXT, "manifest": sample_manifest()}
    )

    assert response.status_code == 201
    assert db.Deployment.get_by_id(response.get_json()["id"]).deployed_by is None


def test_a_generated_admin_token_is_saved_with_mode_0600(tmp_path: Path, runtime: FakeRuntime) -> None:
    from racetrackd.app import create_app

    settings = Settings.from_env({"RACETRACK_DATA_DIR": str(tmp_path / "data")})
    app = create_app(settings, runtime=runtime)
    token_file = tmp_path / "data" / "admin-token"
    token = token_file.read_text().strip()

    assert token
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert app.test_client().get(f"{API}/job", headers={"X-Racetrack-Auth": token}).status_code == 200
    # A restart keeps the same token.
    create_app(settings, runtime=runtime)
    assert token_file.read_text().strip() == token
    db.database.close()


def test_each_app_gets_a_fresh_registry(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    make_app(auth_required="false")
    add_job("adder", "0.0.1")

    assert db.Job.select().count() == 1
    assert (tmp_path / "data" / "registry.sqlite3").is_file()


# --- rollback: to an older version when a version has only one release -----------------------------


def released(runtime: FakeRuntime, name: str, version: str, image: str, age: float = 0.0) -> db.Deployment:
    """A successful deployment of `name` `version` that left `image` (kept in the fake engine)."""
    runtime.images[image] = {}
    return db.Deployment.create(
        job_name=name,
        job_version=version,
        manifest_yaml=yaml.safe_dump(sample_manifest(name=name, version=version)),
        status=db.DeploymentStatus.DONE,
        image_name=image,
        create_time=1_700_000_000 - age,
    )


def test_rollback_of_a_version_with_one_release_goes_to_the_newest_older_version(
    client: FlaskClient, runtime: FakeRuntime
) -> None:
    for version in ("0.9.0", "1.0.0", "2.0.0"):
        add_job("adder", version)
    released(runtime, "adder", "0.9.0", "racetrackd/job-adder:0.9.0", age=20)
    older = released(runtime, "adder", "1.0.0", "racetrackd/job-adder:1.0.0", age=10)
    released(runtime, "adder", "2.0.0", "racetrackd/job-adder:2.0.0")

    response = client.post(f"{API}/job/adder/latest/rollback", json={})

    assert response.status_code == 201, response.get_json()
    queued = db.Deployment.get_by_id(response.get_json()["id"])
    assert (queued.job_version, queued.kind, queued.rollback_of) == ("2.0.0", "rollback", older.id)
    assert queued.image_name == "racetrackd/job-adder:1.0.0"
    assert yaml.safe_load(queued.manifest_yaml)["version"] == "2.0.0"  # runs in 2.0.0's place


def test_rollback_to_a_named_older_version(client: FlaskClient, runtime: FakeRuntime) -> None:
    for version in ("0.9.0", "1.0.0", "2.0.0"):
        add_job("adder", version)
    oldest = released(runtime, "adder", "0.9.0", "racetrackd/job-adder:0.9.0", age=20)
    released(runtime, "adder", "1.0.0", "racetrackd/job-adder:1.0.0", age=10)
    released(runtime, "adder", "2.0.0", "racetrackd/job-adder:2.0.0", age=5)
    released(runtime, "adder", "2.0.0", "racetrackd/job-adder:2.0.0-b")  # an earlier release exists too

    response = client.post(f"{API}/job/adder/2.0.0/rollback", json={"to_version": "0.9.0"})

    assert response.status_code == 201, response.get_json()
    assert db.Deployment.get_by_id(response.get_json()["id"]).rollback_of == oldest.id


def test_rollback_to_an_unknown_or_the_same_version_is_refused(client: FlaskClient, runtime: FakeRuntime) -> None:
    add_job("adder", "2.0.0")
    released(runtime, "adder", "2.0.0", "racetrackd/job-adder:2.0.0")

    unknown = client.post(f"{API}/job/adder/2.0.0/rollback", json={"to_version": "1.0.0"})
    same = client.post(f"{API}/job/adder/2.0.0/rollback", json={"to_version": "2.0.0"})

    assert assert_error(unknown, 404, "not-found") == "job adder has no version 1.0.0 to roll back to"
    assert "is the version being rolled back" in assert_error(same, 400, "validation-error")


def test_rollback_with_nothing_earlier_says_what_runs_now(client: FlaskClient, runtime: FakeRuntime) -> None:
    add_job("adder", "2.0.0")
    only = released(runtime, "adder", "2.0.0", "racetrackd/job-adder:2.0.0")

    response = client.post(f"{API}/job/adder/2.0.0/rollback", json={})

    assert assert_error(response, 404, "not-found") == (
        f"job adder 2.0.0 has no earlier release and no older version to roll back to; "
        f"it runs deployment {only.id}, its only release"
    )
    assert db.Deployment.select().count() == 1
