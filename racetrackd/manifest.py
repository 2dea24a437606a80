"""Manifests as this daemon accepts them: the shared schema (jobmanifest) plus the host's policy.

The schema is checked identically by `rtd validate` and here; on top, the daemon applies
what only it knows: resource defaults and caps, and the job type's own `jobtype_extra` rules.
Every problem is reported at once as a `ManifestError` listing `(field.path, message)` pairs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

from jobmanifest import Manifest, ManifestInvalid, validate_manifest
from jobmanifest.quantities import format_bytes
from racetrackd.errors import ManifestError
from racetrackd.settings import Settings


@dataclasses.dataclass(frozen=True)
class ContainerLimits:
    """What Docker enforces for a job, derived from its manifest and the daemon's defaults."""

    memory_bytes: int
    memory_reservation_bytes: int
    nano_cpus: int
    cpu_shares: int


def accept_manifest(data: Any, settings: Settings) -> Manifest:
    """Validate a manifest mapping against the schema and this host's limits."""
    try:
        manifest = validate_manifest(data)
    except ManifestInvalid as exc:
        raise manifest_error([(e.path, e.message) for e in exc.errors]) from exc
    problems = (
        _reserved_env_problems(manifest) + _limit_problems(manifest, settings) + _placement_problems(manifest, settings)
    )
    if problems:
        raise manifest_error(problems)
    return manifest


def _placement_problems(manifest: Manifest, settings: Settings) -> list[tuple[str, str]]:
    """Placement constraints choose among a swarm's nodes: on one engine they would silently mean nothing."""
    if manifest.placement_constraints and settings.orchestrator != "swarm":
        return [
            (
                "placement_constraints",
                "needs RACETRACK_ORCHESTRATOR=swarm; this racetrackd runs jobs on one Docker engine "
                f"(RACETRACK_ORCHESTRATOR={settings.orchestrator}), where there are no nodes to choose from: "
                "remove the field or deploy to a racetrackd in swarm mode",
            )
        ]
    return []


def load_stored(manifest_yaml: str, settings: Settings) -> Manifest:
    """A manifest stored by the API (already accepted once)."""
    try:
        data = yaml.safe_load(manifest_yaml)
    except yaml.YAMLError as exc:
        raise manifest_error([("manifest", f"stored manifest is not valid YAML: {exc}")]) from exc
    return accept_manifest(data, settings)


def manifest_error(errors: list[tuple[str, str]]) -> ManifestError:
    return ManifestError("; ".join(f"{field}: {message}" for field, message in errors), errors=errors)


def container_limits(manifest: Manifest, settings: Settings) -> ContainerLimits:
    resources = manifest.resources
    memory_max = resources.value("memory_max") or settings.job_memory_max
    memory_min = min(resources.value("memory_min") or settings.job_memory_min, memory_max)
    cpu_max = resources.value("cpu_max") or settings.job_cpu_max
    cpu_min = resources.value("cpu_min") or settings.job_cpu_min
    return ContainerLimits(
        memory_bytes=int(memory_max),
        memory_reservation_bytes=int(memory_min),
        nano_cpus=int(min(cpu_max, _host_cpus()) * 1e9),
        # Docker's relative CPU weight (1024 = one core's worth); never below its minimum of 2.
        cpu_shares=max(2, int(cpu_min * 1024)),
    )


# Set by racetrackd in every job container; a manifest may not override them.
RESERVED_ENV = frozenset(
    {
        "JOB_NAME",
        "JOB_VERSION",
        "JOB_DEPLOYMENT_TIMESTAMP",
        "JOB_MANIFEST_YAML",
        "PUB_URL",
        "AUTH_TOKEN",
        "REQUEST_TRACING_HEADER",
        "JOB_TYPE_VERSION",
        "JOB_VENV",
        "PYTHONPATH",
        "JOB_GRACEFUL_TIMEOUT",
        "JOB_CALL_TIMEOUT",
    }
)


def _reserved_env_problems(manifest: Manifest) -> list[tuple[str, str]]:
    return [
        (f"{field}.{name}", "reserved: racetrackd sets it in every job; choose another name")
        for field, env in (("build_env", manifest.build_env), ("runtime_env", manifest.runtime_env))
        for name in sorted(env)
        if name in RESERVED_ENV
    ]


def _limit_problems(manifest: Manifest, settings: Settings) -> list[tuple[str, str]]:
    problems = []
    memory_max = manifest.resources.value("memory_max")
    memory_min = manifest.resources.value("memory_min")
    cap = settings.max_job_memory
    for field, value in (("memory_max", memory_max), ("memory_min", memory_min)):
        if value is not None and value > cap:
            problems.append(
                (
                    f"resources.{field}",
                    f"{getattr(manifest.resources, field)} is over this host's cap "
                    f"of {format_bytes(cap)} (RACETRACK_MAX_JOB_MEMORY)",
                )
            )
    if memory_max is None and memory_min is not None and memory_min > settings.job_memory_max:
        problems.append(
            (
                "resources.memory_min",
                f"{manifest.resources.memory_min} is more than the default memory_max "
                f"{format_bytes(settings.job_memory_max)}; set resources.memory_max too",
            )
        )
    cpu_max = manifest.resources.value("cpu_max")
    if cpu_max is not None and cpu_max > _host_cpus():
        problems.append(
            ("resources.cpu_max", f"{manifest.resources.cpu_max} is more than the {_host_cpus()} CPUs of this host")
        )
    if cpu_max is not None and cpu_max < 0.01:
        problems.append(("resources.cpu_max", f"{manifest.resources.cpu_max} is less than Docker's minimum of 10m"))
    if memory_max is not None and memory_max < 6 * 2**20:
        problems.append(
            ("resources.memory_max", f"{manifest.resources.memory_max} is less than Docker's minimum of 6Mi")
        )
    return problems


def _host_cpus() -> int:
    return os.cpu_count() or 1
