"""racetrackd.manifest: the daemon's policy on top of the shared schema (host limits, resource defaults).

The schema itself (every field, did-you-mean, aliases) is tested in test_jobmanifest_schema.py; here
is what the daemon adds: errors as a ManifestError (HTTP 400) carrying `(field, message)` pairs, the
host's memory cap and CPU count, Docker's minimums, and the container limits a job gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from racetrackd import manifest as manifest_module
from racetrackd.errors import ManifestError
from racetrackd.manifest import ContainerLimits, accept_manifest, container_limits, load_stored
from racetrackd.settings import Settings
from tests.unit.fakes import sample_manifest

MiB = 2**20
GiB = 2**30


@pytest.fixture(autouse=True)
def _four_host_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "_host_cpus", lambda: 4)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def rejected(data: Any, settings: Settings) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        accept_manifest(data, settings)
    assert caught.value.status_code == 400
    assert caught.value.reference == "invalid-manifest"
    return caught.value


def with_resources(**resources: str) -> dict[str, Any]:
    return sample_manifest(resources=resources)


# --- accept_manifest: the schema, as a ManifestError -----------------------------------------------


def test_a_valid_manifest_is_accepted_with_defaults(settings: Settings) -> None:
    manifest = accept_manifest(sample_manifest(version=None), settings)

    assert manifest.name == "adder"
    assert manifest.version == "0.0.1"
    assert manifest.owner_email == "owner@example.com"
    assert manifest.jobtype == "python3:latest"
    assert manifest.jobtype_extra == {"entrypoint_path": "entrypoint.py"}
    assert manifest.build_env == {}
    assert manifest.runtime_env == {}
    assert manifest.system_dependencies == ()
    assert manifest.replicas == 1
    assert manifest.warnings == ()
    # The stored YAML carries the defaulted version, so the registry records what was deployed.
    assert yaml.safe_load(manifest.yaml)["version"] == "0.0.1"


def test_schema_errors_become_one_manifest_error_listing_every_field(settings: Settings) -> None:
    error = rejected(
        {
            "name": "My_Job",
            "version": "one",
            "jobtype": "python3",
            "build_env": {"BAD-NAME": "x"},
            "colour": "red",
        },
        settings,
    )

    fields = [field for field, _ in error.errors]
    assert sorted(fields) == sorted(["colour", "name", "owner_email", "version", "jobtype", "build_env.BAD-NAME"])
    assert len(error.errors) == 6
    for field, message in error.errors:
        assert f"{field}: {message}" in error.message


def test_the_error_body_lists_each_field_and_message(settings: Settings) -> None:
    error = rejected(sample_manifest(name="My_Job", owner_email=None), settings)

    body = error.to_dict()
    assert body["type"] == "invalid-manifest"
    assert body["error"] == error.message
    assert {"field": "owner_email", "message": "required"} in body["errors"]
    assert [e["field"] for e in body["errors"]] == ["name", "owner_email"]
    assert "container and DNS names" in body["errors"][0]["message"]


@pytest.mark.parametrize("data", [None, [], "name: adder", 42])
def test_a_manifest_that_is_not_a_mapping_is_rejected(data: Any, settings: Settings) -> None:
    error = rejected(data, settings)

    assert error.message.startswith("manifest: must be a mapping")
    assert [field for field, _ in error.errors] == ["manifest"]


def test_deprecated_aliases_are_accepted_with_warnings(settings: Settings) -> None:
    manifest = accept_manifest(sample_manifest(jobtype=None, lang="python3:1.0.0"), settings)

    assert manifest.jobtype == "python3:1.0.0"
    assert manifest.warnings == ("lang is deprecated: rename it to jobtype",)


# --- accept_manifest: this host's limits ----------------------------------------------------------


@pytest.mark.parametrize("field", ["memory_max", "memory_min"])
def test_memory_over_the_host_cap_is_rejected(make_settings: Callable[..., Settings], field: str) -> None:
    settings = make_settings(max_job_memory="2Gi", job_memory_max="4Gi")

    error = rejected(with_resources(**{field: "3Gi"}), settings)

    assert error.errors == [(f"resources.{field}", "3Gi is over this host's cap of 2Gi (RACETRACK_MAX_JOB_MEMORY)")]


def test_memory_at_the_host_cap_is_accepted(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_job_memory="2Gi")

    manifest = accept_manifest(with_resources(memory_min="2Gi", memory_max="2Gi"), settings)

    assert manifest.resources.value("memory_max") == 2 * GiB


def test_memory_min_over_the_default_max_asks_for_memory_max(settings: Settings) -> None:
    error = rejected(with_resources(memory_min="2Gi"), settings)

    assert error.errors == [
        ("resources.memory_min", "2Gi is more than the default memory_max 1Gi; set resources.memory_max too")
    ]
    assert accept_manifest(with_resources(memory_min="2Gi", memory_max="2Gi"), settings).resources.memory_min == "2Gi"


def test_cpu_max_over_the_host_cpus_is_rejected(settings: Settings) -> None:
    error = rejected(with_resources(cpu_max="5"), settings)

    assert error.errors == [("resources.cpu_max", "5 is more than the 4 CPUs of this host")]
    assert accept_manifest(with_resources(cpu_max="4"), settings).resources.cpu_max == "4"


@pytest.mark.parametrize(
    ("resources", "field", "message"),
    [
        ({"cpu_max": "5m"}, "resources.cpu_max", "5m is less than Docker's minimum of 10m"),
        ({"memory_max": "4Mi"}, "resources.memory_max", "4Mi is less than Docker's minimum of 6Mi"),
    ],
)
def test_limits_below_dockers_minimums_are_rejected(
    settings: Settings, resources: dict[str, str], field: str, message: str
) -> None:
    assert rejected(with_resources(**resources), settings).errors == [(field, message)]


def test_every_limit_problem_is_reported_at_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_job_memory="1Gi")

    error = rejected(with_resources(memory_max="2Gi", cpu_max="8"), settings)

    assert [field for field, _ in error.errors] == ["resources.memory_max", "resources.cpu_max"]


def test_schema_errors_in_resources_name_the_field(settings: Settings) -> None:
    error = rejected(with_resources(memory_max="lots", cpu_min="2", cpu_max="1"), settings)

    assert dict(error.errors) == {
        "resources.memory_max": "'lots' is not a quantity like 512Mi, 1Gi, 0.5 or 500m",
        "resources.cpu_min": "2 is more than cpu_max 1",
    }


# --- load_stored ---------------------------------------------------------------------------------


def test_a_stored_manifest_loads_back_equal(settings: Settings) -> None:
    accepted = accept_manifest(sample_manifest(version=None, resources={"memory_max": "512Mi"}, replicas=2), settings)

    assert load_stored(accepted.yaml, settings) == accepted


def test_a_stored_manifest_is_checked_against_todays_limits(make_settings: Callable[..., Settings]) -> None:
    stored = accept_manifest(with_resources(memory_max="4Gi"), make_settings()).yaml

    with pytest.raises(ManifestError) as caught:
        load_stored(stored, make_settings(max_job_memory="2Gi"))

    assert [field for field, _ in caught.value.errors] == ["resources.memory_max"]


# --- container_limits ----------------------------------------------------------------------------


def test_a_silent_manifest_gets_the_default_limits(settings: Settings) -> None:
    limits = container_limits(accept_manifest(sample_manifest(), settings), settings)

    # Defaults: 256Mi reserved, 1Gi limit, 10m CPU share, 1000m CPU limit.
    assert limits == ContainerLimits(
        memory_bytes=GiB, memory_reservation_bytes=256 * MiB, nano_cpus=1_000_000_000, cpu_shares=10
    )


def test_the_defaults_come_from_the_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(job_memory_min="128Mi", job_memory_max="2Gi", job_cpu_min="500m", job_cpu_max="2")

    limits = container_limits(accept_manifest(sample_manifest(), settings), settings)

    assert limits == ContainerLimits(
        memory_bytes=2 * GiB, memory_reservation_bytes=128 * MiB, nano_cpus=2_000_000_000, cpu_shares=512
    )


def test_the_manifest_resources_win_over_the_defaults(settings: Settings) -> None:
    manifest = accept_manifest(
        with_resources(memory_min="300Mi", memory_max="600Mi", cpu_min="250m", cpu_max="1.5"), settings
    )

    assert container_limits(manifest, settings) == ContainerLimits(
        memory_bytes=600 * MiB, memory_reservation_bytes=300 * MiB, nano_cpus=1_500_000_000, cpu_shares=256
    )


def test_the_default_reservation_never_exceeds_a_smaller_memory_max(settings: Settings) -> None:
    manifest = accept_manifest(with_resources(memory_max="128Mi"), settings)

    limits = container_limits(manifest, settings)

    assert (limits.memory_bytes, limits.memory_reservation_bytes) == (128 * MiB, 128 * MiB)


def test_a_default_cpu_max_over_the_host_is_capped_at_the_host(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(job_cpu_max="16")

    assert container_limits(accept_manifest(sample_manifest(), settings), settings).nano_cpus == 4_000_000_000


def test_cpu_shares_never_go_below_dockers_minimum(settings: Settings) -> None:
    manifest = accept_manifest(with_resources(cpu_min="1m"), settings)

    assert container_limits(manifest, settings).cpu_shares == 2
