"""The audit log: what happened to jobs, by whom, in words people read."""

from __future__ import annotations

import json
import time
from typing import Any

from racetrackd.db import AuditEvent

JOB_DEPLOYED = "job_deployed"
JOB_REDEPLOYED = "job_redeployed"
JOB_ROLLED_BACK = "job_rolled_back"
JOB_DELETED = "job_deleted"
DEPLOYMENT_FAILED = "deployment_failed"
PLUGIN_INSTALLED = "plugin_installed"  # Racetrack's names; properties plugin_name, plugin_version
PLUGIN_UNINSTALLED = "plugin_uninstalled"
PLUGIN_HOOK_FAILED = "plugin_hook_failed"  # a hook raised where no deployment could carry the warning
PLUGIN_EVENTS = (PLUGIN_INSTALLED, PLUGIN_UNINSTALLED, PLUGIN_HOOK_FAILED)

EVENT_TYPES = (JOB_DEPLOYED, JOB_REDEPLOYED, JOB_ROLLED_BACK, JOB_DELETED, DEPLOYMENT_FAILED)
_VERBS = {
    JOB_DEPLOYED: "deployed",
    JOB_REDEPLOYED: "redeployed",
    JOB_ROLLED_BACK: "rolled back",
    JOB_DELETED: "deleted",
    DEPLOYMENT_FAILED: "failed to deploy",
}


def activity(
    job_name: str | None,
    job_version: str | None,
    limit: int,
    *,
    event_type: str | None = None,
    executor: str | None = None,
) -> list[AuditEvent]:
    query = AuditEvent.select().order_by(AuditEvent.timestamp.desc(), AuditEvent.id.desc())  # type: ignore[attr-defined]
    if event_type:
        query = query.where(AuditEvent.event_type == event_type)
    if executor:
        query = query.where(AuditEvent.executor == executor)
    if job_name:
        query = query.where(AuditEvent.job_name == job_name)
    if job_version:
        query = query.where(AuditEvent.job_version == job_version)
    return list(query.limit(limit))


def explain(event: AuditEvent) -> str:
    """The event in one sentence."""
    who = event.executor or "someone"
    properties = json.loads(event.properties or "{}")
    if event.event_type == DEPLOYMENT_FAILED:
        return f"Deployment of job {event.job_name} {event.job_version} by {who} failed"
    if event.event_type in (PLUGIN_INSTALLED, PLUGIN_UNINSTALLED):
        verb = "installed" if event.event_type == PLUGIN_INSTALLED else "uninstalled"
        return f"Plugin {properties.get('plugin_name')} {properties.get('plugin_version')} {verb} by {who}"
    if event.event_type == PLUGIN_HOOK_FAILED:
        return f"Job {event.job_name} {event.job_version}: {properties.get('error')}"
    return f"Job {event.job_name} {event.job_version} {_VERBS.get(event.event_type, event.event_type)} by {who}"


def event_dto(event: AuditEvent) -> dict[str, Any]:
    """Racetrack's AuditLogEventDto, with a human `explanation` and `time_ago`."""
    properties = json.loads(event.properties or "{}")
    return {
        "id": str(event.get_id()),
        "version": 1,
        "timestamp": int(event.timestamp),
        "event_type": event.event_type,
        "properties": properties,
        "username_executor": event.executor,
        "username_subject": None,
        "job_name": event.job_name,
        "job_version": event.job_version,
        "explanation": explain(event),
        "time_ago": _time_ago(event.timestamp),
    }


def _time_ago(timestamp: float) -> str:
    seconds = max(0, int(time.time() - timestamp))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"
