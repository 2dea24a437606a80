"""Carry out one deployment: fetch and build (racetrackd.deploy.building), start, wait until ready, switch over.

Runs only in the background worker. A redeploy (`force`) starts the new container beside the
old one under a staging name and swaps only once the new one is ready, so a failed redeploy
leaves the old version serving.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from pathlib import Path

from jobmanifest import Manifest
from racetrackd import audit, naming
from racetrackd.auth import access
from racetrackd.auth.accounts import Accounts
from racetrackd.db import AuditEvent, DeletedJob, Deployment, DeploymentStatus, Job, JobStatus, is_storage_full
from racetrackd.deploy import imagejobs, jobsecrets
from racetrackd.deploy.building import DeploymentRecord, ImageBuilder
from racetrackd.docker.orchestrator import (
    MISSING,
    PENDING,
    RUNNING,
    SWARM,
    Orchestrator,
    ReleaseSpec,
    Replica,
    nodes_that_may_run,
)
from racetrackd.docker.runtime import Hardening, Runtime
from racetrackd.errors import (
    ConflictError,
    ImageUnavailable,
    JobStartError,
    JobTypeError,
    RacetrackError,
    ValidationError,
)
from racetrackd.jobs import queries as jobs
from racetrackd.jobs.addressing import Addressing
from racetrackd.jobs.containers import ContainerReplicas
from racetrackd.jobs.logtail import with_log_tail
from racetrackd.jobs.probes import (
    PROBE_STEP,
    STATE_STEP,
    ContractOrServer,
    ServerAnswers,
    StartCheck,
    StartFailed,
    WrapperStarted,
)
from racetrackd.manifest import container_limits, load_stored
from racetrackd.plugins import jobtypes
from racetrackd.plugins.jobtypes import Confinement, JobType
from racetrackd.plugins.store import PluginStore
from racetrackd.serving import Serving
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

SWITCH_GRACE_SECONDS = 0.3
UNPLACED_GRACE_SECONDS = 5.0  # how long a task Swarm cannot place may wait for a node before the start fails
ENTRYPOINT_PHASE = "initializing Job entrypoint"
# Waits between attempts to record a failed deployment: a full disk may free up (images pruned, logs
# rotated); until it is recorded the deployment would look in progress for ever.
STATUS_WRITE_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
DISK_FULL = (
    "the disk under racetrackd's data dir is full ({detail}): free some space (old images: "
    "docker image prune) and deploy again"
)


class FailureNotRecorded(Exception):
    """A deployment failed and even its failure could not be written (the registry is unwritable): the
    worker keeps it and tries again later, so it never stays in progress."""

    def __init__(self, deployment: Deployment, message: str) -> None:
        super().__init__(f"deployment {deployment.id}: could not record its failure: {message}")
        self.deployment = deployment
        self.message = message


def record_failure(deployment: Deployment, message: str, delays: tuple[float, ...] | None = None) -> None:
    """End `deployment` failed with `message`, retrying the write with backoff (STATUS_WRITE_DELAYS);
    FailureNotRecorded when every attempt fails."""
    for delay in (*(STATUS_WRITE_DELAYS if delays is None else delays), None):
        try:
            deployment.finish(DeploymentStatus.FAILED, message)
            return
        except Exception as exc:  # peewee or OSError; whatever it is, retry then hand over
            log.warning(
                "deployment %s: could not record its failure (%s)%s",
                deployment.id,
                exc,
                "" if delay is None else f"; trying again in {delay:g} s",
            )
            if delay is None:
                raise FailureNotRecorded(deployment, message) from exc
            time.sleep(delay)


class Deployer:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        plugins: PluginStore,
        addressing: Addressing,
        accounts: Accounts,
        builder: ImageBuilder,
        orchestrator: Orchestrator | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.orchestrator: Orchestrator = orchestrator or ContainerReplicas(runtime, addressing)
        self.builder = builder
        self.plugins = plugins
        self.addressing = addressing
        self.accounts = accounts
        self.vault = builder.vault

    def run(self, deployment: Deployment) -> None:
        """Carry out `deployment`, ending it done or failed; raises only FailureNotRecorded (the registry
        could not take even the failure)."""
        workspace = self.settings.data_dir / "workspaces" / deployment.id
        redact = jobsecrets.Redactor([])
        try:
            secrets = jobsecrets.of_deployment(deployment, self.vault)
            redact = jobsecrets.Redactor(secrets.values())  # errors quote build output and job logs
            self._deploy(deployment, workspace, secrets)
        except RacetrackError as exc:
            message = redact(exc.message)
            log.warning("deployment %s failed: %s", deployment.id, message)
            self._fail(deployment, message)
        except Exception as exc:  # a bug must fail the deployment, not kill the worker
            if is_storage_full(exc):
                message = DISK_FULL.format(detail=exc)
                log.error("deployment %s failed: %s", deployment.id, message)
            else:
                message = redact(f"internal error: {type(exc).__name__}: {exc}")
                log.error(
                    "deployment %s failed unexpectedly: %s",
                    deployment.id,
                    redact(repr(exc)),
                    exc_info=self.settings.log_level == "debug",
                )
            self._fail(deployment, message)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
            if deployment.build_context_path:
                Path(deployment.build_context_path).unlink(missing_ok=True)

    def _fail(self, deployment: Deployment, message: str) -> None:
        self._discard_image(deployment)  # first: it frees space, which may be what the failure write needs
        record_failure(deployment, message)
        try:
            AuditEvent.record(
                audit.DEPLOYMENT_FAILED,
                deployment.job_name,
                deployment.job_version,
                deployment.deployed_by,
                deployment_id=deployment.id,
                error=message[:500],
            )
        except Exception as exc:  # noqa: BLE001 (the failure is recorded; a missing audit line must not undo that)
            log.warning("deployment %s: could not write its audit event: %s", deployment.id, exc)

    def _discard_image(self, deployment: Deployment) -> None:
        """A failed deployment's image serves nothing; keep the disk for images that do."""
        if not deployment.image_name:
            return
        try:
            self.runtime.remove_image(deployment.image_name)
        except RacetrackError as exc:
            log.warning("could not remove image %s: %s", deployment.image_name, exc.message)

    def _deploy(self, deployment: Deployment, workspace: Path, secrets: jobsecrets.JobSecrets) -> None:
        manifest = load_stored(deployment.manifest_yaml, self.settings)
        if not deployment.force and Job.find(manifest.name, manifest.version) is not None:
            # Checked again here: another deployment of this version may have finished meanwhile.
            raise ConflictError(f"job {manifest.name} {manifest.version} is already deployed; use --force")
        job_type = jobtypes.resolve(manifest.jobtype, self.plugins.job_types())
        existed = Job.find(manifest.name, manifest.version) is not None
        new_family = not Job.select().where(Job.name == manifest.name).exists()
        self._check_images_reach_the_nodes(manifest)

        if deployment.kind == "rollback":
            # A rollback re-runs an earlier release's image: no fetch, no build.
            if not deployment.image_name:
                raise ValidationError("a rollback needs the image of an earlier deployment")
            deployment.set_phase("starting Job server")
            self._start(deployment, manifest, job_type, deployment.image_name, secrets)
            deployment.finish(DeploymentStatus.DONE)
            AuditEvent.record(
                audit.JOB_ROLLED_BACK,
                manifest.name,
                manifest.version,
                deployment.deployed_by,
                deployment_id=deployment.id,
                rollback_of=deployment.rollback_of,
                image=deployment.image_name,
            )
            return

        if job_type.image_from_manifest is not None:
            image = self._resolve_image(deployment, manifest, job_type, secrets)
        else:
            image = self._build_image(deployment, manifest, job_type, workspace, secrets)

        deployment.set_phase("starting Job server")
        self._start(deployment, manifest, job_type, image, secrets)
        self.accounts.request_public_endpoints(manifest.name, manifest.version, list(manifest.public_endpoints))
        self._warn_pending_public_endpoints(deployment, manifest)
        if new_family and deployment.requested_by:
            kind, name = access.parse_subject(deployment.requested_by)
            self.accounts.grant_family_owner(kind, name, manifest.name)
        self._post_deploy(deployment, manifest, job_type)
        deployment.finish(DeploymentStatus.DONE)
        AuditEvent.record(
            audit.JOB_REDEPLOYED if existed else audit.JOB_DEPLOYED,
            manifest.name,
            manifest.version,
            deployment.deployed_by,
            deployment_id=deployment.id,
            image=image,
            git_commit=deployment.git_commit,
        )
        self.builder.collect_old_images(manifest.name, manifest.version)

    def _build_image(
        self,
        deployment: Deployment,
        manifest: Manifest,
        job_type: JobType,
        workspace: Path,
        secrets: jobsecrets.JobSecrets,
    ) -> str:
        """Fetch the job's source (upload or git) and build its image; returns its tag."""
        job_type = _snapshot(job_type, workspace)
        record = DeploymentRecord(deployment, int(self.settings.build_log_max_size))
        deployment.set_phase("fetching the source code")
        build_context = Path(deployment.build_context_path) if deployment.build_context_path else None
        source = self.builder.fetch_source(
            manifest, job_type, workspace, secrets, build_context=build_context, report=record
        )

        deployment.set_phase(jobsecrets.BUILD_PHASE)
        image = self.builder.build(
            manifest,
            job_type,
            source.job_dir,
            secrets,
            deployment_id=deployment.id,
            git_commit=deployment.git_commit or "",
            no_cache=deployment.no_cache,
            report=record,
        ).image
        deployment.image_name = image
        deployment.save(only=[Deployment.image_name])
        return image

    def _resolve_image(
        self, deployment: Deployment, manifest: Manifest, job_type: JobType, secrets: jobsecrets.JobSecrets
    ) -> str:
        """A docker-image job: nothing to fetch or build; find (or pull) the image the manifest names,
        record what it resolved to and pin it for this release (racetrackd.deploy.imagejobs)."""
        assert job_type.image_from_manifest is not None
        record = DeploymentRecord(deployment, int(self.settings.build_log_max_size))
        deployment.set_phase(imagejobs.RESOLVE_PHASE)
        resolved = imagejobs.resolve(
            self.runtime,
            job_type.image_from_manifest.reference(manifest.jobtype_extra),
            f"jobtype_extra.{job_type.image_from_manifest.field}",
            secrets.registry_credentials,
            record,
            job_type.image_from_manifest.pull_policy(manifest.jobtype_extra),
        )
        deployment.source_image = resolved.to_json()
        deployment.save(only=[Deployment.source_image])
        image = imagejobs.pin(
            self.runtime,
            resolved,
            manifest,
            job_type,
            instance=self.settings.instance,
            deployment_id=deployment.id,
            report=record,
            registry=self.settings.registry,
        )
        deployment.image_name = image  # first: a failed push discards the pin (_discard_image)
        deployment.save(only=[Deployment.image_name])
        if self.settings.registry:
            # Swarm's other nodes pull it from there, as they pull a built job's image; the pinned
            # tag is this deployment's own, so a rollback re-runs exactly this image on any node.
            self.builder.push(image, record)
        return image

    def _check_images_reach_the_nodes(self, manifest: Manifest) -> None:
        """Refuse, before any build or pull, a deployment whose tasks could land on a swarm node that
        cannot get the image: without RACETRACK_REGISTRY, a job's image (built here, or a docker-image
        job's pin) exists on this manager's engine only, and its tasks would fail on the other nodes
        with "No such image"."""
        if self.orchestrator.kind != SWARM or self.settings.registry:
            return
        nodes = nodes_that_may_run(self.orchestrator.nodes(), tuple(manifest.placement_constraints))
        if len(nodes) > 1:
            raise ImageUnavailable(
                f"RACETRACK_REGISTRY is not set, and {len(nodes)} swarm nodes may run this job "
                f"({', '.join(sorted(node.hostname for node in nodes))}): its image would exist only on this "
                "manager's Docker engine, and the other nodes could not start it. Set RACETRACK_REGISTRY to a "
                "registry every node can pull from (docs/swarm.md), or keep the job on this node with "
                'placement_constraints: ["node.role == manager"]'
            )

    def _warn_pending_public_endpoints(self, deployment: Deployment, manifest: Manifest) -> None:
        """The deployer learns at once that the public_endpoints of the manifest still answer 401
        to callers without a token, and what opens them (as in Racetrack, an admin's approval)."""
        pending = self.accounts.public_endpoints(manifest.name, manifest.version, active=False)
        if pending:
            listed = ", ".join(f"{row.endpoint} (rtd public-endpoints approve {row.id})" for row in pending)
            _warn(deployment, f"public_endpoints wait for an admin's approval; until then they need a token: {listed}")

    def _post_deploy(self, deployment: Deployment, manifest: Manifest, job_type: JobType) -> None:
        """The job type's post_job_deploy hook; a failure is a warning on the deployment, the job serves anyway."""
        hooks = self.plugins.hooks_for(job_type.full_name)
        job = Job.find(manifest.name, manifest.version)
        if hooks is None or job is None:
            return
        deployment.set_phase("post-deploy hooks")
        _warn(deployment, hooks.notify("post_job_deploy", jobs.job_dto(job, self.settings)))

    # --- start and switch over ----------------------------------------------------------------
    def _start(
        self, deployment: Deployment, manifest: Manifest, job_type: JobType, image: str, secrets: jobsecrets.JobSecrets
    ) -> None:
        """Start the release's replicas under a staging unit, wait until they are ready, then switch
        the job over to them (a redeploy without downtime) and give the unit its final name."""
        launch = Launch(
            image=image,
            manifest=manifest,
            job_type_version=job_type.full_name,
            serving=job_type.serving_for(manifest.jobtype_extra),
            confinement=job_type.confinement,
            secrets=secrets,
            deployment_id=deployment.id,
            deployment_timestamp=int(time.time()),
            deployment=deployment,
        )
        staging = naming.staging_container_name(self.settings.instance, manifest.name, manifest.version, deployment.id)
        self.orchestrator.start(staging, self._release_spec(launch))
        existing = Job.find(manifest.name, manifest.version)
        job = existing or self._record_new_job(launch, staging, deployment.deployed_by)
        # A job that may speak the wrapper contract (`dockerfile`) is recorded with what its server does.
        addresses, serving = self._await_staging(launch, staging, job if existing is None else None)
        launch = dataclasses.replace(launch, serving=serving)
        final_base = naming.container_name(self.settings.instance, manifest.name, manifest.version)
        retiring = [] if existing is None else self._switch_to_staging(existing, staging, addresses, launch)
        self._promote(job, launch, staging, final_base, deployment.deployed_by)
        if retiring:
            threading.Thread(
                target=self._retire, args=(retiring, manifest.name, manifest.version), daemon=True, name="retire"
            ).start()

    def _record_new_job(self, launch: Launch, staging: str, deployed_by: str | None) -> Job:
        """The record of a job deployed for the first time, starting (the default status) at its staging unit."""
        manifest = launch.manifest
        first = self.orchestrator.replicas(staging, 1, launch.serving.port)[0]
        return Job.create(
            name=manifest.name,
            version=manifest.version,
            manifest_yaml=manifest.yaml,
            job_type_version=launch.job_type_version,
            image_name=launch.image,
            container_name=staging,
            internal_name=first.address or f"{staging}:{launch.serving.port}",
            deployment_timestamp=launch.deployment_timestamp,
            deployed_by=deployed_by,
            replicas=manifest.replicas,
            idle_timeout=manifest.idle_timeout,
            call_timeout=manifest.call_timeout,
            serving=launch.serving.to_json(),
        )

    def _await_staging(self, launch: Launch, staging: str, new_job: Job | None) -> tuple[list[str], Serving]:
        """Wait until every staging replica is ready; if one is not, remove the unit (and the record of
        a job deployed for the first time), so that the old version, if any, keeps serving.

        Returns the replicas' addresses and the release's serving as its first replica decided it (the
        wrapper contract or not, for a job type that leaves it to the server); the others, the same
        image, follow it."""
        serving = launch.serving
        addresses: list[str] = []
        try:
            for index in range(launch.manifest.replicas):
                address, serving = self._wait_until_ready(
                    launch.deployment if index == 0 else None,
                    staging,
                    index,
                    launch.manifest.replicas,
                    launch.deployment_timestamp,
                    serving,
                )
                addresses.append(address)
            # ready: now its own CPU weight (it started at Docker's default: racetrackd.jobs.containers)
            self.orchestrator.set_cpu_weight(staging, launch.manifest.replicas, self._cpu_shares(launch.manifest))
            return addresses, serving
        except RacetrackError:
            self.orchestrator.remove(staging, launch.manifest.replicas)
            if new_job is not None:
                new_job.delete_instance()
            raise

    def _switch_to_staging(self, job: Job, staging: str, addresses: list[str], launch: Launch) -> list[str]:
        """Zero-downtime switch: route new calls to the ready replicas, give calls that already picked
        an old address a moment to reach it, then move the old unit aside; it finishes its calls
        (SIGTERM, graceful stop) in the background while the deployment is done. Returns what to retire."""
        old_unit, old_count = job.container_name, job.replicas  # before the record moves to the new unit
        # the gateway maps paths for the replicas it now calls, hence the serving too
        job.move_replicas(staging, addresses, launch.serving.to_json())
        time.sleep(SWITCH_GRACE_SECONDS)
        return self.orchestrator.set_aside(old_unit, old_count, launch.deployment_id[:8])

    def _promote(self, job: Job, launch: Launch, staging: str, final_base: str, deployed_by: str | None) -> None:
        """Give the staging unit its final name and record the release as running there."""
        manifest = launch.manifest
        unit = self.orchestrator.promote(staging, final_base, manifest.replicas)
        job.manifest_yaml = manifest.yaml
        job.job_type_version = launch.job_type_version
        job.image_name = launch.image
        job.container_name = unit
        job.serving = launch.serving.to_json()
        job.replicas = manifest.replicas
        job.idle_timeout = manifest.idle_timeout
        job.call_timeout = manifest.call_timeout
        job.deployment_timestamp = launch.deployment_timestamp
        job.deployed_by = deployed_by
        job.mark_running(self._addresses(unit, manifest.replicas, launch.serving.port))
        DeletedJob.delete().where((DeletedJob.name == job.name) & (DeletedJob.version == job.version)).execute()

    def _addresses(self, unit: str, count: int, port: int) -> list[str]:
        return [r.address for r in self.orchestrator.replicas(unit, count, port) if r.address]

    def _retire(self, handles: list[str], job_name: str, job_version: str) -> None:
        """Let replaced replicas finish their calls (up to the drain timeout), then remove them.
        If the daemon stops first, the start-up reconcile removes them as orphans."""
        for handle in handles:
            try:
                self.orchestrator.retire(handle, self.settings.drain_timeout)
            except RacetrackError as exc:
                log.warning("could not retire %s: %s", handle, exc.message)
        # The images they ran could not be collected while they served: collect them now.
        try:
            self.builder.collect_old_images(job_name, job_version)
        except RacetrackError as exc:
            log.warning("could not collect old images of %s %s: %s", job_name, job_version, exc.message)

    def abandon(self, deployment: Deployment) -> None:
        """Undo what an interrupted deployment left: its half-started replicas, and the record of a
        job it was creating (a redeployed job keeps its old replicas and record)."""
        for name in self.orchestrator.list_members(
            {naming.LABEL_INSTANCE: self.settings.instance, naming.LABEL_DEPLOYMENT: deployment.id}
        ):
            self.orchestrator.remove_member(name)
        staging = naming.staging_container_name(
            self.settings.instance, deployment.job_name, deployment.job_version, deployment.id
        )
        Job.delete().where(
            (Job.name == deployment.job_name)
            & (Job.version == deployment.job_version)
            & (Job.container_name == staging)
            & (Job.status == JobStatus.STARTING)
        ).execute()
        self._discard_image(deployment)

    def recreate(self, job: Job) -> None:
        """Start the job's missing replicas again from its image; wait until they are ready."""
        serving = Serving.from_json(job.serving)
        missing = [
            index
            for index, replica in enumerate(self.orchestrator.replicas(job.container_name, job.replicas, serving.port))
            if replica.state == MISSING
        ]
        launch = Launch(
            image=job.image_name,
            manifest=load_stored(job.manifest_yaml, self.settings),
            job_type_version=job.job_type_version or "",
            serving=serving,
            confinement=self._confinement_of(job.job_type_version or ""),
            secrets=jobsecrets.of_release(job, self.vault) if missing else jobsecrets.NONE,
            deployment_id="recreated",
            deployment_timestamp=int(time.time()),
        )
        if missing:
            spec = dataclasses.replace(self._release_spec(launch), replicas=job.replicas)
            self.orchestrator.start(job.container_name, spec)
        addresses = [
            self._wait_until_ready(None, job.container_name, index, job.replicas, launch.deployment_timestamp, serving)[
                0
            ]
            for index in missing
        ]
        if missing:
            self.orchestrator.set_cpu_weight(job.container_name, job.replicas, self._cpu_shares(launch.manifest))
        job.record_addresses(self._addresses(job.container_name, job.replicas, serving.port) or addresses)

    def _release_spec(self, launch: Launch) -> ReleaseSpec:
        manifest = launch.manifest
        return ReleaseSpec(
            image=launch.image,
            env=self._runtime_env(launch),
            labels=naming.job_labels(self.settings.instance, manifest.name, manifest.version, launch.deployment_id),
            network=self.settings.network,
            replicas=manifest.replicas,
            limits=container_limits(manifest, self.settings),
            port=launch.serving.port,
            hardening=Hardening(
                read_only_root=launch.confinement.read_only_root,
                capabilities=launch.confinement.capabilities,
                pids_limit=self.settings.job_pids_limit,
                tmp_size=int(self.settings.job_tmp_size),
            ),
            placement=tuple(manifest.placement_constraints),
            stop_grace=self.settings.drain_timeout,
        )

    def _cpu_shares(self, manifest: Manifest) -> int:
        """A ready replica's own CPU weight (cpu_min). Replicas start at Docker's default weight: with
        cpu_min's small weight (10 of 1024 by default) a job starting on a busy host got a sliver of a
        core, and a redeploy or a recreate waited for it; once it serves, the weight is what shares the
        CPU out under contention, as the manifest says."""
        return container_limits(manifest, self.settings).cpu_shares

    def _confinement_of(self, job_type_version: str) -> Confinement:
        """The hardening of an installed job type; a job whose job type was removed since it was
        deployed keeps the common part only (a writable root is what any image can run with)."""
        for job_type in self.plugins.job_types():
            if job_type.full_name == job_type_version:
                return job_type.confinement
        return Confinement()

    def _runtime_env(self, launch: Launch) -> dict[str, str]:
        manifest, secrets, job_type_version = launch.manifest, launch.secrets, launch.job_type_version
        # Build-time variables (secret ones too) not set for runtime are blanked, as Racetrack does.
        env = {key: "" for key in [*manifest.build_env, *secrets.build_env]}
        hooks = self.plugins.hooks_for(job_type_version)
        if hooks is not None:  # below the job's own variables and the reserved ones, which it cannot override
            extra, warning = hooks.job_runtime_env(
                {
                    "name": manifest.name,
                    "version": manifest.version,
                    "manifest": manifest.raw,
                    "job_type_version": job_type_version,
                }
            )
            env.update(extra)
            if launch.deployment is not None:
                _warn(launch.deployment, warning)
        env.update(manifest.runtime_env)
        env.update(secrets.runtime_env)
        env.update(
            {
                "JOB_NAME": manifest.name,
                "JOB_VERSION": manifest.version,
                "JOB_DEPLOYMENT_TIMESTAMP": str(launch.deployment_timestamp),
                "JOB_MANIFEST_YAML": manifest.yaml,
                "PUB_URL": self.addressing.pub_url,
                # Code the family does not trust (another caller's upload, say) runs without the family's token.
                "AUTH_TOKEN": self.accounts.family_token(manifest.name) if secrets.family_token else "",
                "REQUEST_TRACING_HEADER": naming.TRACING_HEADER,
                "JOB_GRACEFUL_TIMEOUT": str(int(self.settings.drain_timeout)),
                "JOB_CALL_TIMEOUT": str(manifest.call_timeout or int(self.settings.call_timeout)),
            }
        )
        return env

    # --- waiting for a started replica --------------------------------------------------------
    def _wait_until_ready(
        self,
        deployment: Deployment | None,
        unit: str,
        index: int,
        count: int,
        deployment_timestamp: int,
        serving: Serving,
    ) -> tuple[str, Serving]:
        """Poll replica `index`'s /live (for our deployment_timestamp) then /ready; fail fast on a crash,
        an init error or a task Swarm cannot place. Returns the replica's address and `serving` with
        the wrapper contract decided.

        A job whose server does not follow the wrapper contract is polled at its probe path instead;
        one that may or may not (`dockerfile`) is asked first.
        """
        if deployment is not None and not serving.wrapper:
            deployment.set_phase(ENTRYPOINT_PHASE)
        on_live = None if deployment is None else lambda: deployment.set_phase(ENTRYPOINT_PHASE)
        checks: dict[str, StartCheck] = {}  # by address: a rescheduled task comes back elsewhere

        def check_at(address: str) -> StartCheck:
            if address not in checks:
                checks[address] = (
                    ContractOrServer(address, serving, deployment_timestamp, on_live)
                    if serving.detecting
                    else WrapperStarted(address, deployment_timestamp, on_live)
                    if serving.wrapper
                    else ServerAnswers(address, serving)
                )
            return checks[address]

        def decided(check: StartCheck) -> Serving:
            return check.decided if isinstance(check, ContractOrServer) else serving

        # The replica's state is looked at every STATE_STEP (and first of all), its server probed every
        # PROBE_STEP: a server that comes up is noticed at once, not on a poll tick.
        timeout = self.settings.job_start_timeout
        deadline = time.monotonic() + timeout
        replica = Replica(name=unit, state=MISSING)
        pending_since: float | None = None
        next_state = time.monotonic()
        try:
            while time.monotonic() < deadline:
                if time.monotonic() >= next_state:
                    replica = self.orchestrator.replicas(unit, count, serving.port)[index]
                    next_state = time.monotonic() + STATE_STEP
                    if replica.restart_count > 0 or not replica.alive:
                        raise StartFailed(_exit_reason(replica))
                    if replica.state == PENDING and replica.error:
                        # Swarm cannot place the task (a constraint no node meets, not enough memory):
                        # give a node that is just joining or freeing up a moment, then say why.
                        pending_since = pending_since or time.monotonic()
                        if time.monotonic() - pending_since > UNPLACED_GRACE_SECONDS:
                            raise StartFailed(f"Swarm cannot start replica {replica.name}: {replica.error}")
                    else:
                        pending_since = None
                if replica.state == RUNNING and replica.address and check_at(replica.address).passed():
                    return replica.address, decided(checks[replica.address])
                time.sleep(PROBE_STEP)
            if replica.state == PENDING and replica.error:
                raise StartFailed(f"Swarm cannot start replica {replica.name}: {replica.error}")
            last = checks.get(replica.address or "")
            raise StartFailed(
                last.timeout_reason(timeout)
                if last is not None
                else f"replica {replica.name} did not start within {timeout:g} s ({replica.state})"
            )
        except StartFailed as failed:
            raise JobStartError(with_log_tail(self.orchestrator, unit, replica, failed.reason)) from None


