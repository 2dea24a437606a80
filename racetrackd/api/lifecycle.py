"""The control plane under /lifecycle/api/v1, with Racetrack's paths and JSON shapes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, request, stream_with_context

from racetrackd import __version__, asynccalls, audit, deployments, jobs, releases
from racetrackd.api import authenticate_request, services
from racetrackd.errors import ValidationError

bp = Blueprint("lifecycle", __name__)


@bp.before_request
def _authenticate() -> None:
    if request.endpoint != "lifecycle.info":
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
    }


@bp.post("/deploy")
def deploy() -> tuple[dict[str, Any], int]:
    svc = services()
    deployment = deployments.request_deployment(
        svc.settings, svc.job_types, svc.vault, request.get_json(silent=True), g.caller
    )
    return {"id": deployment.id}, 201


@bp.get("/deploy")
def list_deployments() -> list[dict[str, Any]]:
    settings = services().settings
    recent = deployments.recent_deployments(_int_arg("limit", 100), request.args.get("job_name"))
    return [deployments.deployment_dto(d, settings) for d in recent]


@bp.get("/deploy/<deployment_id>")
def get_deployment(deployment_id: str) -> dict[str, Any]:
    return deployments.deployment_dto(deployments.get_deployment(deployment_id), services().settings)


@bp.get("/deploy/<deployment_id>/build-logs")
def deployment_build_logs(deployment_id: str) -> Response | dict[str, Any]:
    """The build log; `offset` returns only what came after it (for polling clients); `follow`
    streams it as plain text until the deployment ends."""
    if _flag("follow"):
        deployments.get_deployment(deployment_id)  # 404 before the stream starts
        return Response(stream_with_context(deployments.follow_build_logs(deployment_id)), mimetype="text/plain")
    logs = deployments.get_deployment(deployment_id).build_logs
    offset = _int_arg("offset", 0)
    return {"logs": logs[offset:], "offset": len(logs)}


@bp.post("/job/<name>/<version>/rollback")
def rollback(name: str, version: str) -> tuple[dict[str, Any], int]:
    """Re-run an earlier release's image: `{"deployment_id": ...}`, or the one before the current."""
    body = request.get_json(silent=True) or {}
    target = body.get("deployment_id") if isinstance(body, dict) else None
    if target is not None and not isinstance(target, str):
        raise ValidationError("deployment_id: must be a string")
    deployment = releases.request_rollback(services().runtime, name, version, target, g.caller)
    return {"id": deployment.id}, 201


@bp.get("/audit/activity")
def audit_activity() -> list[dict[str, Any]]:
    events = audit.activity(request.args.get("job_name"), request.args.get("job_version"), _int_arg("limit", 100))
    return [audit.event_dto(event) for event in events]


@bp.get("/job/<name>/<version>/logs")
def job_logs(name: str, version: str) -> Response | dict[str, Any]:
    """The job's own output (Racetrack shape `{"logs"}`); `follow` streams it as plain text."""
    job = jobs.resolve_job(name, version)
    tail = _int_arg("tail", 20)
    if _flag("follow"):
        return Response(jobs.follow_runtime_logs(services().runtime, job, tail), mimetype="text/plain")
    return {"logs": jobs.runtime_logs(services().runtime, job, tail)}


@bp.get("/job/<name>/<version>/logs/plain")
def job_logs_plain(name: str, version: str) -> Response:
    job = jobs.resolve_job(name, version)
    return Response(jobs.runtime_logs(services().runtime, job, _int_arg("tail", 20)), mimetype="text/plain")


@bp.get("/job/<name>/<version>/build-logs")
def job_build_logs(name: str, version: str) -> Response | dict[str, Any]:
    deployment = deployments.latest_deployment_of(name, version)
    if _flag("follow"):
        return Response(stream_with_context(deployments.follow_build_logs(deployment.id)), mimetype="text/plain")
    return {"logs": deployments.tail_lines(deployment.build_logs, _int_arg("tail", 0))}


@bp.get("/job/<name>/<version>/build-logs/plain")
def job_build_logs_plain(name: str, version: str) -> Response:
    deployment = deployments.latest_deployment_of(name, version)
    return Response(deployments.tail_lines(deployment.build_logs, _int_arg("tail", 0)), mimetype="text/plain")


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
    return [jobs.job_dto(job, settings) for job in jobs.list_jobs()]


@bp.get("/job/<name>/<version>")
def get_job(name: str, version: str) -> dict[str, Any]:
    return jobs.job_dto(jobs.resolve_job(name, version), services().settings)


@bp.delete("/job/<name>/<version>")
def delete_job(name: str, version: str) -> tuple[str, int]:
    job = jobs.resolve_job(name, version)
    svc = services()
    jobs.delete_job(svc.runtime, svc.settings.instance, job.name, job.version, g.caller)
    return "", 204


@bp.get("/async/tasks")
def list_async_tasks() -> list[dict[str, Any]]:
    """Async calls, newest first (`?state=failed`, `?job_name=`, `?limit=`)."""
    state = request.args.get("state")
    if state and state not in asynccalls.STATES:
        raise ValidationError(f"state: {state!r} is not one of {', '.join(asynccalls.STATES)}")
    tasks = asynccalls.list_tasks(state, request.args.get("job_name"), _int_arg("limit", 100))
    return [asynccalls.describe(task) for task in tasks if asynccalls.visible_to(task, g.caller)]


@bp.post("/async/tasks/<task_id>/retry")
def retry_async_task(task_id: str) -> dict[str, Any]:
    """Queue a failed async call again."""
    return asynccalls.describe(asynccalls.retry(task_id, g.caller))
