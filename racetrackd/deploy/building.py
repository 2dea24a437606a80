"""Turn a deployment's source into an image: fetch it (upload or git), build the recipe
(builders.recipe) with the Docker runtime, and collect old images.

The builder reports what happens (build output, the commit it fetched) to a `BuildReport` and
returns its results (`FetchedSource`, `BuildResult`); it never writes the registry. The deploy
use case (racetrackd.deploy.deployer) records them on the deployment with `DeploymentRecord`.
Runs only in the background worker.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from builders import labels
from builders.context import DOCKERFILE_NAME, ContextLimits, assemble_docker_context, unpack_build_context
from builders.git_source import GitCredentials, check_remote_address, check_remote_allowed, clone, redact_remote
from builders.recipe import BuildOptions, ImageRecipe, JobTypeFiles, OwnDockerfile, image_recipe
from jobmanifest import Manifest
from racetrackd import __version__, naming
from racetrackd.auth.vault import Vault
from racetrackd.db import BUILD_LOG_MAX_CHARS, Deployment
from racetrackd.deploy import jobsecrets
from racetrackd.docker.images import prune_job_images
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import BuildError, ImagePushError, RacetrackError, ValidationError
from racetrackd.jobs.logtail import LOG_TAIL_LINES  # a failed build quotes as many lines as a failed start
from racetrackd.plugins import jobtypes
from racetrackd.plugins.jobtypes import JobType
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

# How much of the latest build output the builder keeps itself, for the tail quoted in a BuildError.
KEPT_OUTPUT_CHARS = 64 * 1024


class BuildReport(Protocol):
    """Where the builder reports as it goes (the deployer records it on the deployment)."""

    def log(self, text: str) -> None:
        """Build output (redacted), in batches."""

    def source_fetched(self, git_commit: str) -> None:
        """The commit a git source was cloned at, as soon as it is known."""


@dataclasses.dataclass(frozen=True)
class FetchedSource:
    job_dir: Path  # the job's files, inside the workspace
    git_commit: str | None  # the commit cloned; None for an uploaded build context


@dataclasses.dataclass(frozen=True)
class BuildResult:
    # the tag built, e.g. racetrackd/job-adder:0.0.1-1a2b3c4d; with RACETRACK_REGISTRY, the pushed
    # reference 10.0.0.5:5000/racetrackd/job-adder:0.0.1-1a2b3c4d (what every node pulls)
    image: str
    image_id: str  # the engine's id of it
    duration: float  # seconds
    log_tail: str  # the last lines of the build output (all of it went to BuildReport.log)


class ImageBuilder:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        vault: Vault,
        daemon_url_for_builds: str,
        *,
        isolate_builds: bool = True,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.vault = vault
        self.daemon_url_for_builds = daemon_url_for_builds  # where RUN steps (build network) reach the daemon
        # RUN steps run on a bridge of their own: they reach the package index, not the host's
        # loopback services nor the jobs' containers (see racetrackd.jobs.addressing)
        self.build_network = naming.build_network(settings.network)
        self.isolate_builds = isolate_builds

    def fetch_source(
        self,
        manifest: Manifest,
        job_type: JobType,
        workspace: Path,
        secrets: jobsecrets.JobSecrets,
        *,
        build_context: Path | None,
        report: BuildReport,
    ) -> FetchedSource:
        """The job's directory, from the uploaded `build_context` or a git clone."""
        commit = None
        if build_context:
            job_dir = workspace / "job"
            unpack_build_context(
                build_context,
                job_dir,
                limits=ContextLimits(
                    int(self.settings.max_context_size),
                    self.settings.max_context_entries,
                    self.settings.max_context_ratio,
                ),
            )
        elif manifest.git is not None:
            check_remote_allowed(manifest.git.remote, self.settings.git_allowed_schemes)
            addresses = check_remote_address(manifest.git.remote, self.settings.git_allow_private_remotes)
            creds = secrets.git_credentials
            credentials = GitCredentials(username=creds["username"], password=creds["password"]) if creds else None
            checkout = clone(
                manifest.git.remote,
                manifest.git.branch,
                manifest.git.directory,
                credentials,
                workspace / "repo",
                self.settings.build_timeout,
                addresses,
            )
            job_dir = checkout.context_dir
            commit = checkout.commit
            report.source_fetched(commit)
            report.log(f"fetched {redact_remote(manifest.git.remote)} at {checkout.commit}\n")
            if _size_of(job_dir) > self.settings.max_context_size:
                raise ValidationError(f"git.directory: larger than {self.settings.max_context_size:.0f} bytes")
        else:
            raise ValidationError("build_context: missing, and the manifest has no git.remote to build from")
        _drop_secret_files(manifest, job_dir)
        jobtypes.check_extra(job_type, manifest.jobtype_extra, job_dir)
        return FetchedSource(job_dir=job_dir, git_commit=commit)

    def recipe(
        self,
        manifest: Manifest,
        job_type: JobType,
        job_dir: Path,
        secrets: jobsecrets.JobSecrets,
        *,
        secrets_url: str,
        deployment_id: str,
        git_commit: str = "",
    ) -> ImageRecipe:
        """The recipe of the job's image, from this daemon's settings and the secrets URL of this build."""
        return image_recipe(
            manifest=manifest,
            job_type=self.job_type_files(job_type, manifest),
            job_dir=job_dir,
            options=BuildOptions(
                ca_bundle=self.settings.build_ca_bundle,
                pip_index_url=self.settings.build_pip_index_url,
                pip_extra_index_url=self.settings.build_pip_extra_index_url,
                pip_trusted_host=self.settings.build_pip_trusted_host,
                goproxy=self.settings.build_goproxy,
                cargo_registry=self.settings.build_cargo_registry,
                secrets_url=secrets_url,
                secret_names=tuple(sorted(secrets.build_env)),
            ),
            instance=self.settings.instance,
            deployment_id=deployment_id,
            git_commit=git_commit,
            racetrackd_version=__version__,
        )

    def job_type_files(self, job_type: JobType, manifest: Manifest) -> JobTypeFiles:
        """What the recipe needs of `job_type`, with its base and runtime images: the values of the
        settings it names (declared by plugins, e.g. python_base_image)."""
        own = job_type.job_dockerfile
        return JobTypeFiles(
            full_name=job_type.full_name,
            plugin_dir=job_type.plugin_dir,
            dockerfile_template=job_type.dockerfile_template,
            own_dockerfile=None
            if own is None
            else OwnDockerfile(
                path=own.path(manifest.jobtype_extra), field=f"jobtype_extra.{own.path_field}", render=own.render
            ),
            base_image=self._image_setting(job_type, job_type.base_image_setting),
            runtime_image=self._image_setting(job_type, job_type.runtime_image_setting),
        )

    def _image_setting(self, job_type: JobType, name: str | None) -> str:
        """The value of a job type's image setting: the daemon's (read at start), else its plugin's default."""
        if not name:
            return ""
        value = self.settings.plugin_setting(name)
        return value if value is not None else dict(job_type.declared_settings).get(name, "")

    def build(
        self,
        manifest: Manifest,
        job_type: JobType,
        job_dir: Path,
        secrets: jobsecrets.JobSecrets,
        *,
        deployment_id: str,
        report: BuildReport,
        git_commit: str = "",
        no_cache: bool = False,
    ) -> BuildResult:
        """Build the job's image, and push it when a registry is set. BuildError ends with the failing
        output; ImagePushError names the registry."""
        started = time.monotonic()
        secrets_url, digest = self._secrets_url(manifest, secrets)
        recipe = self.recipe(
            manifest,
            job_type,
            job_dir,
            secrets,
            secrets_url=secrets_url,
            deployment_id=deployment_id,
            git_commit=git_commit,
        )
        # The build log echoes each RUN line: the secrets URL's digest is masked like the values it opens.
        logs = _ThrottledLog(report, jobsecrets.Redactor([*secrets.values(), digest]))
        deadline = started + self.settings.build_timeout
        dockerfile, api_labels = recipe.build_input()
        image = naming.registry_ref(self.settings.registry, recipe.tag)
        with assemble_docker_context(
            dockerfile,
            recipe.job_dir,
            recipe.jobtype_dir,
            recipe.ca_bundle,
            with_secrets_helper=recipe.with_secrets_helper,
        ) as ctx:
            try:
                self.runtime.ensure_network(self.build_network, isolated=self.isolate_builds)
                image_id = self.runtime.build_image(
                    ctx,
                    DOCKERFILE_NAME,
                    image,
                    api_labels,
                    logs.writer(deadline),
                    no_cache=no_cache,
                    timeout=self.settings.build_timeout,
                    memory_limit=int(self.settings.build_memory),
                    build_args=recipe.build_args,
                    network=self.build_network,
                )
            except BuildError as exc:
                logs.flush()
                raise BuildError(
                    f"image build failed: {failure_reason(exc.message, logs.kept())}"
                    f"\n--- last build output ---\n{tail(logs.kept())}"
                ) from exc
            finally:
                logs.flush()
        if self.settings.registry:
            self._push(image, logs, deadline)
        return BuildResult(
            image=image, image_id=image_id, duration=time.monotonic() - started, log_tail=tail(logs.kept())
        )

    def push(self, image: str, report: BuildReport) -> None:
        """Push an image made without a build (a docker-image job's pin, named in RACETRACK_REGISTRY)
        as a build pushes its own; ImagePushError names the registry. Within RACETRACK_BUILD_TIMEOUT."""
        logs = _ThrottledLog(report, jobsecrets.Redactor([]))
        self._push(image, logs, time.monotonic() + self.settings.build_timeout)

    def _push(self, image: str, logs: _ThrottledLog, deadline: float) -> None:
        """Push the image so that every swarm node can pull it; the deployment fails when it cannot."""
        logs.writer(deadline)(f"pushing {image}\n")
        try:
            self.runtime.push_image(image, logs.writer(deadline))
        except (RacetrackError, OSError) as exc:
            detail = exc.message if isinstance(exc, RacetrackError) else str(exc)
            raise ImagePushError(
                f"pushing the image to the registry {self.settings.registry} (RACETRACK_REGISTRY) failed: {detail}",
                hint="check that the Docker engine reaches the registry (a registry on plain HTTP must be in "
                "each engine's insecure-registries) and, for a private one, RACETRACK_REGISTRY_USERNAME and "
                "RACETRACK_REGISTRY_PASSWORD_FILE",
            ) from exc
        finally:
            logs.flush()

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