def _exit_reason(replica: Replica) -> str:
    if replica.error and replica.node:  # Swarm's own words, and where
        return (
            f"the job's task {replica.name} on {replica.node} failed: {replica.error} (exit code {replica.exit_code})"
        )
    return f"the job's container exited (code {replica.exit_code})"


@dataclasses.dataclass(frozen=True)
class Launch:
    """What every container of one release starts with: a deployment's, or a lost job's recreated."""

    image: str
    manifest: Manifest
    job_type_version: str
    serving: Serving
    confinement: Confinement
    secrets: jobsecrets.JobSecrets
    deployment_id: str  # labels the containers ("recreated" for a recreate); names retiring containers
    deployment_timestamp: int
    deployment: Deployment | None = None  # a job type hook's warnings go on it


def _snapshot(job_type: JobType, workspace: Path) -> JobType:
    """A private copy of the job type's files for this deployment: removing or replacing the plugin
    meanwhile cannot change or break a build under way."""
    target = workspace / "jobtype-plugin"
    try:
        shutil.copytree(job_type.plugin_dir, target, ignore=shutil.ignore_patterns("__pycache__"))
    except (OSError, shutil.Error) as exc:
        raise JobTypeError(
            f"job type {job_type.full_name} was removed while the deployment started; deploy again"
        ) from exc
    return dataclasses.replace(job_type, plugin_dir=target)


def _warn(deployment: Deployment, warning: str | None) -> None:
    if warning:
        deployment.warnings = "\n".join(filter(None, [deployment.warnings, warning]))
        deployment.save(only=[Deployment.warnings])
