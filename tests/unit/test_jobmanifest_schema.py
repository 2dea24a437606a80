"""jobmanifest.schema: every Racetrack manifest field, accepted when valid, rejected naming its path when not."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from jobmanifest import FieldError, Manifest, ManifestInvalid, Resources, validate_manifest
from jobmanifest.schema import GitSource

BASE: dict[str, Any] = {
    "name": "adder",
    "owner_email": "owner@example.com",
    "jobtype": "python3:latest",
}


def manifest(**fields: Any) -> dict[str, Any]:
    data = {**BASE, **fields}
    return {key: value for key, value in data.items() if value is not None}


def errors_of(data: Any) -> list[FieldError]:
    with pytest.raises(ManifestInvalid) as caught:
        validate_manifest(data)
    assert caught.value.errors, "ManifestInvalid must list at least one error"
    assert str(caught.value) == "; ".join(str(error) for error in caught.value.errors)
    return caught.value.errors


def the_error(data: Any) -> FieldError:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


# --- a minimal and a complete manifest ------------------------------------------------------------


def test_a_minimal_manifest_gets_the_defaults() -> None:
    m = validate_manifest(manifest())

    assert isinstance(m, Manifest)
    assert (m.name, m.owner_email, m.jobtype) == ("adder", "owner@example.com", "python3:latest")
    assert m.version == "0.0.1"
    assert m.git is None
    assert m.jobtype_extra == {} and m.build_env == {} and m.runtime_env == {} and m.labels == {}
    assert m.secret_build_env_file is None and m.secret_runtime_env_file is None
    assert m.public_endpoints == () and m.system_dependencies == ()
    assert m.replicas == 1
    assert m.resources == Resources()
    assert m.infrastructure_target is None
    assert m.image_type == "docker"
    assert m.warnings == ()
    assert m.jobtype_name == "python3"
    assert m.is_stable
    assert m.raw == {**BASE, "version": "0.0.1"}


def test_every_field_at_once() -> None:
    data = {
        "name": "adder",
        "owner_email": "owner@example.com",
        "version": "1.2.3-rc.1",
        "jobtype": "python3:1.*",
        "git": {"remote": "https://github.com/example/adder", "branch": "feature/x", "directory": "jobs/adder"},
        "jobtype_extra": {"entrypoint_path": "entrypoint.py", "max_concurrency": 4},
        "build_env": {"PIP_EXTRA": "x"},
        "runtime_env": {"DEBUG": "true", "_UNDER": ""},
        "secret_build_env_file": "build.env",
        "secret_runtime_env_file": "runtime.env",
        "labels": {"team": "maths", "tier": 1},
        "public_endpoints": ["/api/v1/perform", "/api/v1/webview"],
        "replicas": 3,
        "resources": {"memory_min": "256Mi", "memory_max": "1Gi", "cpu_min": "100m", "cpu_max": 2},
        "system_dependencies": ["libgomp1", "curl=7.88.1-10+deb12u5"],
        "infrastructure_target": "docker",
        "image_type": "docker",
    }

    m = validate_manifest(data)

    assert m.version == "1.2.3-rc.1" and not m.is_stable
    assert m.jobtype == "python3:1.*" and m.jobtype_name == "python3"
    assert m.git == GitSource("https://github.com/example/adder", "feature/x", "jobs/adder")
    assert m.jobtype_extra == {"entrypoint_path": "entrypoint.py", "max_concurrency": 4}
    assert m.build_env == {"PIP_EXTRA": "x"}
    assert m.runtime_env == {"DEBUG": "true", "_UNDER": ""}
    assert (m.secret_build_env_file, m.secret_runtime_env_file) == ("build.env", "runtime.env")
    assert m.labels == {"team": "maths", "tier": 1}
    assert m.public_endpoints == ("/api/v1/perform", "/api/v1/webview")
    assert m.replicas == 3
    assert m.resources == Resources("256Mi", "1Gi", "100m", "2")
    assert m.resources.value("memory_max") == 2**30
    assert m.resources.value("cpu_min") == pytest.approx(0.1)
    assert m.resources.value("cpu_max") == 2
    assert m.system_dependencies == ("libgomp1", "curl=7.88.1-10+deb12u5")
    assert m.infrastructure_target == "docker" and m.image_type == "docker"
    assert m.warnings == ()
    assert yaml.safe_load(m.yaml) == data


def test_the_yaml_keeps_the_users_field_order_and_drops_extends() -> None:
    m = validate_manifest({"version": "1.0.0", **BASE, "extends": "base.yaml"})

    assert m.yaml == "version: 1.0.0\nname: adder\nowner_email: owner@example.com\njobtype: python3:latest\n"


def test_validation_does_not_change_the_input() -> None:
    data = manifest(labels={"a": 1})
    before = yaml.safe_dump(data)

    validate_manifest(data)

    assert yaml.safe_dump(data) == before


# --- valid values of each field -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "attribute", "expected"),
    [
        ("name", "a", "name", "a"),
        ("name", "job-2-go", "name", "job-2-go"),
        ("name", "0" * 40, "name", "0" * 40),
        ("owner_email", "first.last+tag@sub.example.org", "owner_email", "first.last+tag@sub.example.org"),
        ("version", "0.0.0", "version", "0.0.0"),
        ("version", "10.20.30", "version", "10.20.30"),
        ("version", "1.0.0-alpha.1", "version", "1.0.0-alpha.1"),
        ("version", "1.0.0-0.3.7", "version", "1.0.0-0.3.7"),
        ("version", "1.0.0+build.5", "version", "1.0.0+build.5"),
        ("version", "1.0.0-x-y-z.--", "version", "1.0.0-x-y-z.--"),
        ("jobtype", "python3:1.0.0", "jobtype", "python3:1.0.0"),
        ("jobtype", "python3:2.0.0-rc.1", "jobtype", "python3:2.0.0-rc.1"),
        ("jobtype", "my.org_type-x:1.x", "jobtype", "my.org_type-x:1.x"),
        ("git", {"remote": "git@github.com:e/a.git"}, "git", GitSource("git@github.com:e/a.git", None, ".")),
        ("git", {"remote": "r", "branch": "release/1.x"}, "git", GitSource("r", "release/1.x", ".")),
        ("jobtype_extra", {}, "jobtype_extra", {}),
        ("jobtype_extra", {"nested": {"a": [1, 2]}}, "jobtype_extra", {"nested": {"a": [1, 2]}}),
        ("build_env", {"A": "1", "b_2": ""}, "build_env", {"A": "1", "b_2": ""}),
        ("runtime_env", {"_X": "multi\nline"}, "runtime_env", {"_X": "multi\nline"}),
        ("secret_build_env_file", ".env.build", "secret_build_env_file", ".env.build"),
        ("secret_runtime_env_file", "secrets/runtime.env", "secret_runtime_env_file", "secrets/runtime.env"),
        ("labels", {}, "labels", {}),
        ("public_endpoints", [], "public_endpoints", ()),
        ("public_endpoints", ["/"], "public_endpoints", ("/",)),
        ("replicas", 1, "replicas", 1),
        ("replicas", 50, "replicas", 50),
        ("resources", {}, "resources", Resources()),
        ("resources", {"memory_max": 1073741824}, "resources", Resources(memory_max="1073741824")),
        ("resources", {"cpu_min": 0.5, "cpu_max": "0.5"}, "resources", Resources(cpu_min="0.5", cpu_max="0.5")),
        ("resources", {"memory_min": "1G", "memory_max": "1Gi"}, "resources", Resources("1G", "1Gi")),
        ("system_dependencies", [], "system_dependencies", ()),
        (
            "system_dependencies",
            ["g++", "python3.11-dev", "libc6:amd64"],
            "system_dependencies",
            ("g++", "python3.11-dev", "libc6:amd64"),
        ),
        ("infrastructure_target", "docker", "infrastructure_target", "docker"),
        ("image_type", "docker", "image_type", "docker"),
    ],
)
def test_a_valid_value_is_accepted(field: str, value: Any, attribute: str, expected: Any) -> None:
    m = validate_manifest(manifest(**{field: value}))

    assert getattr(m, attribute) == expected
    assert m.warnings == ()


@pytest.mark.parametrize(
    "field",
    [
        "git",
        "jobtype_extra",
        "build_env",
        "runtime_env",
        "labels",
        "public_endpoints",
        "resources",
        "system_dependencies",
        "secret_build_env_file",
        "secret_runtime_env_file",
        "infrastructure_target",
        "image_type",
    ],
)
def test_an_optional_field_left_empty_takes_its_default(field: str) -> None:
    m = validate_manifest({**BASE, field: None})

    assert dataclasses.replace(m, raw={}) == dataclasses.replace(validate_manifest(BASE), raw={})
    assert m.raw == {**BASE, field: None, "version": "0.0.1"}


def test_version_and_replicas_left_empty_take_their_defaults() -> None:
    # Like every other optional field: `version:` with no value means "not set".
    manifest = validate_manifest({**BASE, "version": None, "replicas": None})

    assert manifest.version == "0.0.1"
    assert manifest.replicas == 1


# --- invalid values: each error names the field path ----------------------------------------------

NAME_RULES = (
    "is not valid in container and DNS names: use lower-case letters, digits and dashes (no underscores), "
    "starting and ending with a letter or digit, at most 40 characters"
)
DEBIAN_RULES = " (Debian's rules: lower-case letters, digits, + - .; optionally :arch, =version or /release)"


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        # name
        ({"name": None}, "name", "required"),
        ({"name": "My_Job"}, "name", f"'My_Job' {NAME_RULES}"),
        ({"name": "my_job"}, "name", f"'my_job' {NAME_RULES}"),
        ({"name": "MyJob"}, "name", f"'MyJob' {NAME_RULES}"),
        ({"name": "-adder"}, "name", f"'-adder' {NAME_RULES}"),
        ({"name": "adder-"}, "name", f"'adder-' {NAME_RULES}"),
        ({"name": "add.er"}, "name", f"'add.er' {NAME_RULES}"),
        ({"name": ""}, "name", f"'' {NAME_RULES}"),
        ({"name": "a" * 41}, "name", f"'{'a' * 41}' {NAME_RULES}"),
        ({"name": "adder\n"}, "name", f"'adder\\n' {NAME_RULES}"),
        ({"name": 42}, "name", "must be a string, not a number 42"),
        ({"name": ["adder"]}, "name", "must be a string, not a list ['adder']"),
        # owner_email
        ({"owner_email": None}, "owner_email", "required"),
        ({"owner_email": "owner"}, "owner_email", "'owner' is not an e-mail address"),
        ({"owner_email": "a@b@c"}, "owner_email", "'a@b@c' is not an e-mail address"),
        ({"owner_email": "a b@c"}, "owner_email", "'a b@c' is not an e-mail address"),
        ({"owner_email": "a@b\n"}, "owner_email", "'a@b\\n' is not an e-mail address"),
        ({"owner_email": True}, "owner_email", "must be a string, not a boolean True"),
        # version
        ({"version": 1.0}, "version", '1.0 is a number; write a semantic version as a string, like "1.0.0"'),
        ({"version": 2}, "version", '2 is a number; write a semantic version as a string, like "2.0.0"'),
        ({"version": 1.5}, "version", '1.5 is a number; write a semantic version as a string, like "1.5.0"'),
        ({"version": True}, "version", "must be a string, not a boolean"),
        ({"version": [1, 0, 0]}, "version", "must be a string, not a list"),
        (
            {"version": "1.0"},
            "version",
            "'1.0' is not a semantic version like 1.2.3 (MAJOR.MINOR.PATCH, optionally -prerelease)",
        ),
        (
            {"version": "v1.0.0"},
            "version",
            "'v1.0.0' is not a semantic version like 1.2.3 (MAJOR.MINOR.PATCH, optionally -prerelease)",
        ),
        (
            {"version": "01.0.0"},
            "version",
            "'01.0.0' is not a semantic version like 1.2.3 (MAJOR.MINOR.PATCH, optionally -prerelease)",
        ),
        (
            {"version": "1.0.0-01"},
            "version",
            "'1.0.0-01' is not a semantic version like 1.2.3 (MAJOR.MINOR.PATCH, optionally -prerelease)",
        ),
        (
            {"version": "latest"},
            "version",
            "'latest' is not a semantic version like 1.2.3 (MAJOR.MINOR.PATCH, optionally -prerelease)",
        ),
        (
            {"version": "1.0.0\n"},
            "version",
            "'1.0.0\\n' is not a semantic version like 1.2.3 (MAJOR.MINOR.PATCH, optionally -prerelease)",
        ),
        # jobtype
        ({"jobtype": None}, "jobtype", "required"),
        (
            {"jobtype": "python3"},
            "jobtype",
            "'python3' must be NAME:VERSION, e.g. python3:latest, python3:1.0.0 or python3:1.*",
        ),
        (
            {"jobtype": "python3:"},
            "jobtype",
            "'python3:' must be NAME:VERSION, e.g. python3:latest, python3:1.0.0 or python3:1.*",
        ),
        (
            {"jobtype": "Python3:latest"},
            "jobtype",
            "'Python3:latest' must be NAME:VERSION, e.g. python3:latest, python3:1.0.0 or python3:1.*",
        ),
        (
            {"jobtype": "python3:1 .0"},
            "jobtype",
            "'python3:1 .0' must be NAME:VERSION, e.g. python3:latest, python3:1.0.0 or python3:1.*",
        ),
        ({"jobtype": 3}, "jobtype", "must be a string, not a number 3"),
        # git
        ({"git": "https://github.com/e/a"}, "git", "must be a mapping, not a string"),
        ({"git": {"branch": "main"}}, "git.remote", "required"),
        ({"git": {"remote": 1}}, "git.remote", "must be a string, not a number 1"),
        ({"git": {"remote": "r", "branch": "bad..name"}}, "git.branch", "'bad..name' is not a valid branch name"),
        ({"git": {"remote": "r", "branch": "-x"}}, "git.branch", "'-x' is not a valid branch name"),
        ({"git": {"remote": "r", "branch": "a b"}}, "git.branch", "'a b' is not a valid branch name"),
        ({"git": {"remote": "r", "branch": "x.lock"}}, "git.branch", "'x.lock' is not a valid branch name"),
        ({"git": {"remote": "r", "branch": "a@{1}"}}, "git.branch", "'a@{1}' is not a valid branch name"),
        (
            {"git": {"remote": "r", "directory": "/abs"}},
            "git.directory",
            "'/abs' must be a relative path inside the job's directory",
        ),
        (
            {"git": {"remote": "r", "directory": "a/../../b"}},
            "git.directory",
            "'a/../../b' must be a relative path inside the job's directory",
        ),
        ({"git": {"remote": "r", "brnch": "main"}}, "git.brnch", "unknown field (did you mean 'branch'?)"),
        # jobtype_extra
        ({"jobtype_extra": "entrypoint.py"}, "jobtype_extra", "must be a mapping, not a string"),
        ({"jobtype_extra": ["entrypoint.py"]}, "jobtype_extra", "must be a mapping, not a list"),
        # build_env / runtime_env
        ({"build_env": ["A=1"]}, "build_env", "must be a mapping, not a list"),
        (
            {"build_env": {"1ST": "x"}},
            "build_env.1ST",
            "not a valid environment variable name (letters, digits, _; not starting with a digit)",
        ),
        (
            {"build_env": {"MY-VAR": "x"}},
            "build_env.MY-VAR",
            "not a valid environment variable name (letters, digits, _; not starting with a digit)",
        ),
        (
            {"runtime_env": {"has space": "x"}},
            "runtime_env.has space",
            "not a valid environment variable name (letters, digits, _; not starting with a digit)",
        ),
        (
            {"runtime_env": {"FOO\n": "x"}},
            "runtime_env.FOO\n",
            "not a valid environment variable name (letters, digits, _; not starting with a digit)",
        ),
        (
            {"runtime_env": {1: "x"}},
            "runtime_env.1",
            "not a valid environment variable name (letters, digits, _; not starting with a digit)",
        ),
        (
            {"runtime_env": {"WORKERS": 4}},
            "runtime_env.WORKERS",
            'must be a string, not a number; quote it: WORKERS: "4"',
        ),
        (
            {"runtime_env": {"DEBUG": True}},
            "runtime_env.DEBUG",
            'must be a string, not a boolean; quote it: DEBUG: "True"',
        ),
        (
            {"runtime_env": {"NESTED": {"a": 1}}},
            "runtime_env.NESTED",
            "must be a string, not a mapping; quote it: NESTED: \"{'a': 1}\"",
        ),
        # secret env files
        ({"secret_build_env_file": ["a.env"]}, "secret_build_env_file", "must be a string, not a list ['a.env']"),
        ({"secret_runtime_env_file": 1}, "secret_runtime_env_file", "must be a string, not a number 1"),
        # labels
        ({"labels": ["team=maths"]}, "labels", "must be a mapping, not a list"),
        # public_endpoints
        ({"public_endpoints": "/api/v1/perform"}, "public_endpoints", "must be a list, not a string"),
        (
            {"public_endpoints": ["api/v1/perform"]},
            "public_endpoints[0]",
            "'api/v1/perform' must be a path starting with /",
        ),
        ({"public_endpoints": ["/ok", 7]}, "public_endpoints[1]", "must be a string, not a number"),
        # replicas
        ({"replicas": 0}, "replicas", "must be from 1 to 50, not 0"),
        ({"replicas": 51}, "replicas", "must be from 1 to 50, not 51"),
        ({"replicas": -1}, "replicas", "must be from 1 to 50, not -1"),
        ({"replicas": "2"}, "replicas", "must be a whole number, not a string '2'"),
        ({"replicas": 1.5}, "replicas", "must be a whole number, not a number 1.5"),
        ({"replicas": True}, "replicas", "must be a whole number, not a boolean True"),
        # resources
        ({"resources": "1Gi"}, "resources", "must be a mapping, not a string"),
        (
            {"resources": {"memory_max": "1GB"}},
            "resources.memory_max",
            "'1GB' is not a quantity like 512Mi, 1Gi, 0.5 or 500m",
        ),
        (
            {"resources": {"memory_min": "lots"}},
            "resources.memory_min",
            "'lots' is not a quantity like 512Mi, 1Gi, 0.5 or 500m",
        ),
        ({"resources": {"cpu_max": "-1"}}, "resources.cpu_max", "'-1' is not a quantity like 512Mi, 1Gi, 0.5 or 500m"),
        ({"resources": {"cpu_min": True}}, "resources.cpu_min", "expected a quantity like 512Mi, 1Gi or 500m"),
        ({"resources": {"cpu_min": [1]}}, "resources.cpu_min", "[1] is not a quantity like 512Mi, 1Gi, 0.5 or 500m"),
        ({"resources": {"cpu_max": "0"}}, "resources.cpu_max", "must be greater than zero"),
        ({"resources": {"memory_max": 0}}, "resources.memory_max", "must be greater than zero"),
        (
            {"resources": {"memory_min": "2Gi", "memory_max": "1Gi"}},
            "resources.memory_min",
            "2Gi is more than memory_max 1Gi",
        ),
        ({"resources": {"cpu_min": "1500m", "cpu_max": 1}}, "resources.cpu_min", "1500m is more than cpu_max 1"),
        ({"resources": {"memory": "1Gi"}}, "resources.memory", "unknown field (did you mean 'memory_min'?)"),
        ({"resources": {"gpu": 1}}, "resources.gpu", "unknown field"),
        ({"resources": {"memory_maxx": "1Gi"}}, "resources.memory_maxx", "unknown field (did you mean 'memory_max'?)"),
        # system_dependencies
        ({"system_dependencies": "curl"}, "system_dependencies", "must be a list, not a string"),
        (
            {"system_dependencies": ["curl; rm -rf /"]},
            "system_dependencies[0]",
            "'curl; rm -rf /' is not a package name" + DEBIAN_RULES,
        ),
        (
            {"system_dependencies": ["curl", "-o"]},
            "system_dependencies[1]",
            "'-o' is not a package name" + DEBIAN_RULES,
        ),
        ({"system_dependencies": [None]}, "system_dependencies[0]", "must be a string, not empty"),
        # infrastructure_target / image_type
        (
            {"infrastructure_target": "kubernetes"},
            "infrastructure_target",
            "'kubernetes' is not installed (installed: docker)",
        ),
        ({"infrastructure_target": 1}, "infrastructure_target", "must be a string, not a number 1"),
        ({"image_type": "podman"}, "image_type", "'podman' is not supported (supported: docker)"),
        # extends (resolved by jobmanifest.loading; here it must at least be a relative path)
        ({"extends": "/etc/base.yaml"}, "extends", "'/etc/base.yaml' must be a relative path to the base manifest"),
        ({"extends": 1}, "extends", "must be a string, not a number 1"),
    ],
)
def test_an_invalid_value_is_rejected_naming_its_path(fields: dict[str, Any], path: str, message: str) -> None:
    assert the_error(manifest(**fields)) == FieldError(path, message)


@pytest.mark.parametrize("data", [None, [], "name: adder", 42, ["name", "adder"]])
def test_a_manifest_that_is_not_a_mapping_is_rejected(data: Any) -> None:
    error = the_error(data)

    assert error.path == "manifest"
    assert error.message.startswith("must be a mapping of fields, not ")


def test_every_error_is_reported_at_once_in_field_order() -> None:
    errors = errors_of(
        {
            "colour": "red",
            "name": "My_Job",
            "version": "one",
            "jobtype": "python3",
            "build_env": {"BAD-NAME": "x"},
            "replicas": 0,
            "resources": {"memory_max": "lots"},
        }
    )

    assert [e.path for e in errors] == [
        "colour",
        "name",
        "owner_email",
        "version",
        "jobtype",
        "build_env.BAD-NAME",
        "replicas",
        "resources.memory_max",
    ]


def test_field_error_reads_as_path_colon_message() -> None:
    assert str(FieldError("git.remote", "required")) == "git.remote: required"


# --- unknown keys: did you mean -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("jobtyp", "jobtype"),
        ("job_type", "jobtype"),
        ("nmae", "name"),
        ("owner_mail", "owner_email"),
        ("versoin", "version"),
        ("runtime_envs", "runtime_env"),
        ("buildenv", "build_env"),
        ("system_dependency", "system_dependencies"),
        ("public_endpoint", "public_endpoints"),
        ("replica", "replicas"),
        ("resource", "resources"),
        ("label", "labels"),
        ("jobtype_extras", "jobtype_extra"),
    ],
)
def test_an_unknown_key_close_to_a_field_suggests_it(key: str, suggestion: str) -> None:
    assert the_error(manifest(**{key: "x"})) == FieldError(key, f"unknown field (did you mean {suggestion!r}?)")


@pytest.mark.parametrize("key", ["colour", "entrypoint", "x", "NAME_OF_THE_JOB"])
def test_an_unknown_key_far_from_any_field_gets_no_guess(key: str) -> None:
    assert the_error(manifest(**{key: "x"})) == FieldError(key, "unknown field")


def test_a_misspelt_required_field_is_also_reported_missing() -> None:
    errors = errors_of(manifest(jobtype=None, jobtyp="python3:latest"))

    assert errors == [
        FieldError("jobtyp", "unknown field (did you mean 'jobtype'?)"),
        FieldError("jobtype", "required"),
    ]


def test_a_non_string_key_is_reported_as_unknown() -> None:
    assert the_error({**BASE, 1: "x"}) == FieldError("1", "unknown field")


# --- deprecated aliases ---------------------------------------------------------------------------


def test_lang_is_an_alias_of_jobtype_with_a_warning() -> None:
    m = validate_manifest(manifest(jobtype=None, lang="python3:1.0.0"))

    assert m.jobtype == "python3:1.0.0"
    assert m.warnings == ("lang is deprecated: rename it to jobtype",)
    assert m.raw["lang"] == "python3:1.0.0"  # stored as written


@pytest.mark.parametrize("alias", ["python", "golang", "wrapper_properties", "docker"])
def test_old_jobtype_extra_names_are_aliases_with_a_warning(alias: str) -> None:
    m = validate_manifest(manifest(**{alias: {"entrypoint_path": "entrypoint.py"}}))

    assert m.jobtype_extra == {"entrypoint_path": "entrypoint.py"}
    assert m.warnings == (f"{alias} is deprecated: rename it to jobtype_extra",)


def test_both_deprecated_aliases_warn_together() -> None:
    m = validate_manifest(manifest(jobtype=None, lang="python3:latest", python={"entrypoint_path": "e.py"}))

    assert m.warnings == (
        "lang is deprecated: rename it to jobtype",
        "python is deprecated: rename it to jobtype_extra",
    )


def test_lang_with_jobtype_is_an_error() -> None:
    errors = errors_of(manifest(lang="python3:latest"))

    assert FieldError("lang", "deprecated alias of jobtype; set only jobtype") in errors
    assert all(e.path in ("lang", "jobtype") for e in errors)


def test_a_lang_alias_is_checked_like_jobtype_under_its_own_name() -> None:
    assert the_error(manifest(jobtype=None, lang="python3")).path == "lang"


def test_jobtype_extra_with_an_alias_is_an_error() -> None:
    assert the_error(manifest(jobtype_extra={}, python={})) == FieldError(
        "python", "set only jobtype_extra (found jobtype_extra, python)"
    )


def test_an_alias_that_is_not_a_mapping_is_rejected_under_its_own_name() -> None:
    errors = errors_of(manifest(golang="main.go"))

    assert errors == [FieldError("golang", "must be a mapping, not a string")]


# --- Manifest ------------------------------------------------------------------------------------


def test_a_manifest_is_frozen() -> None:
    m = validate_manifest(manifest())

    with pytest.raises(AttributeError):
        m.name = "other"  # type: ignore[misc]


def test_resources_value_is_none_when_unset() -> None:
    assert Resources().value("memory_max") is None
    assert Resources(memory_max="512Mi").value("memory_max") == 512 * 2**20
