"""The control plane under /lifecycle/api/v1, with Racetrack's paths and JSON shapes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from jobmanifest.schema import infrastructure_target_problem
from racetrackd import __version__, audit, callstats, footprint, maintenance, streams
from racetrackd.api import authenticate_request, caller, require, services
from racetrackd.api.deploy_body import parse_deploy_body
from racetrackd.auth import access
from racetrackd.db import Deployment
from racetrackd.deploy import jobsecrets, releases
from racetrackd.deploy import requests as deployments
from racetrackd.docker.orchestrator import SWARM
from racetrackd.errors import NotSupported, RacetrackError, ValidationError
from racetrackd.gateway import asynccalls
from racetrackd.jobs import queries as jobs
from racetrackd.manifest import accept_manifest
from racetrackd.plugins import store as plugins
from racetrackd.streams import ClientGone

bp = Blueprint("lifecycle", __name__)
# Racetrack's Socket.IO endpoint (/lifecycle/socket.io), which `racetrack logs -f` connects to.
socketio_bp = Blueprint("lifecycle_socketio", __name__)


OPEN_ENDPOINTS = {"lifecycle.info", "lifecycle.build_secrets"}


@bp.before_request
def _authenticate() -> None:
    if request.endpoint not in OPEN_ENDPOINTS:
        authenticate_request()


@bp.get("/info")
def info() -> dict[str, Any]:
    settings = services().settings
    return {
        "service": "racetrackd",
        "git_version": __version__,
        "docker_tag": __version__,
        "auth_required": settings.auth_required,
        "external_pub_url": f"{settings.public_url}/pub",
        "lifecycle_url": f"{settings.public_url}/lifecycle",
        "grafana_url": None,
        # What the daemon itself holds (PSS of its main process, gunicorn master and HTTP workers): shown
        # by `rtd version`; roles and sizes only, since /info answers without a token.
        "daemon_memory": footprint.measure().to_dict(with_pids=False),
    }


@bp.get("/maintenance")
def get_maintenance() -> dict[str, object]:
    return maintenance.current().to_dict()


@bp.put("/maintenance")
def set_maintenance() -> dict[str, object]:
    """`{"maintenance_mode": true, "message": "..."}`: refuse deployments, rollbacks and deletions (503) until off."""
    who = require(access.FULL_ACCESS, doing="switch maintenance mode")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("request body: must be a JSON object with maintenance_mode")
    return maintenance.switch(body.get("maintenance_mode"), body.get("message"), who.display).to_dict()


@bp.post("/deploy")
def deploy() -> tuple[dict[str, Any], int]:
    svc = services()
    deploy_request = parse_deploy_body(request.get_json(silent=True), caller(), svc.settings)
    deployment = deployments.request_deployment(svc.settings, svc.plugins, svc.vault, deploy_request)
    return {"id": deployment.id}, 201


@bp.post("/manifest/check")
def check_manifest() -> dict[str, Any]:
    """A manifest checked as a deploy would check it (this host's limits, job types and their
    settings), deploying nothing: `{"warnings"}`, or a ManifestError listing each field."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("request body: must be a JSON object with a manifest")
    svc = services()
    manifest = accept_manifest(body.get("manifest"), svc.settings)
    return {"warnings": deployments.check_manifest(svc.settings, svc.plugins, manifest)}


@bp.get("/deploy")
def list_deployments() -> list[dict[str, Any]]:
    settings = services().settings
    recent = deployments.recent_deployments(_int_arg("limit", 100), request.args.get("job_name"))
    return [deployments.deployment_dto(d, settings) for d in recent if _may_read(d.job_name, d.job_version)]


@bp.get("/deploy/<deployment_id>")
def get_deployment(deployment_id: str) -> dict[str, Any]:
    return deployments.deployment_dto(_readable_deployment(deployment_id), services().settings)


@bp.get("/build-secrets/<name>/<version>/<digest>")
def build_secrets(name: str, version: str, digest: str) -> dict[str, Any]:
    """The secret build env, for the RUN step of a build running now (the digest is the credential)."""
    return {"env": jobsecrets.build_env_for_build(name, version, digest, services().vault)}


@bp.get("/deploy/<deployment_id>/build-logs")
def deployment_build_logs(deployment_id: str) -> Response | dict[str, Any]:
    """The build log; `offset` returns only what came after it (for polling clients); `follow`
    streams it as plain text until the deployment ends."""
    deployment = _readable_deployment(deployment_id)  # 404 before a stream starts
    if _flag("follow"):
        return _follow(lambda gone: stream_with_context(deployments.follow_build_logs(deployment_id, gone)))
    logs, offset = deployment.build_logs_since(max(_int_arg("offset", 0), 0))
    return {"logs": logs, "offset": offset}


