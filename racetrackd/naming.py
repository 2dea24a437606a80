"""Names and labels racetrackd gives to Docker objects: the one place they are spelt.

Labels join Docker (what runs) to the registry (what was asked): every container and image
carries the daemon instance and the job's name and version.
"""

from __future__ import annotations

import re

LABEL_COMPONENT = "racetrack-component"
LABEL_INSTANCE = "racetrackd.instance"
LABEL_JOB_NAME = "job-name"
LABEL_JOB_VERSION = "job-version"
LABEL_DEPLOYMENT = "racetrackd.deployment"

JOB_PORT = 7000
# Headers the gateway adds to every call (Racetrack's names; jobs read them).
TRACING_HEADER = "X-Request-Tracing-Id"
CALLER_HEADER = "X-Caller-Name"
DEFAULT_INSTANCE = "main"


def build_network(job_network: str) -> str:
    """The bridge image builds run on, beside the jobs' network (`RACETRACK_NETWORK`)."""
    return f"{job_network}-build"


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


def image_repository(instance: str, job_name: str) -> str:
    prefix = "racetrackd" if instance == DEFAULT_INSTANCE else f"racetrackd-{instance}"
    return f"{prefix}/job-{job_name}"


def image_tag(job_version: str, deployment_id: str) -> str:
    """Unique per deployment so a rebuild never overwrites the image a running job uses."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{job_version}-{deployment_id[:8]}")


def job_labels(instance: str, job_name: str, job_version: str, deployment_id: str) -> dict[str, str]:
    return {
        LABEL_COMPONENT: "job",
        LABEL_INSTANCE: instance,
        LABEL_JOB_NAME: job_name,
        LABEL_JOB_VERSION: job_version,
        LABEL_DEPLOYMENT: deployment_id,
    }


def pub_path(job_name: str, job_version: str) -> str:
    """Path prefix under which the gateway and the job itself serve a job."""
    return f"/pub/job/{job_name}/{job_version}"
