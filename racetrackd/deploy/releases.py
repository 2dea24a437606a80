"""Releases: every deployment is one, and a rollback re-runs an earlier one's image without a build."""

from __future__ import annotations

from typing import Any

import yaml

from jobmanifest.versions import SemanticVersion, is_semver
from racetrackd import maintenance
from racetrackd.db import Deployment, DeploymentStatus, Job, database
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import ConflictError, NotFoundError, ValidationError
from racetrackd.jobs.queries import resolve_job


def request_rollback(
    runtime: Runtime,
    name: str,
    version: str,
    target_id: str | None,
    requested_by: str | None,
    to_version: str | None = None,
) -> Deployment:
    """Queue a rollback of job `name` `version` to `target_id`, or to the release `to_version` runs now.

    Default: the release before the current one; when the version has only one release, the
    newest older version's current release. An older version's release runs in this version's
    place (its image and manifest, under this version's name), so `latest` serves it again and a
    second rollback returns to this version's own release; the older version keeps running too.
    """
    maintenance.ensure_changes_allowed("roll back jobs")
    job = resolve_job(name, version)
    target = _target(job, target_id, to_version)
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
            manifest_yaml=_as_version(target.manifest_yaml, job.version),
            force=True,
            deployed_by=requested_by,
            kind="rollback",
            rollback_of=target.id,
            image_name=target.image_name,
            source_image=target.source_image,  # a docker-image job's pinned digest goes with its image
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


def _target(job: Job, target_id: str | None, to_version: str | None) -> Deployment:
    done = _releases(job.name, job.version)
    if target_id is not None:
        target = done.where(Deployment.id == target_id).first()
        if target is None:
            raise NotFoundError(f"no successful deployment {target_id} of job {job.name} {job.version}")
        return target
    if to_version is not None:
        return _release_of_version(job, to_version)
    for deployment in done:
        if deployment.image_name != job.image_name:
            return deployment
    older = _older_versions(job)
    if older:
        return _release_of_version(job, older[0].version)
    running = current_release(job)
    now = f"; it runs deployment {running.id}, its only release" if running else ""
    raise NotFoundError(
        f"job {job.name} {job.version} has no earlier release and no older version to roll back to{now}",
        hint=f"rtd deployments {job.name} lists its releases",
    )


def _releases(name: str, version: str) -> Any:
    """The successful deployments of a job version that left an image, newest first."""
    return (
        Deployment.select()
        .where(
            (Deployment.job_name == name)
            & (Deployment.job_version == version)
            & (Deployment.status == DeploymentStatus.DONE)
            & Deployment.image_name.is_null(False)
        )
        .order_by(Deployment.create_time.desc())
    )


def _older_versions(job: Job) -> list[Job]:
    """The job's other versions below this one, newest first (only semantic versions compare)."""
    if not is_semver(job.version):
        return []
    mine = SemanticVersion.parse(job.version).sort_key()
    older = [
        other
        for other in Job.family(job.name)
        if is_semver(other.version) and SemanticVersion.parse(other.version).sort_key() < mine
    ]
    return sorted(older, key=lambda other: SemanticVersion.parse(other.version).sort_key(), reverse=True)


def _release_of_version(job: Job, to_version: str) -> Deployment:
    """The release version `to_version` of the job runs now (its newest successful one as a fallback)."""
    if to_version == job.version:
        raise ValidationError(f"to_version: {to_version} is the version being rolled back; give an older one")
    other = Job.find(job.name, to_version)
    if other is None:
        raise NotFoundError(f"job {job.name} has no version {to_version} to roll back to")
    target = current_release(other) or _releases(other.name, other.version).first()
    if target is None:
        raise NotFoundError(f"job {job.name} {to_version} has no successful release with an image")
    return target


def _as_version(manifest_yaml: str, version: str) -> str:
    """A release's manifest under the version it is rolled back into (an older version's says its own)."""
    manifest = yaml.safe_load(manifest_yaml)
    if not isinstance(manifest, dict) or str(manifest.get("version")) == version:
        return manifest_yaml
    return yaml.safe_dump({**manifest, "version": version}, sort_keys=False, allow_unicode=True)
