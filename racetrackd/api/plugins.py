"""Job-type plugins under /lifecycle/api/v1/plugin, with Racetrack's paths: list, install, remove, download.

Listing needs any valid token; removing and downloading need `call_admin_api` (or `full_access`).
Installing needs `full_access`: a plugin's plugin.py runs inside the daemon, so whoever installs
one can do anything the daemon can (read every secret, mint any token).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from pluginbundle import MAX_ARCHIVE_BYTES
from racetrackd import audit
from racetrackd.api import authenticate_request, require, services
from racetrackd.auth import access
from racetrackd.db import AuditEvent
from racetrackd.errors import PayloadTooLarge, ValidationError
from racetrackd.plugins import store as plugins
from racetrackd.plugins.store import Plugin

bp = Blueprint("plugins", __name__)


@bp.before_request
def _authenticate() -> None:
    authenticate_request()


@bp.get("/plugin")
def list_plugins() -> list[dict[str, Any]]:
    """Every plugin, broken ones too (with their `error`)."""
    return [plugin.dto() for plugin in services().plugins.plugins()]


@bp.get("/plugin/job_type/versions")
def job_type_versions() -> list[str]:
    return plugins.sorted_job_type_versions(services().plugins.job_types())


@bp.post("/plugin/upload/<filename>")
def upload_plugin(filename: str) -> dict[str, Any]:
    """The raw ZIP as the body (what `racetrack plugin install` sends); `?replace=1` removes other versions."""
    who = require(access.FULL_ACCESS, doing="install plugins")  # its code runs in the daemon: see the docstring
    if (request.content_length or 0) > MAX_ARCHIVE_BYTES:
        raise PayloadTooLarge(f"plugin {filename}: larger than {MAX_ARCHIVE_BYTES // 1024**2} MiB")
    data = request.get_data(cache=False)
    if not data:
        raise ValidationError(f"plugin {filename}: the request body is empty; send the ZIP file as the body")
    plugin = services().plugins.install(filename, data, replace=_replace_flag())
    _audit(audit.PLUGIN_INSTALLED, plugin, who.display, replace=_replace_flag())
    return plugin.dto()


@bp.delete("/plugin/<name>/<version>")
def remove_plugin(name: str, version: str) -> dict[str, Any]:
    who = require(access.CALL_ADMIN_API, doing="remove plugins")
    plugin = services().plugins.remove(name, version)
    _audit(audit.PLUGIN_UNINSTALLED, plugin, who.display)
    return {"name": plugin.name, "version": plugin.version, "removed": True}


@bp.get("/plugin/<name>/<version>/download")
def download_plugin(name: str, version: str) -> Response:
    require(access.CALL_ADMIN_API, doing="download plugins")
    filename, data = services().plugins.archive(name, version)
    return Response(
        data, mimetype="application/zip", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


def _replace_flag() -> bool:
    raw = request.args.get("replace", "0").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise ValidationError(f"replace: {raw!r} is not 0, 1, true or false")


def _audit(event_type: str, plugin: Plugin, executor: str | None, **extra: Any) -> None:
    AuditEvent.record(event_type, "", "", executor, plugin_name=plugin.name, plugin_version=plugin.version, **extra)
