"""Versions through the real daemon: side by side, aliases, pre-releases, immutability, resources."""

from __future__ import annotations

import pytest

from tests.integration.conftest import FIXTURES, Daemon

pytestmark = pytest.mark.integration

JOB = FIXTURES / "versioned"


def answer(daemon: Daemon, version: str) -> object:
    response = daemon.api("POST", f"/pub/job/versioned/{version}/api/v1/perform", json={})
    return response.json() if response.status_code == 200 else response.status_code


@pytest.fixture(scope="module")
def three_versions(daemon: Daemon) -> Daemon:
    daemon.rtd("submit", str(JOB), check=True)
    daemon.rtd("submit", str(JOB), "-e", "version=1.1.0", check=True)
    daemon.rtd("submit", str(JOB), "-e", "version=1.2.0-rc.1", check=True)
    return daemon


def test_versions_run_side_by_side_and_each_is_addressable(three_versions: Daemon) -> None:
    assert answer(three_versions, "1.0.0") == "1.0.0"
    assert answer(three_versions, "1.1.0") == "1.1.0"
    assert answer(three_versions, "1.2.0-rc.1") == "1.2.0-rc.1"


def test_latest_and_x_patterns_pick_the_highest_stable_version(three_versions: Daemon) -> None:
    assert answer(three_versions, "latest") == "1.1.0"
    assert answer(three_versions, "1.x") == "1.1.0"
    assert answer(three_versions, "1.0.x") == "1.0.0"
    assert answer(three_versions, "2.x") == 404


def test_redeploying_an_existing_version_is_refused_and_the_job_untouched(three_versions: Daemon) -> None:
    before = three_versions.api("GET", "/lifecycle/api/v1/job/versioned/1.0.0").json()

    result = three_versions.rtd("submit", str(JOB))

    after = three_versions.api("GET", "/lifecycle/api/v1/job/versioned/1.0.0").json()
    assert result.returncode != 0
    assert "versioned 1.0.0 is already deployed" in result.stderr
    assert after["image_tag"] == before["image_tag"]
    assert after["update_time"] == before["update_time"]
    assert answer(three_versions, "1.0.0") == "1.0.0"


def test_a_deleted_version_is_not_reused_unless_forced(three_versions: Daemon) -> None:
    three_versions.rtd("delete", "versioned", "--version", "1.2.0-rc.1", check=True)

    refused = three_versions.rtd("submit", str(JOB), "-e", "version=1.2.0-rc.1")
    forced = three_versions.rtd("submit", "--force", str(JOB), "-e", "version=1.2.0-rc.1")

    assert refused.returncode != 0
    assert "was deleted" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert answer(three_versions, "1.2.0-rc.1") == "1.2.0-rc.1"


def test_resources_become_docker_limits(three_versions: Daemon) -> None:
    job = three_versions.api("GET", "/lifecycle/api/v1/job/versioned/1.0.0").json()
    container = next(
        c
        for c in three_versions.containers()
        if c.labels["job-name"] == "versioned" and c.labels["job-version"] == "1.0.0"
    )

    host_config = container.attrs["HostConfig"]
    assert job["manifest"]["resources"]["memory_max"] == "300Mi"
    assert host_config["Memory"] == 300 * 2**20
    assert host_config["NanoCpus"] == 500_000_000
    # Started at Docker's default weight, then given cpu_min's (10m: 10 of 1024) once ready.
    assert host_config["CpuShares"] == 10


def test_a_manifest_over_the_memory_cap_is_refused_before_building(daemon: Daemon) -> None:
    result = daemon.rtd("submit", str(JOB), "-e", "version=9.0.0", "-e", "resources.memory_max=64Gi")

    assert result.returncode != 0
    assert "resources.memory_max: 64Gi is over this host's cap of 8Gi" in result.stderr
    assert daemon.api("GET", "/lifecycle/api/v1/job/versioned/9.0.0").status_code == 404