class DeploymentRecord:
    """A `BuildReport` that records on the deployment's row: its build log and the commit fetched."""

    def __init__(self, deployment: Deployment, max_log_chars: int = BUILD_LOG_MAX_CHARS) -> None:
        self.deployment = deployment
        self.max_log_chars = max_log_chars

    def log(self, text: str) -> None:
        self.deployment.append_logs(text, self.max_log_chars)

    def source_fetched(self, git_commit: str) -> None:
        self.deployment.git_commit = git_commit
        self.deployment.save(only=[Deployment.git_commit])


def prune_build_stages(runtime: Runtime, instance: str, name: str, keep: int) -> None:
    """Remove a job's untagged build-stage images (multi-stage templates) beyond the newest `keep`:
    they are only a build cache, and nothing else would ever remove them."""
    for ref in runtime.list_images(labels.build_stage_labels(instance, name))[keep:]:
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


_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(docker_message: str, output: str) -> str:
    """Why a build failed, in the failing tool's words: pip's `ERROR: ...` lines (a bad requirement pin
    says which one) rather than Docker's "The command '/bin/sh -c pip install ...' returned a non-zero
    code", which only says that some step failed."""
    plain = _ANSI_COLOUR.sub("", output)  # Docker marks a step's stderr red: \x1b[91mERROR: ...
    errors = [line.strip() for line in plain.splitlines() if line.strip().startswith("ERROR:")]
    return "; ".join(dict.fromkeys(errors)) if errors else docker_message


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _size_of(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file() and not path.is_symlink())


class _ThrottledLog:
    """Collect build output, redacted, and report it at most every half second; keep its latest part."""

    def __init__(self, report: BuildReport, redact: Callable[[str], str]) -> None:
        self.report = report
        self.redact = redact
        self.pending: list[str] = []
        self.latest: collections.deque[str] = collections.deque()
        self.latest_chars = 0
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
            text = self.redact("".join(self.pending))
            self.pending.clear()
            self._keep(text)
            self.report.log(text)
        self.last_flush = time.monotonic()

    def kept(self) -> str:
        return "".join(self.latest)

    def _keep(self, text: str) -> None:
        self.latest.append(text)
        self.latest_chars += len(text)
        while len(self.latest) > 1 and self.latest_chars - len(self.latest[0]) >= KEPT_OUTPUT_CHARS:
            self.latest_chars -= len(self.latest.popleft())
