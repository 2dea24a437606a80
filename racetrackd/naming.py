"""Names racetrackd gives to Docker objects (containers, networks) and the gateway's paths and headers.

The labels every container and image carries, and the names of images, are spelt with the rest
of the image recipe in builders/labels.py; they are handed on from here for the daemon's rooms.
"""

from __future__ import annotations

import re

from builders.labels import (
    DEFAULT_INSTANCE,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_JOB_NAME,
    LABEL_JOB_VERSION,
    image_repository,
    image_tag,
    job_labels,
)

__all__ = [
    "CALLER_HEADER",
    "DEFAULT_INSTANCE",
    "JOB_PORT",
    "LABEL_COMPONENT",
    "LABEL_DEPLOYMENT",
    "LABEL_INSTANCE",
    "LABEL_JOB_NAME",
    "LABEL_JOB_VERSION",
    "TRACING_HEADER",
    "build_network",
    "container_name",
    "image_repository",
    "image_tag",
    "job_labels",
    "pub_path",
    "registry_ref",
    "replica_container_name",
    "staging_container_name",
]

JOB_PORT = 7000
# Headers the gateway adds to every call (Racetrack's names; jobs read them).
TRACING_HEADER = "X-Request-Tracing-Id"
CALLER_HEADER = "X-Caller-Name"


def build_network(job_network: str) -> str:
    """The bridge image builds run on, beside the jobs' network (`RACETRACK_NETWORK`)."""
    return f"{job_network}-build"


def registry_ref(registry: str | None, image: str) -> str:
    """Where `image` (`racetrackd/job-x:tag`) lives in `registry` (`RACETRACK_REGISTRY`): the
    reference builds tag and push, and jobs run. Without a registry, `image` itself."""
    return f"{registry.rstrip('/')}/{image}" if registry else image


def container_name(instance: str, job_name: str, job_version: str) -> str:
    """Racetrack's `job-{name}-v-{version}` (dots become dashes); other instances get a prefix."""
    base = f"job-{job_name}-v-{job_version}"
    if instance != DEFAULT_INSTANCE:
        base = f"{instance}-{base}"
    return re.sub(r"[^a-zA-Z0-9-]", "-", base).lower()


def staging_container_name(instance: str, job_name: str, job_version: str, deployment_id: str) -> str:
    """Where a deployment starts its container, beside the serving one, until it is ready."""
    return f"{container_name(instance, job_name, job_version)}-{deployment_id[:8]}"


def replica_container_name(base: str, index: int) -> str:
    """Replica 0 is `base`; the others `base-1`, `base-2`, ... (Racetrack's naming of extra containers)."""
    return base if index == 0 else f"{base}-{index}"


def pub_path(job_name: str, job_version: str) -> str:
    """Path prefix under which the gateway and the job itself serve a job."""
    return f"/pub/job/{job_name}/{job_version}"
