"""The job manifest (`job.yaml`): parse a mapping into a frozen `Manifest`, or fail naming each field.

Racetrack's schema: unknown keys are errors, every error names its field path. This module is
pure (no Flask, no Docker) so both the API and the worker use it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import yaml

from racetrackd.errors import ManifestError

KNOWN_FIELDS = {
    "name", "owner_email", "version", "jobtype", "lang", "git", "jobtype_extra", "build_env",
    "runtime_env", "secret_build_env_file", "secret_runtime_env_file", "labels", "public_endpoints",
    "replicas", "resources", "system_dependencies", "infrastructure_target", "image_type", "extends",
}
# A job name ends up in container and DNS names (`job-{name}-v-{version}`): RFC 1123 label rules.
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$")
SEMVER_PATTERN = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    owner_email: str
    jobtype: str
    jobtype_extra: dict[str, Any]
    build_env: dict[str, str]
    runtime_env: dict[str, str]
    system_dependencies: tuple[str, ...]
    raw: dict[str, Any]

    @property
    def yaml(self) -> str:
        return yaml.safe_dump(self.raw, sort_keys=False)


def parse_manifest(data: Any) -> Manifest:
    """Validate `data` (the parsed job.yaml) and return a Manifest; ManifestError lists every problem."""
    if not isinstance(data, dict):
        raise ManifestError("manifest: must be a mapping of fields (e.g. name: adder)")
    errors: list[str] = []
    for key in data:
        if key not in KNOWN_FIELDS:
            errors.append(f"{key}: unknown field")

    name = data.get("name")
    if not isinstance(name, str) or not name:
        errors.append("name: required, a string")
    elif not NAME_PATTERN.match(name):
        errors.append(
            f"name: {name!r} is not valid in container and DNS names: use lower-case letters, digits "
            "and dashes, starting and ending with a letter or digit, at most 50 characters"
        )

    owner_email = data.get("owner_email")
    if not isinstance(owner_email, str) or not re.match(r".+@.+", owner_email):
        errors.append("owner_email: required, an e-mail address")

    version = data.get("version", "0.0.1")
    if not isinstance(version, str) or not SEMVER_PATTERN.match(version):
        errors.append(f"version: {version!r} is not a semantic version like 1.2.3")

    jobtype = data.get("jobtype", data.get("lang"))
    if not isinstance(jobtype, str) or ":" not in jobtype:
        errors.append("jobtype: required, as name:version (e.g. python3:latest)")

    jobtype_extra = data.get("jobtype_extra") or {}
    if not isinstance(jobtype_extra, dict):
        errors.append("jobtype_extra: must be a mapping")
        jobtype_extra = {}

    build_env = _env_mapping(data, "build_env", errors)
    runtime_env = _env_mapping(data, "runtime_env", errors)

    system_dependencies = data.get("system_dependencies") or []
    if not isinstance(system_dependencies, list) or not all(
        isinstance(p, str) and re.match(r"^[a-zA-Z0-9][a-zA-Z0-9.+:=~-]*$", p) for p in system_dependencies
    ):
        errors.append("system_dependencies: must be a list of package names")
        system_dependencies = []

    if errors:
        raise ManifestError("; ".join(errors))
    return Manifest(
        name=str(name),
        version=str(version),
        owner_email=str(owner_email),
        jobtype=str(jobtype),
        jobtype_extra=dict(jobtype_extra),
        build_env=build_env,
        runtime_env=runtime_env,
        system_dependencies=tuple(system_dependencies),
        raw={**data, "version": version},
    )


def parse_manifest_yaml(text: str) -> Manifest:
    try:
        return parse_manifest(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"manifest: not valid YAML: {exc}") from exc


def _env_mapping(data: dict[str, Any], field: str, errors: list[str]) -> dict[str, str]:
    value = data.get(field) or {}
    if not isinstance(value, dict):
        errors.append(f"{field}: must be a mapping of variable names to strings")
        return {}
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_PATTERN.match(key):
            errors.append(f"{field}.{key}: not a valid environment variable name")
        elif not isinstance(item, (str, int, float, bool)):
            errors.append(f"{field}.{key}: must be a string")
        else:
            result[key] = str(item)
    return result
