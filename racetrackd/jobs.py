"""Use cases around jobs: list, find (with version aliases), describe and delete."""

from __future__ import annotations

import re
from typing import Any

import yaml

from racetrackd import naming
from racetrackd.db import Job, JobStatus
from racetrackd.errors import JobNotFound
from racetrackd.runtime import Runtime
from racetrackd.settings import Settings

# Statuses a version alias may point at (a starting job is not served through `latest`).
ALIASABLE = {JobStatus.RUNNING, JobStatus.ERROR, JobStatus.LOST}


def list_jobs() -> list[Job]:
    return list(Job.select().order_by(Job.name, Job.create_time))


def resolve_job(name: str, version: str) -> Job:
    """The job `name` at `version`, where version may be `latest` or an x-pattern like `1.x`."""
    if version == "latest" or "x" in version.split("."):
        pattern = None if version == "latest" else _x_pattern(version)
        candidates = [
            job for job in Job.family(name)
            if job.status in ALIASABLE and "-" not in job.version and (pattern is None or pattern.match(job.version))
        ]
        if candidates:
            return max(candidates, key=lambda job: _version_key(job.version))
    else:
        job = Job.find(name, version)
        if job is not None:
            return job
    raise JobNotFound(f"job {name} {version} not found")


def _x_pattern(version: str) -> re.Pattern[str]:
    parts = [r"\d+" if part == "x" else re.escape(part) for part in version.split(".")]
    return re.compile("^" + r"\.".join(parts) + r"(\..*)?$")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0]))


def delete_job(runtime: Runtime, name: str, version: str) -> Job:
    """Remove the job's container and its registry row (exact version only)."""
    job = Job.find(name, version)
    if job is None:
        raise JobNotFound(f"job {name} {version} not found")
    runtime.remove_container(job.container_name)
    job.delete_instance()
    return job


def job_dto(job: Job, settings: Settings) -> dict[str, Any]:
    """Racetrack's JobDto shape."""
    return {
        "id": str(job.get_id()),
        "name": job.name,
        "version": job.version,
        "status": job.status,
        "create_time": int(job.create_time),
        "update_time": int(job.update_time),
        "manifest": yaml.safe_load(job.manifest_yaml),
        "manifest_yaml": job.manifest_yaml,
        "internal_name": job.internal_name,
        "pub_url": settings.public_url + naming.pub_path(job.name, job.version),
        "error": job.error,
        "notice": None,
        "image_tag": job.image_name,
        "deployed_by": job.deployed_by,
        "last_call_time": int(job.last_call_time) if job.last_call_time else None,
        "infrastructure_target": "docker",
        "replica_internal_names": [job.internal_name],
        "job_type_version": job.job_type_version,
        "infrastructure_stats": {},
    }