@bp.post("/job/<name>/<version>/rollback")
def rollback(name: str, version: str) -> tuple[dict[str, Any], int]:
    """Re-run an earlier release's image: `{"deployment_id": ...}`, `{"to_version": ...}` (the release an
    older version runs), or by default the one before the current (else the newest older version's)."""
    body = request.get_json(silent=True) or {}
    body = body if isinstance(body, dict) else {}
    target, to_version = body.get("deployment_id"), body.get("to_version")
    for field, value in (("deployment_id", target), ("to_version", to_version)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{field}: must be a string")
    if target is not None and to_version is not None:
        raise ValidationError("give deployment_id or to_version, not both")
    job = jobs.resolve_job(name, version)
    who = require(access.DEPLOY_JOB, job.name, job.version, doing="roll back")
    deployment = releases.request_rollback(
        services().runtime, job.name, job.version, target, who.display, to_version=to_version
    )
    return {"id": deployment.id}, 201


@bp.get("/audit/activity")
def audit_activity() -> list[dict[str, Any]]:
    events = audit.activity(request.args.get("job_name"), request.args.get("job_version"), _int_arg("limit", 100))
    return [audit.event_dto(event) for event in events if _may_read(event.job_name, event.job_version)]


@bp.get("/job/<name>/<version>/logs")
def job_logs(name: str, version: str) -> Response | dict[str, Any]:
    """The job's own output (Racetrack shape `{"logs"}`); `follow` streams it as plain text."""
    job = _readable_job(name, version)
    tail = _int_arg("tail", 20)
    redact = _redactor(job)
    if _flag("follow"):
        return _follow(lambda gone: redact.lines(jobs.follow_runtime_logs(services().orchestrator, job, tail, gone)))
    return {"logs": redact(jobs.runtime_logs(services().orchestrator, job, tail))}


@bp.get("/job/<name>/<version>/logs/plain")
def job_logs_plain(name: str, version: str) -> Response:
    job = _readable_job(name, version)
    logs = jobs.runtime_logs(services().orchestrator, job, _int_arg("tail", 20))
    return Response(_redactor(job)(logs), mimetype="text/plain")


@bp.get("/job/<name>/<version>/build-logs")
def job_build_logs(name: str, version: str) -> Response | dict[str, Any]:
    deployment = deployments.latest_deployment_of(name, version)
    _require_read(deployment.job_name, deployment.job_version)
    if _flag("follow"):
        return _follow(lambda gone: stream_with_context(deployments.follow_build_logs(deployment.id, gone)))
    return {"logs": deployments.tail_lines(deployment.build_log_text, _int_arg("tail", 0))}


@bp.get("/job/<name>/<version>/build-logs/plain")
def job_build_logs_plain(name: str, version: str) -> Response:
    deployment = deployments.latest_deployment_of(name, version)
    _require_read(deployment.job_name, deployment.job_version)
    return Response(deployments.tail_lines(deployment.build_log_text, _int_arg("tail", 0)), mimetype="text/plain")


def _follow(open_stream: Callable[[ClientGone], Iterable[str] | Iterable[bytes]]) -> Response:
    """A plain-text stream that ends when the client goes, counted against the follow-stream limits
    (429 before it opens) until the server closes the response."""
    who = caller()
    owner = who.subject if who.kind != access.ANONYMOUS else f"address {request.remote_addr}"
    release = services().streams.acquire(owner)
    try:
        response = Response(open_stream(streams.client_gone(request.environ)), mimetype="text/plain")
    except BaseException:
        release()
        raise
    response.call_on_close(release)
    return response


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.lstrip("-").isdigit():
        raise ValidationError(f"{name}: must be a whole number")
    return int(raw)


@bp.get("/job")
def list_jobs() -> list[dict[str, Any]]:
    settings = services().settings
    return [jobs.job_dto(job, settings) for job in jobs.list_jobs() if _may_read(job.name, job.version)]


@bp.get("/job/<name>/<version>")
def get_job(name: str, version: str) -> dict[str, Any]:
    job = _readable_job(name, version)
    svc = services()
    described = jobs.job_dto(job, svc.settings)
    if svc.orchestrator.kind == SWARM:
        # racetrackd's own: where each replica runs (its task's node) and its state, asked of the
        # swarm; a swarm that does not answer leaves the record readable (the error says why)
        try:
            described["replica_details"] = jobs.replica_details(svc.orchestrator, job)
        except RacetrackError as exc:
            described["replica_details"] = [{"name": "?", "node": None, "state": "unknown", "error": exc.message}]
    return described


@bp.get("/nodes")
def list_nodes() -> dict[str, Any]:
    """The nodes that run jobs (swarm: the swarm's; docker: this engine), with the replicas on each."""
    svc = services()
    return {"orchestrator": svc.orchestrator.kind, "nodes": jobs.node_dtos(svc.orchestrator, _may_read)}


@bp.delete("/job/<name>/<version>")
def delete_job(name: str, version: str) -> tuple[str, int]:
    job = jobs.resolve_job(name, version)
    who = require(access.DELETE_JOB, job.name, job.version, doing="delete")
    svc = services()
    described = jobs.job_dto(job, svc.settings)  # what post_job_delete hooks receive
    jobs.delete_job(svc.orchestrator, svc.runtime, svc.settings.instance, job.name, job.version, who.display)
    svc.accounts.retire_family_tokens(job.name)  # the last version gone: its AUTH_TOKEN must not outlive it
    plugins.after_job_delete(svc.plugins, described, who.display)
    return "", 204


@bp.post("/job/<name>/<version>/move")
def move_job(name: str, version: str) -> dict[str, Any]:
    """Racetrack's move between infrastructure targets: here there is one, so only a no-op succeeds."""
    job = jobs.resolve_job(name, version)
    require(access.DEPLOY_JOB, job.name, job.version, doing="move")
    body = request.get_json(silent=True)
    target = body.get("infrastructure_target") if isinstance(body, dict) else None
    if not isinstance(target, str):
        raise ValidationError("infrastructure_target: required, a string")
    problem = infrastructure_target_problem(target)
    if problem:
        raise ValidationError(f"infrastructure_target: {problem}")
    return jobs.job_dto(job, services().settings)


@bp.get("/async/tasks")
def list_async_tasks() -> list[dict[str, Any]]:
    """Async calls, newest first (`?state=failed`, `?job_name=`, `?limit=`)."""
    state = request.args.get("state")
    if state and state not in asynccalls.STATES:
        raise ValidationError(f"state: {state!r} is not one of {', '.join(asynccalls.STATES)}")
    tasks = asynccalls.list_tasks(state, request.args.get("job_name"), _int_arg("limit", 100))
    return [asynccalls.describe(task) for task in tasks if asynccalls.visible_to(task, caller())]


@bp.post("/async/tasks/<task_id>/retry")
def retry_async_task(task_id: str) -> dict[str, Any]:
    """Queue a failed async call again."""
    return asynccalls.describe(asynccalls.retry(task_id, caller()))


@bp.get("/job/<name>/<version>/stats")
def job_stats(name: str, version: str) -> dict[str, Any]:
    """The job version's calls per `step` seconds (default 60) from `since` (unix seconds; a negative
    number counts back from now; default the last hour) to `until` (default now)."""
    job = _readable_job(name, version)
    now = time.time()
    since = _number_arg("since", -3600.0)
    until = _number_arg("until", now)
    return callstats.series(
        job.name, job.version, now + since if since < 0 else since, until, _int_arg("step", callstats.MINUTE)
    ).to_dict()


def _number_arg(name: str, default: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValidationError(f"{name}: must be a number of unix seconds (or negative: seconds before now)")
    return value


def _may_read(job_name: str, job_version: str) -> bool:
    return caller().allows(access.READ_JOB, job_name, job_version)


def _require_read(job_name: str, job_version: str) -> None:
    require(access.READ_JOB, job_name, job_version, doing="read")


def _readable_job(name: str, version: str) -> Any:
    job = jobs.resolve_job(name, version)
    _require_read(job.name, job.version)
    return job


def _readable_deployment(deployment_id: str) -> Deployment:
    deployment = deployments.get_deployment(deployment_id)
    _require_read(deployment.job_name, deployment.job_version)
    return deployment


def _redactor(job: Any) -> jobsecrets.Redactor:
    """Job logs may echo the job's own secrets; they are masked before anyone sees them."""
    return jobsecrets.Redactor(jobsecrets.of_release(job, services().vault).values())


@socketio_bp.route("/socket.io/", methods=["GET", "POST"])
def socketio_logs() -> Response:
    """Racetrack's client follows logs over Socket.IO and sends no token with it: streaming a job's
    output to whoever connects would publish it (secrets a job prints included). The client shows
    this error's text, so it says what to use instead."""
    raise NotSupported(
        "following logs over Socket.IO (racetrack logs -f) is not offered: Racetrack's client sends no token on it",
        hint="racetrack logs NAME (without -f) shows the recent lines; rtd logs NAME -f follows them",
    )
