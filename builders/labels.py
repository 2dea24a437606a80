"""The labels and names racetrackd puts on the images it builds (and the containers it runs from them).

Labels join Docker (what runs) to the registry (what was asked): every container and image
carries the daemon instance and the job's name and version. They are spelt here, beside the rest
of the image recipe; racetrackd.naming hands the ones containers share on to the daemon.
"""

from __future__ import annotations

import re

LABEL_COMPONENT = "racetrack-component"
LABEL_INSTANCE = "racetrackd.instance"
LABEL_JOB_NAME = "job-name"
LABEL_JOB_VERSION = "job-version"
LABEL_DEPLOYMENT = "racetrackd.deployment"  # on containers; an image's deployment is in its tag
# Only on images:
LABEL_JOB_TYPE = "racetrackd.job-type"
LABEL_BUILD_STAGE = "racetrackd.build-stage"  # on a multi-stage build's intermediate stage: the job name

DEFAULT_INSTANCE = "main"


def image_repository(instance: str, job_name: str) -> str:
    prefix = "racetrackd" if instance == DEFAULT_INSTANCE else f"racetrackd-{instance}"
    return f"{prefix}/job-{job_name}"


def image_tag(job_version: str, deployment_id: str) -> str:
    """Unique per deployment so a rebuild never overwrites the image a running job uses."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{job_version}-{deployment_id[:8]}")


def job_labels(instance: str, job_name: str, job_version: str, deployment_id: str) -> dict[str, str]:
    """What every image and container of one deployment of a job carries."""
    return {
        LABEL_COMPONENT: "job",
        LABEL_INSTANCE: instance,
        LABEL_JOB_NAME: job_name,
        LABEL_JOB_VERSION: job_version,
        LABEL_DEPLOYMENT: deployment_id,
    }


def image_labels(instance: str, job_name: str, job_version: str, job_type: str) -> dict[str, str]:
    """What every image of a job version carries: the same for each of its deployments, so that a
    job type's template sets them above the job's code, in a step the cache keeps (a label that
    changed per deployment would be one more step after the code on every redeploy)."""
    return {
        LABEL_COMPONENT: "job",
        LABEL_INSTANCE: instance,
        LABEL_JOB_NAME: job_name,
        LABEL_JOB_VERSION: job_version,
        LABEL_JOB_TYPE: job_type,
    }


def build_stage_labels(instance: str, job_name: str) -> dict[str, str]:
    """What the untagged intermediate stages of a multi-stage build carry, so they are found and removed."""
    return {LABEL_INSTANCE: instance, LABEL_BUILD_STAGE: job_name}
