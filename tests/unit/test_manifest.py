"""racetrackd.manifest: job.yaml into a Manifest, or a ManifestError naming every bad field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from racetrackd.errors import ManifestError
from racetrackd.manifest import parse_manifest, parse_manifest_yaml
from tests.unit.fakes import sample_manifest


def manifest_error(data: Any) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    assert caught.value.status_code == 400
    return caught.value.message


def test_valid_manifest_parses_with_defaults() -> None:
    manifest = parse_manifest(sample_manifest(version=None))

    assert manifest.name == "adder"
    assert manifest.version == "0.0.1"
    assert manifest.owner_email == "owner@example.com"
    assert manifest.jobtype == "python3:latest"
    assert manifest.jobtype_extra == {"entrypoint_path": "entrypoint.py"}
    assert manifest.build_env == {}
    assert manifest.runtime_env == {}
    assert manifest.system_dependencies == ()
    # The stored YAML carries the defaulted version, so the registry records what was deployed.
    assert yaml.safe_load(manifest.yaml)["version"] == "0.0.1"


def test_manifest_from_yaml_text_with_all_common_fields() -> None:
    manifest = parse_manifest_yaml(
        "name: adder\n"
        "owner_email: owner@example.com\n"
        "version: 1.2.3-rc.1\n"
        "lang: python3:1.0.0\n"
        "jobtype_extra:\n  entrypoint_path: entrypoint.py\n"
        "build_env:\n  PIP_EXTRA: x\n  WORKERS: 4\n"
        "runtime_env:\n  DEBUG: 'true'\n"
        "system_dependencies: [libgomp1, curl]\n"
    )

    assert manifest.version == "1.2.3-rc.1"
    assert manifest.jobtype == "python3:1.0.0"  # Racetrack's older `lang` field
    assert manifest.build_env == {"PIP_EXTRA": "x", "WORKERS": "4"}
    assert manifest.runtime_env == {"DEBUG": "true"}
    assert manifest.system_dependencies == ("libgomp1", "curl")


@pytest.mark.parametrize("name", ["my_job", "MyJob", "-adder", "adder-", "a" * 51, "add.er"])
def test_a_name_unfit_for_container_and_dns_names_is_rejected(name: str) -> None:
    message = manifest_error(sample_manifest(name=name))

    assert message.startswith("name: ")
    assert repr(name) in message
    assert "container and DNS names" in message


def test_missing_name_is_reported() -> None:
    assert "name: required" in manifest_error(sample_manifest(name=None))


def test_missing_owner_email_is_reported() -> None:
    assert manifest_error(sample_manifest(owner_email=None)) == "owner_email: required, an e-mail address"


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", 1.0, "latest"])
def test_a_version_that_is_not_semver_is_rejected(version: Any) -> None:
    message = manifest_error(sample_manifest(version=version))

    assert message.startswith("version: ")
    assert "semantic version" in message


def test_missing_jobtype_is_reported() -> None:
    message = manifest_error(sample_manifest(jobtype=None))

    assert message.startswith("jobtype: required")


def test_jobtype_without_a_version_is_rejected() -> None:
    assert manifest_error(sample_manifest(jobtype="python3")).startswith("jobtype: ")


def test_unknown_field_is_reported() -> None:
    assert manifest_error(sample_manifest(entrypoint="entrypoint.py")) == "entrypoint: unknown field"


@pytest.mark.parametrize("variable", ["1ST", "MY-VAR", "has space"])
def test_build_env_with_a_bad_variable_name_names_it(variable: str) -> None:
    message = manifest_error(sample_manifest(build_env={variable: "x"}))

    assert message == f"build_env.{variable}: not a valid environment variable name"


def test_env_values_must_be_scalars() -> None:
    message = manifest_error(sample_manifest(runtime_env={"NESTED": {"a": 1}}))

    assert message == "runtime_env.NESTED: must be a string"


def test_build_env_that_is_not_a_mapping_is_rejected() -> None:
    assert manifest_error(sample_manifest(build_env=["A=1"])).startswith("build_env: ")


def test_jobtype_extra_that_is_not_a_mapping_is_rejected() -> None:
    assert manifest_error(sample_manifest(jobtype_extra="entrypoint.py")) == "jobtype_extra: must be a mapping"


def test_system_dependencies_must_be_package_names() -> None:
    message = manifest_error(sample_manifest(system_dependencies=["curl; rm -rf /"]))

    assert message.startswith("system_dependencies: ")


def test_every_error_is_reported_in_one_message() -> None:
    message = manifest_error({
        "name": "My_Job",
        "version": "one",
        "jobtype": "python3",
        "build_env": {"BAD-NAME": "x"},
        "colour": "red",
    })

    for field in ("colour:", "name:", "owner_email:", "version:", "jobtype:", "build_env.BAD-NAME:"):
        assert field in message
    assert len(message.split("; ")) == 6


@pytest.mark.parametrize("data", [None, [], "name: adder", 42])
def test_a_manifest_that_is_not_a_mapping_is_rejected(data: Any) -> None:
    assert manifest_error(data).startswith("manifest: must be a mapping")


def test_invalid_yaml_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="manifest: not valid YAML"):
        parse_manifest_yaml("name: [adder\n")
