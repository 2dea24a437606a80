"""Turn a deployment's source into an image: fetch it (upload or git), render the job type's
Dockerfile, build with the Docker runtime, and collect old images.

Runs only in the background worker, for `racetrackd.deploy.deployer`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builders.context import (
    DOCKERFILE_NAME,
    ContextLimits,
    assemble_docker_context,
    resolve_inside,
    unpack_build_context,
)
from builders.dockerfile import job_dockerfile_variables, render_dockerfile, render_job_dockerfile
from builders.git_source import GitCredentials, check_remote_address, check_remote_allowed, clone, redact_remote
from jobmanifest import Manifest
from racetrackd import __version__, naming
from racetrackd.auth.vault import Vault
from racetrackd.db import Deployment
from racetrackd.deploy import jobsecrets
from racetrackd.docker.images import prune_job_images
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import BuildError, RacetrackError, ValidationError
from racetrackd.plugins import jobtypes
from racetrackd.plugins.jobtypes import JobType
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 20
LABEL_COMMIT = "racetrackd.git-commit"
LABEL_MANIFEST_DIGEST = "racetrackd.manifest-digest"
LABEL_JOB_TYPE = "racetrackd.job-type"
LABEL_BUILD_STAGE = "racetrackd.build-stage"  # on a multi-stage build's intermediate stage: the job name


class ImageBuilder:
    def __init__(self, settings: Settings, runtime: Runtime, vault: Vault, daemon_url_for_builds: str, *,
                 isolate_builds: bool = True) -> None:
        self.settings = settings
        self.runtime = runtime
        self.vault = vault
        self.daemon_url_for_builds = daemon_url_for_builds  # where RUN steps (build network) reach the daemon
        # RUN steps run on a bridge of their own: they reach the package index, not the host's
        # loopback services nor the jobs' containers (see racetrackd.jobs.addressing)
        self.build_network = naming.build_network(settings.network)
        self.isolate_builds = isolate_builds

    def fetch_source(self, deployment: Deployment, manifest: Manifest, job_type: JobType, workspace: Path,
                     secrets: jobsecrets.JobSecrets) -> Path:
        """The job's directory, from the upload or a git clone; records the commit on the deployment."""
        if deployment.build_context_path:
            job_dir = workspace / "job"
            unpack_build_context(Path(deployment.build_context_path), job_dir, limits=ContextLimits(
                int(self.settings.max_context_size), self.settings.max_context_entries,
                self.settings.max_context_ratio))
        elif manifest.git is not None:
            check_remote_allowed(manifest.git.remote, self.settings.git_allowed_schemes)
            addresses = check_remote_address(manifest.git.remote, self.settings.git_allow_private_remotes)
            creds = secrets.git_credentials
            credentials = GitCredentials(username=creds["username"], password=creds["password"]) if creds else None
            checkout = clone(manifest.git.remote, manifest.git.branch, manifest.git.directory, credentials,
                             workspace / "repo", self.settings.build_timeout, addresses)
            job_dir = checkout.context_dir
            deployment.git_commit = checkout.commit
            deployment.save(only=[Deployment.git_commit])
            deployment.append_logs(f"fetched {redact_remote(manifest.git.remote)} at {checkout.commit}\n",
                                   int(self.settings.build_log_max_size))
            if _size_of(job_dir) > self.settings.max_context_size:
                raise ValidationError(f"git.directory: larger than {self.settings.max_context_size:.0f} bytes")
        else:
            raise ValidationError("build_context: missing, and the manifest has no git.remote to build from")
        _drop_secret_files(manifest, job_dir)
        jobtypes.check_extra(job_type, manifest.jobtype_extra, job_dir)
        return job_dir

    def build(self, deployment: Deployment, manifest: Manifest, job_type: JobType, job_dir: Path,
              secrets: jobsecrets.JobSecrets) -> str:
        """Build the job's image; returns its reference. BuildError ends with the failing output."""
        base_image = getattr(self.settings, job_type.base_image_setting) if job_type.base_image_setting else ""
        runtime_image = getattr(self.settings, job_type.runtime_image_setting) if job_type.runtime_image_setting else ""
        secrets_url, digest = self._secrets_url(manifest, secrets)
        variables = jobtypes.template_variables(
            manifest=manifest, job_type=job_type, base_image=base_image, runtime_image=runtime_image,
            build_stage_labels={naming.LABEL_INSTANCE: self.settings.instance, LABEL_BUILD_STAGE: manifest.name},
            build={
                "ca_bundle": self.settings.build_ca_bundle is not None,
                "pip_index_url": self.settings.build_pip_index_url,
                "pip_extra_index_url": self.settings.build_pip_extra_index_url,
                "pip_trusted_host": self.settings.build_pip_trusted_host,
                "goproxy": self.settings.build_goproxy,
                "secrets_url": secrets_url,
                "secret_names": sorted(secrets.build_env),
            },
            git_version=deployment.git_commit or "", racetrackd_version=__version__,
        )
        dockerfile, build_args = _dockerfile(job_type, job_dir, manifest, variables)
        tag = f"{naming.image_repository(self.settings.instance, manifest.name)}:" \
              f"{naming.image_tag(manifest.version, deployment.id)}"
        labels = {
            **naming.job_labels(self.settings.instance, manifest.name, manifest.version, deployment.id),
            LABEL_COMMIT: deployment.git_commit or "",
            LABEL_MANIFEST_DIGEST: hashlib.sha256(manifest.yaml.encode()).hexdigest(),
            LABEL_JOB_TYPE: job_type.full_name,
        }
        # The build log echoes each RUN line: the secrets URL's digest is masked like the values it opens.
        logs = _ThrottledLog(deployment, jobsecrets.Redactor([*secrets.values(), digest]),
                             int(self.settings.build_log_max_size))
        deadline = time.monotonic() + self.settings.build_timeout
        jobtype_dir = None if job_type.job_dockerfile else job_type.plugin_dir
        with assemble_docker_context(dockerfile, job_dir, jobtype_dir, self.settings.build_ca_bundle,
                                     with_secrets_helper=bool(secrets.build_env)) as ctx:
            try:
                self.runtime.ensure_network(self.build_network, isolated=self.isolate_builds)
                self.runtime.build_image(ctx, DOCKERFILE_NAME, tag, labels, logs.writer(deadline),
                                         no_cache=deployment.no_cache, timeout=self.settings.build_timeout,
                                         memory_limit=int(self.settings.build_memory), build_args=build_args,
                                         network=self.build_network)
            except BuildError as exc:
                logs.flush()
                raise BuildError(
                    f"image build failed: {exc.message}\n--- last build output ---\n{tail(deployment.build_log_text)}"
                ) from exc
            finally:
                logs.flush()
        return tag

    def _secrets_url(self, manifest: Manifest, secrets: jobsecrets.JobSecrets) -> tuple[str, str]:
        """Where the build's RUN steps fetch the secret build env, and the digest in it ('' when there is none)."""
        if not secrets.build_env:
            return "", ""
        digest = jobsecrets.build_secrets_digest(self.vault, manifest.name, manifest.version, secrets.build_env)
        base = self.daemon_url_for_builds
        return f"{base}/lifecycle/api/v1/build-secrets/{manifest.name}/{manifest.version}/{digest}", digest

    def collect_old_images(self, name: str, version: str) -> None:
        prune_job_images(self.runtime, self.settings.instance, name, version, self.settings.keep_images)
        prune_build_stages(self.runtime, self.settings.instance, name, self.settings.keep_images)


