"""Use cases around jobs: list, find (with version aliases), describe and delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml

from jobmanifest import versions
from racetrackd import maintenance, naming
from racetrackd.audit import JOB_DELETED
from racetrackd.db import AuditEvent, DeletedJob, Job, JobStatus, PublicEndpoint, database
from racetrackd.docker.images import prune_job_images
from racetrackd.docker.orchestrator import DOCKER, Orchestrator
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import JobNotFound
from racetrackd.serving import Serving, served_root
from racetrackd.settings import Settings
from racetrackd.streams import ClientGone


def list_jobs() -> list[Job]:
    return list(Job.select().order_by(Job.name, Job.create_time))


def resolve_job(name: str, version: str) -> Job:
    """The job `name` at `version`: exact, `latest` (highest stable running) or an x-pattern like `1.x`."""
    family = Job.family(name)
    if versions.is_alias(version) or "*" in version:
        family = [job for job in family if job.status in JobStatus.ALIASABLE]
    job = versions.select(version, family, lambda job: job.version)
    if job is None:
        raise JobNotFound(f"job {name} {version} not found")
    return job


def delete_job(
    orchestrator: Orchestrator, runtime: Runtime, instance: str, name: str, version: str, deleted_by: str | None
) -> Job:
    """Remove the job's container and its registry row, and remember the version as used."""
    maintenance.ensure_changes_allowed("delete jobs")
    job = Job.find(name, version)
    if job is None:
        raise JobNotFound(f"job {name} {version} not found")
    # The record goes first, so the supervisor never sees a wanted job without its containers
    # (it would create them again).
    with database.atomic():
        job.delete_instance()
        DeletedJob.insert(name=name, version=version, deleted_by=deleted_by).on_conflict_replace().execute()
        # Approvals were for that deployment's code: a version deployed again (--force) asks anew.
        PublicEndpoint.delete().where(
            (PublicEndpoint.job_name == name) & (PublicEndpoint.job_version == version)
        ).execute()
        AuditEvent.record(JOB_DELETED, name, version, deleted_by, image=job.image_name)
    for member in orchestrator.list_members(
        {naming.LABEL_INSTANCE: instance, naming.LABEL_JOB_NAME: name, naming.LABEL_JOB_VERSION: version}
    ):
        orchestrator.remove_member(member)  # every replica (swarm: the service), and anything a deployment left
    prune_job_images(runtime, instance, name, version, keep=0)
    return job


def job_dto(job: Job, settings: Settings) -> dict[str, Any]:
    """Racetrack's JobDto shape."""
    path_mode = Serving.from_json(job.serving).path_mode
    pub_url = settings.public_url + naming.pub_path(job.name, job.version)
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
        "pub_url": pub_url,
        "error": job.error,
        "notice": None,
        "image_tag": job.image_name,
        "deployed_by": job.deployed_by,
        "last_call_time": int(job.last_call_time) if job.last_call_time else None,
        "infrastructure_target": "docker",  # Racetrack's targets: Docker in both modes (`move` accepts it)
        # racetrackd's own: docker (containers on one engine) or swarm (a Swarm service per release)
        "orchestrator": settings.orchestrator,
        "replica_internal_names": job.ready_addresses(),
        "replicas": job.replicas,
        "idle_timeout": job.idle_timeout,
        "job_type_version": job.job_type_version,
        # racetrackd's own: how the gateway maps paths to the job's server (wrapper, forward, rewrite)
        "path_mode": path_mode,
        # racetrackd's own: the URL where the job's server answers its `/` (the pub_url of a
        # forward-mode job answers 404: its server is reached under /api/v1/ only)
        "serving_url": pub_url + served_root(path_mode),
        "infrastructure_stats": {"crash_count": job.crash_count},
    }


def replica_details(orchestrator: Orchestrator, job: Job) -> list[dict[str, Any]]:
    """Where each replica runs now and in what state (racetrackd's own; `rtd status`, the dashboard)."""
    port = Serving.from_json(job.serving).port
    return [
        {
            "name": replica.name,
            "node": replica.node or None,
            "state": replica.state,
            "address": replica.address,
            "restart_count": replica.restart_count,
            "error": replica.error or None,
        }
        for replica in orchestrator.replicas(job.container_name, job.replicas, port)
    ]


def node_dtos(orchestrator: Orchestrator, may_read: Callable[[str, str], bool]) -> list[dict[str, Any]]:
    """The nodes jobs run on, each with the replicas of the jobs the caller may read. In docker mode
    one: this engine, with every job's replicas (the registry knows them; the engine has no tasks)."""
    nodes = orchestrator.nodes()
    found = []
    for node in nodes:
        tasks = [
            {"job_name": t.job_name, "job_version": t.job_version, "replica": t.replica, "state": t.state}
            for t in node.tasks
            if may_read(t.job_name, t.job_version)
        ]
        if orchestrator.kind == DOCKER:
            tasks = [
                {"job_name": job.name, "job_version": job.version, "replica": name, "state": job.status}
                for job in list_jobs()
                if may_read(job.name, job.version)
                for name in orchestrator.members(job.container_name, job.replicas)
            ]
        found.append(
            {
                "hostname": node.hostname,
                "role": node.role,
                "state": node.state,
                "availability": node.availability,
                "address": node.address,
                "engine_version": node.engine_version,
                "leader": node.leader,
                "tasks": tasks,
            }
        )
    return found


def runtime_logs(orchestrator: Orchestrator, job: Job, tail: int) -> str:
    return orchestrator.logs(job.container_name, job.replicas, tail)


def follow_runtime_logs(orchestrator: Orchestrator, job: Job, tail: int, gone: ClientGone) -> Iterator[bytes]:
    """The job's output as it comes, until its container stops or the client goes (which closes the
    Docker stream, waking a read that waits for a silent job). Swarm: every task's, each line named."""
    stream = orchestrator.follow_logs(job.container_name, job.replicas, tail)
    gone.on_disconnect(stream.close)
    return iter(stream)
