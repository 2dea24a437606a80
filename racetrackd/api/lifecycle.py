"""The control plane under /lifecycle/api/v1, with Racetrack's paths and JSON shapes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request

from racetrackd import __version__, deployments, jobs
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
        svc.settings, svc.job_types, request.get_json(silent=True), g.caller
    )
    return {"id": deployment.id}, 201


@bp.get("/deploy")
def list_deployments() -> list[dict[str, Any]]:
    limit = request.args.get("limit", "100")
    if not limit.isdigit():
        raise ValidationError("limit: must be a whole number")
    settings = services().settings
    return [deployments.deployment_dto(d, settings) for d in deployments.recent_deployments(int(limit))]


@bp.get("/deploy/<deployment_id>")
def get_deployment(deployment_id: str) -> dict[str, Any]:
    return deployments.deployment_dto(deployments.get_deployment(deployment_id), services().settings)


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
    jobs.delete_job(services().runtime, job.name, job.version, g.caller)
    return "", 204