def _dockerfile(job_type: JobType, job_dir: Path, manifest: Manifest,
                variables: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The Dockerfile to build and the build args to build it with.

    A plugin template gets everything as template variables. The job's own Dockerfile (a
    `dockerfile_from_job` job type) is rendered in the sandbox with the documented variables only
    when the job type says so, else used as it is; either way it also gets build args, which a
    plain Dockerfile declares with `ARG`: every `build_env` variable, `BASE_IMAGE` (the operator's base image for the job type, so
    `ARG BASE_IMAGE=python:3.11-slim` + `FROM $BASE_IMAGE` builds on an air-gapped host too) and,
    when the job has secret build env, `RACETRACK_BUILD_SECRETS_URL` for
    racetrack-build/with-build-secrets.py. Build args are not kept in the image's environment.
    """
    source = job_type.job_dockerfile
    if source is None:
        return render_dockerfile(job_type.plugin_dir, job_type.dockerfile_template, variables), {}
    name = source.path(manifest.jobtype_extra)
    field = f"jobtype_extra.{source.path_field}"
    try:
        text = resolve_inside(job_dir, name, field).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{field}: cannot read {name}: {exc}") from exc
    # The job's own file is user input: rendered (when the job type says so) only in the sandbox.
    dockerfile = render_job_dockerfile(text, name, job_dockerfile_variables(variables), field) if source.render \
        else text
    build_args = dict(manifest.build_env)
    if variables["base_image"]:
        build_args["BASE_IMAGE"] = variables["base_image"]
    if variables["build"]["secrets_url"]:
        build_args["RACETRACK_BUILD_SECRETS_URL"] = variables["build"]["secrets_url"]
    return dockerfile, build_args


def prune_build_stages(runtime: Runtime, instance: str, name: str, keep: int) -> None:
    """Remove a job's untagged build-stage images (multi-stage templates) beyond the newest `keep`:
    they are only a build cache, and nothing else would ever remove them."""
    for ref in runtime.list_images({naming.LABEL_INSTANCE: instance, LABEL_BUILD_STAGE: name})[keep:]:
        try:
            runtime.remove_image(ref)
        except RacetrackError as exc:
            log.info("keeping build-stage image %s: %s", ref, exc.message)


def _drop_secret_files(manifest: Manifest, job_dir: Path) -> None:
    """Secret env files never reach an image, even when a clone or an upload brought them along.

    Only the name in the job's directory is removed: a link is unlinked, never followed, so a
    committed link cannot make the daemon delete a file elsewhere on the host.
    """
    root = job_dir.resolve()
    for name in (manifest.secret_build_env_file, manifest.secret_runtime_env_file):
        if not name:
            continue
        path = job_dir / name
        if not path.parent.resolve().is_relative_to(root):
            continue  # its directory is a link out of the job (refused for clones and uploads anyway)
        if path.is_symlink() or path.is_file():
            path.unlink()


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _size_of(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file() and not path.is_symlink())


class _ThrottledLog:
    """Collect build output and store it on the deployment at most every half second."""

    def __init__(self, deployment: Deployment, redact: Callable[[str], str], max_chars: int) -> None:
        self.deployment = deployment
        self.redact = redact
        self.max_chars = max_chars
        self.pending: list[str] = []
        self.last_flush = time.monotonic()

    def writer(self, deadline: float) -> Callable[[str], None]:
        def write(text: str) -> None:
            self.pending.append(text)
            now = time.monotonic()
            if now - self.last_flush > 0.5:
                self.flush()
            if now > deadline:
                raise BuildError("the build took longer than RACETRACK_BUILD_TIMEOUT and was stopped")
        return write

    def flush(self) -> None:
        if self.pending:
            self.deployment.append_logs(self.redact("".join(self.pending)), self.max_chars)
            self.pending.clear()
        self.last_flush = time.monotonic()

