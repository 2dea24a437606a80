"""Use cases around deployments: request one (a DeployRequest, parsed by the edge that got it), read one, list them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from builders.git_source import check_remote_allowed
from jobmanifest import Manifest, versions
from racetrackd import maintenance
from racetrackd.auth import access
from racetrackd.auth.access import Identity
from racetrackd.auth.vault import Vault
from racetrackd.db import DeletedJob, Deployment, DeploymentStatus, Job, database
from racetrackd.deploy import imagejobs, jobsecrets
from racetrackd.errors import ConflictError, NotFoundError, ValidationError
from racetrackd.jobs.queries import job_dto, resolve_job
from racetrackd.plugins import jobtypes
from racetrackd.plugins.jobtypes import JobType
from racetrackd.plugins.store import PluginStore
from racetrackd.settings import Settings
from racetrackd.streams import ClientGone

MAX_UPLOAD_BYTES = 512 * 1024**2
SecretVars = tuple[dict[str, str], dict[str, str]]  # (build_env, runtime_env): NAME -> value


@dataclass(frozen=True)
class DeployRequest:
    """A request to deploy a job version, parsed once by the edge that received it (the API's JSON body,
    the dashboard's form), so the use case below sees values and never a request body."""

    manifest: Manifest
    requester: Identity
    archive: bytes | None = field(default=None, repr=False)  # the job's directory as tar.gz; None: git.remote
    force: bool = False  # redeploy a version that exists (or was deleted)
    no_cache: bool = False  # build without Docker's layer cache
    secret_vars: SecretVars | None = field(default=None, repr=False)  # None: not sent, the stored ones may do
    git_credentials: dict[str, str] | None = field(default=None, repr=False)  # {"username", "password"}
    # A docker-image job's pull credentials ({"username", "password"}), sealed, used only for the pull
    registry_credentials: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.archive is not None and len(self.archive) > MAX_UPLOAD_BYTES:
            raise ValidationError(f"build_context: larger than {MAX_UPLOAD_BYTES // 1024**2} MiB")

    @property
    def git_remote(self) -> str | None:
        """The remote the build clones: set exactly when no archive was uploaded."""
        return self.manifest.git.remote if self.archive is None and self.manifest.git is not None else None

    def without_source(self) -> DeployRequest:
        """The request of a job that builds nothing (docker-image): an uploaded directory is not kept."""
        return replace(self, archive=None)


def request_deployment(settings: Settings, plugins: PluginStore, vault: Vault, request: DeployRequest) -> Deployment:
    """Check a deploy request against this host (maintenance, scopes, job type, versions, git policy,
    secrets) and queue the deployment; nothing is stored when it is refused."""
    maintenance.ensure_changes_allowed("deploy")
    manifest, identity = request.manifest, request.requester
    authorize_deploy(identity, manifest.name, manifest.version)
    job_type, warnings = _check_job_type(settings, plugins, manifest)
    ensure_not_in_progress(manifest.name, manifest.version)  # even forced: one at a time per version
    if not request.force:
        ensure_version_is_new(manifest.name, manifest.version)
    registry = None
    if job_type.image_from_manifest is not None:
        # Nothing is built: the manifest alone deploys (a directory sent along is not needed).
        request = request.without_source()
        registry = jobsecrets.RegistryPull(
            imagejobs.registry_of(job_type.image_from_manifest.reference(manifest.jobtype_extra)),
            request.registry_credentials,
        )
    elif request.registry_credentials is not None:
        raise ValidationError(
            f"registry_credentials: only docker-image jobs pull an image; job type {job_type.name} builds its own"
        )
    # Checked here, not by the edge: a deploy refused for maintenance, scope or version says that first.
    elif request.git_remote is None and request.archive is None:
        raise ValidationError(
            "build_context: missing, and the manifest has no git.remote to build from",
            hint="upload the job's directory (rtd submit DIR) or set git.remote in job.yaml",
        )
    if request.git_remote is not None and registry is None:
        check_remote_allowed(request.git_remote, settings.git_allowed_schemes)
    requester = jobsecrets.Requester(
        subject=identity.subject if identity.kind != access.ANONYMOUS else None,
        git_remote=request.git_remote if registry is None else None,  # an image job runs nothing from git
        may_read_secrets=identity.allows(access.FULL_ACCESS),
    )
    secrets = jobsecrets.for_deployment(
        manifest, request.secret_vars, request.git_credentials, vault, requester, registry
    )
    deployment = Deployment(
        job_name=manifest.name,
        job_version=manifest.version,
        manifest_yaml=manifest.yaml,
        force=request.force,
        deployed_by=identity.display,
        warnings="\n".join(warnings) or None,
        requested_by=identity.subject if identity.kind != access.ANONYMOUS else None,
        no_cache=request.no_cache,
        secrets=jobsecrets.seal(secrets, vault),
    )
    if request.archive is not None:
        path = settings.data_dir / "uploads" / f"{deployment.id}.tar.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(request.archive)
        deployment.build_context_path = str(path)
    try:
        queue_once(deployment)
    except ConflictError:
        if deployment.build_context_path:
            Path(deployment.build_context_path).unlink(missing_ok=True)
        raise
    return deployment


def check_manifest(settings: Settings, plugins: PluginStore, manifest: Manifest) -> list[str]:
    """What this host says of a manifest that passed accept_manifest, without deploying it: its job
    type is installed and its jobtype_extra fits (ManifestError naming each field otherwise).
    Returns the warnings a deployment of it would carry (`rtd validate --with-daemon` asks)."""
    return _check_job_type(settings, plugins, manifest)[1]


def _check_job_type(settings: Settings, plugins: PluginStore, manifest: Manifest) -> tuple[JobType, list[str]]:
    job_type = jobtypes.resolve(manifest.jobtype, plugins.job_types())
    warnings = [
        *manifest.warnings,
        *jobtypes.check_extra(job_type, manifest.jobtype_extra),
        *plugins.validate_manifest(job_type, manifest.raw),
        *_python_version_not_applied(settings, job_type, manifest),
    ]
    return job_type, warnings


def _python_version_not_applied(settings: Settings, job_type: JobType, manifest: Manifest) -> list[str]:
    """python3's template builds on python:<python_version>-slim only when the host's base image is an
    official Python image (python:...); on any other (an air-gapped host's own) the job gets that
    image's Python, and its deployer must hear it rather than find out from a pickle that will not load."""
    wanted = manifest.jobtype_extra.get("python_version")
    setting = job_type.base_image_setting
    if wanted is None or setting is None or "python_version" not in {f.name for f in job_type.extra_fields}:
        return []
    base = settings.plugin_setting(setting) or dict(job_type.declared_settings).get(setting, "")
    if base.startswith("python:"):
        return []
    return [
        f"jobtype_extra.python_version: {wanted} is not applied: this host builds {job_type.name} jobs on {base} "
        f"(RACETRACK_{setting.upper()}), and the job runs on its Python"
    ]


def queue_once(deployment: Deployment) -> None:
    """Store `deployment` unless one of its job version is queued or running (or, unforced, the version
    exists): checked again and inserted under SQLite's write lock, so of concurrent requests for one
    version exactly one is queued and the others get 409, whichever HTTP worker process serves them."""
    with database.atomic("IMMEDIATE"):
        ensure_not_in_progress(deployment.job_name, deployment.job_version)
        if not deployment.force:
            ensure_version_is_new(deployment.job_name, deployment.job_version)
        deployment.save(force_insert=True)


def authorize_deploy(identity: Identity, name: str, version: str) -> None:
    """deploy_job on an existing family (or one whose first deployment is under way); deploy_new_family to start one."""
    starting = (
        Deployment.select()
        .where((Deployment.job_name == name) & (Deployment.status == DeploymentStatus.IN_PROGRESS))
        .exists()
    )
    if starting or Job.select().where(Job.name == name).exists():
        if not identity.allows(access.DEPLOY_JOB, name, version):
            raise access.forbidden(identity, access.DEPLOY_JOB, "deploy", name, version)
    elif not identity.allows(access.DEPLOY_NEW_FAMILY, name):
        raise access.forbidden(identity, access.DEPLOY_NEW_FAMILY, f"deploy the new job family {name}")


def ensure_version_is_new(name: str, version: str) -> None:
    """Versions are immutable: refuse one that is deployed or on its way (the caller may force)."""
    if Job.find(name, version) is not None:
        raise ConflictError(
            f"job {name} {version} is already deployed",
            hint="bump the version in job.yaml, or redeploy it with --force",
        )
    if DeletedJob.exists_for(name, version):
        raise ConflictError(
            f"job {name} {version} was deleted; versions are not reused",
            hint="bump the version in job.yaml, or deploy it again with --force",
        )


def ensure_not_in_progress(name: str, version: str) -> None:
    if Deployment.in_progress_for(name, version):
        raise ConflictError(
            f"a deployment of {name} {version} is already in progress",
            hint="wait for it to finish (rtd build-logs NAME --version VERSION -f shows its progress); "
            "a forced redeploy too waits until then",
        )


def get_deployment(deployment_id: str) -> Deployment:
    deployment = Deployment.get_or_none(Deployment.id == deployment_id)
    if deployment is None:
        raise NotFoundError(f"deployment {deployment_id} not found")
    return deployment


def recent_deployments(limit: int, job_name: str | None = None) -> list[Deployment]:
    query = Deployment.select().order_by(Deployment.create_time.desc())
    if job_name:
        query = query.where(Deployment.job_name == job_name)
    return list(query.limit(limit))


def deployment_dto(deployment: Deployment, settings: Settings) -> dict[str, Any]:
    """Racetrack's DeploymentDto shape."""
    job = None
    if deployment.status == DeploymentStatus.DONE:
        row = Job.find(deployment.job_name, deployment.job_version)
        job = job_dto(row, settings) if row is not None else None
    return {
        "id": deployment.id,
        "status": deployment.status,
        "phase": deployment.phase,
        "error": deployment.error,
        "job": job,
        "job_name": deployment.job_name,
        "job_version": deployment.job_version,
        "deployed_by": deployment.deployed_by,
        "image_name": deployment.image_name,
        "manifest_yaml": deployment.manifest_yaml,
        "create_time": int(deployment.create_time),
        "update_time": int(deployment.update_time),
        "infrastructure_target": "docker",
        "warnings": deployment.warnings,
        "phases": deployment.phase_timeline(),
        "git_commit": deployment.git_commit,
        "kind": deployment.kind,
        "rollback_of": deployment.rollback_of,
        # docker-image jobs: what jobtype_extra.image resolved to at deploy time (a rollback runs it again)
        "source_image": deployment.source_image_info(),
    }


def latest_deployment_of(name: str, version: str) -> Deployment:
    """The newest deployment of a job version (aliases like `latest` resolve through running jobs)."""
    if versions.is_alias(version):
        version = resolve_job(name, version).version
    deployment = (
        Deployment.select()
        .where((Deployment.job_name == name) & (Deployment.job_version == version))
        .order_by(Deployment.create_time.desc())
        .first()
    )
    if deployment is None:
        raise NotFoundError(f"no deployment of job {name} {version}")
    return deployment


def tail_lines(text: str, tail: int) -> str:
    """The last `tail` lines of `text` (all of it when tail is 0)."""
    if tail <= 0:
        return text
    return "".join(text.splitlines(keepends=True)[-tail:])


def follow_build_logs(deployment_id: str, gone: ClientGone, poll_interval: float = 0.3) -> Iterator[str]:
    """The build log as it grows, until the deployment is done or failed, or the client goes."""
    sent = 0
    while not gone.is_set():
        deployment = get_deployment(deployment_id)
        text, sent = deployment.build_logs_since(sent)
        if text:
            yield text
        if deployment.status != DeploymentStatus.IN_PROGRESS:
            return
        gone.wait(poll_interval)
