"""End to end through the real daemon: rtd submit -> image build -> container -> call through /pub."""

from __future__ import annotations

import docker.errors
import pytest

from tests.integration.conftest import FIXTURES, REPO, Daemon

pytestmark = pytest.mark.integration

ADDER = REPO / "samples" / "adder"


@pytest.fixture(scope="module")
def adder(daemon: Daemon) -> Daemon:
    result = daemon.rtd("submit", "--force", str(ADDER), check=True)  # other modules may have deployed it
    assert "adder 0.0.1 is running" in result.stdout
    assert f"{daemon.url}/pub/job/adder/0.0.1" in result.stdout
    return daemon


def test_submitted_sample_answers_42_through_the_gateway(adder: Daemon) -> None:
    response = adder.api("POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 40, "b": 2})

    assert response.status_code == 200, response.text
    assert response.json() == 42
    assert response.headers["X-Request-Tracing-Id"]


def test_deployment_is_recorded_done_with_its_job(adder: Daemon) -> None:
    deployments = adder.api("GET", "/lifecycle/api/v1/deploy").json()
    done = [d for d in deployments if d["job_name"] == "adder" and d["status"] == "done"]

    assert done, deployments
    assert done[0]["job"]["status"] == "running"
    assert done[0]["job"]["pub_url"] == f"{adder.url}/pub/job/adder/0.0.1"
    assert "name: adder" in done[0]["manifest_yaml"]


def test_rtd_call_and_list_show_the_job(adder: Daemon) -> None:
    call = adder.rtd("call", "adder", "--data", '{"a": 40, "b": 2}', check=True)
    listing = adder.rtd("list", check=True)

    assert call.stdout.strip() == "42"
    assert "adder" in listing.stdout and "running" in listing.stdout


def test_wrong_arguments_come_back_as_400_naming_them(adder: Daemon) -> None:
    response = adder.api("POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 1, "c": 2})

    assert response.status_code == 400
    assert "c" in response.json()["error"]


def test_calls_without_a_token_are_refused(adder: Daemon) -> None:
    response = adder.api(
        "POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 1, "b": 2}, headers={"X-Racetrack-Auth": "wrong"}
    )

    assert response.status_code == 401
    assert response.json()["type"] == "unauthorized"


def test_resubmitting_the_same_version_needs_force(adder: Daemon) -> None:
    refused = adder.rtd("submit", str(ADDER))
    forced = adder.rtd("submit", "--force", str(ADDER))
    after = adder.api("POST", "/pub/job/adder/0.0.1/api/v1/perform", json={"a": 40, "b": 2})

    assert refused.returncode != 0
    assert "already deployed" in refused.stderr
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert after.json() == 42
    serving = [c.name for c in adder.containers() if c.labels["job-name"] == "adder" and "-retiring-" not in c.name]
    assert serving == [f"{adder.instance}-job-adder-v-0-0-1"]  # the replaced one drains in the background


def test_job_whose_module_fails_to_import_ends_failed_with_the_error(daemon: Daemon) -> None:
    result = daemon.rtd("submit", str(FIXTURES / "broken-import"))

    assert result.returncode != 0
    assert "No module named 'module_that_does_not_exist'" in result.stderr
    failed = [d for d in daemon.api("GET", "/lifecycle/api/v1/deploy").json() if d["job_name"] == "broken-import"]
    assert failed[0]["status"] == "failed"
    assert "job initialization error" in failed[0]["error"]
    assert daemon.api("GET", "/lifecycle/api/v1/job/broken-import/0.0.1").status_code == 404
    assert not [c for c in daemon.containers() if c.labels["job-name"] == "broken-import"]


def test_requirements_install_through_the_configured_package_index(daemon: Daemon) -> None:
    daemon.rtd("submit", str(FIXTURES / "with-requirements"), check=True)

    response = daemon.api("POST", "/pub/job/with-requirements/1.0.0/api/v1/perform", json={})

    assert response.json() == "1.16.0"


def test_deleting_a_job_removes_its_container(daemon: Daemon) -> None:
    daemon.rtd("submit", "--force", str(ADDER), check=True)
    container_names = [c.name for c in daemon.containers() if c.labels["job-name"] == "adder"]
    assert container_names

    deleted = daemon.rtd("delete", "adder", "--version", "0.0.1")
    after = daemon.api("POST", "/pub/job/adder/latest/api/v1/perform", json={"a": 1, "b": 2})

    assert deleted.returncode == 0, deleted.stderr
    for name in container_names:
        with pytest.raises(docker.errors.NotFound):
            daemon.docker.containers.get(name)
    assert after.status_code == 404
    assert after.json()["type"] == "job-not-found"
