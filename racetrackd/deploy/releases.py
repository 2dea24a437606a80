"""Releases: every deployment is one, and a rollback re-runs an earlier one's image without a build."""

from __future__ import annotations

from racetrackd import maintenance
from racetrackd.db import Deployment, DeploymentStatus, Job, database
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import ConflictError, NotFoundError
from racetrackd.jobs.queries import resolve_job


def request_rollback(
    runtime: Runtime, name: str, version: str, target_id: str | None, requested_by: str | None
) -> Deployment:
    """Queue a rollback of job `name` `version` to `target_id` (default: the release before the current one)."""
    maintenance.ensure_changes_allowed("roll back jobs")
    job = resolve_job(name, version)
    target = _target(job, target_id)
    if Deployment.in_progress_for(job.name, job.version):
        raise ConflictError(
            f"a deployment of {job.name} {job.version} is already in progress", hint="wait for it to finish"
        )
    if not target.image_name or not runtime.image_exists(target.image_name):
        raise ConflictError(
            f"the image of deployment {target.id} ({target.image_name}) has been removed",
            hint="only the newest RACETRACK_KEEP_IMAGES images of a version are kept",
        )
    with database.atomic("IMMEDIATE"):  # checked again under the write lock: two rollbacks at once queue one
        if Deployment.in_progress_for(job.name, job.version):
            raise ConflictError(
                f"a deployment of {job.name} {job.version} is already in progress", hint="wait for it to finish"
            )
        return Deployment.create(
            job_name=job.name,
            job_version=job.version,
            manifest_yaml=target.manifest_yaml,
            force=True,
            deployed_by=requested_by,
            kind="rollback",
            rollback_of=target.id,
            image_name=target.image_name,
            git_commit=target.git_commit,
            secrets=target.secrets,  # the release's own runtime secrets
        )


def current_release(job: Job) -> Deployment | None:
    """The deployment whose image the job runs now (re-running it is a redeploy without a build)."""
    return (
        Deployment.select()
        .where(
            (Deployment.job_name == job.name)
            & (Deployment.job_version == job.version)
            & (Deployment.status == DeploymentStatus.DONE)
            & (Deployment.image_name == job.image_name)
        )
        .order_by(Deployment.create_time.desc())
        .first()
    )


def _target(job: Job, target_id: str | None) -> Deployment:
    done = (
        Deployment.select()
        .where(
            (Deployment.job_name == job.name)
            & (Deployment.job_version == job.version)
            & (Deployment.status == DeploymentStatus.DONE)
            & Deployment.image_name.is_null(False)
        )
        .order_by(Deployment.create_time.desc())
    )
    if target_id is not None:
        target = done.where(Deployment.id == target_id).first()
        if target is None:
            raise NotFoundError(f"no successful deployment {target_id} of job {job.name} {job.version}")
        return target
    for deployment in done:
        if deployment.image_name != job.image_name:
            return deployment
    raise NotFoundError(f"job {job.name} {job.version} has no earlier release to roll back to")
