"""The daemon's own probes and figures: /live, /ready, /health, /metrics."""

from __future__ import annotations

from typing import Any

import peewee
from flask import Blueprint, Response

from racetrackd import __version__, metrics
from racetrackd.api import services
from racetrackd.db import database

bp = Blueprint("health", __name__)


@bp.get("/live")
def live() -> dict[str, Any]:
    return {"service": "racetrackd", "live": True}


@bp.get("/ready")
def ready() -> tuple[dict[str, Any], int]:
    connected = _database_connected()
    return {"service": "racetrackd", "ready": connected}, 200 if connected else 503


@bp.get("/health")
def health() -> tuple[dict[str, Any], int]:
    connected = _database_connected()
    return {
        "service": "racetrackd",
        "live": True,
        "database_connected": connected,
        "git_version": __version__,
        "docker_tag": __version__,
        "auth_required": services().settings.auth_required,
        "status": "pass" if connected else "fail",
    }, 200 if connected else 500


def _database_connected() -> bool:
    try:
        database.execute_sql("SELECT 1")
    except peewee.DatabaseError:
        return False
    return True


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text format: the gateway's counters from every HTTP worker, and registry figures."""
    return Response(metrics.render(), content_type=metrics.CONTENT_TYPE)
