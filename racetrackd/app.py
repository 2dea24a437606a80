"""The control plane: `create_app(...)` puts the Services of the composition root (racetrackd.services)
behind Flask's blueprints, limits and error handlers (racetrackd.asgi puts the gateway beside it)."""

from __future__ import annotations

import logging
import re
from typing import Any

import peewee
from flask import Flask, redirect, request
from flask.json.provider import DefaultJSONProvider
from jinja2 import StrictUndefined
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.wrappers import Response as WerkzeugResponse

from racetrackd import dashboard
from racetrackd.api import auth as auth_api
from racetrackd.api import health, lifecycle
from racetrackd.api import plugins as plugins_api
from racetrackd.api import services as services_of_app
from racetrackd.db import is_storage_full
from racetrackd.docker.runtime import Runtime
from racetrackd.errors import PayloadTooLarge, RacetrackError, StorageFull, TooManyAuthFailures, ValidationError
from racetrackd.services import Services, build_services
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

# Endpoints whose body carries an archive (a deploy's base64 build context, a plugin ZIP): they get
# RACETRACK_MAX_DEPLOY_BODY; every other request RACETRACK_MAX_REQUEST_BODY.
ARCHIVE_ENDPOINTS = frozenset({"lifecycle.deploy", "dashboard.deploy", "plugins.upload_plugin"})
# No request of ours nests deeper; far deeper input only makes parsers and walkers recurse (RecursionError: 500).
MAX_JSON_DEPTH = 64


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing request bodies nested deeper than MAX_JSON_DEPTH with a 400 naming the limit."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        too_deep = ValidationError(f"request body: JSON nested more than {MAX_JSON_DEPTH} levels deep")
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise too_deep from None
        if _depth_over(value, MAX_JSON_DEPTH):
            raise too_deep
        return value


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, *, services: Services | None = None
) -> Flask:
    """The Flask app over `services`, or over services built here from `settings` and `runtime`."""
    services = services or build_services(settings or Settings.from_env(), runtime)
    app = Flask("racetrackd")
    app.json = BoundedJSONProvider(app)
    app.jinja_env.undefined = StrictUndefined  # a misspelt template variable is an error, never an empty string
    app.extensions["racetrackd"] = services
    app.before_request(_limit_request_body)  # app-wide and first: before authentication reads anything
    app.register_blueprint(health.bp)
    app.register_blueprint(health.bp, url_prefix="/lifecycle", name="lifecycle_health")
    app.register_blueprint(lifecycle.bp, url_prefix="/lifecycle/api/v1")
    app.register_blueprint(auth_api.bp, url_prefix="/lifecycle/api/v1")
    app.register_blueprint(plugins_api.bp, url_prefix="/lifecycle/api/v1")
    app.register_blueprint(lifecycle.socketio_bp, url_prefix="/lifecycle")
    app.register_blueprint(dashboard.bp, url_prefix="/dashboard")
    app.add_url_rule("/", "root", _to_dashboard)
    app.register_error_handler(RacetrackError, _racetrack_error)
    app.register_error_handler(RequestEntityTooLarge, _body_too_large)
    app.register_error_handler(OSError, _storage_error)
    app.register_error_handler(peewee.OperationalError, _storage_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _to_dashboard() -> WerkzeugResponse:
    """The daemon's own address, opened in a browser (as `racetrackd start` prints it), is the dashboard."""
    return redirect("/dashboard/", 302)


def _body_limit() -> tuple[str, int]:
    settings: Settings = services_of_app().settings
    if request.endpoint in ARCHIVE_ENDPOINTS:
        return "RACETRACK_MAX_DEPLOY_BODY", int(settings.max_deploy_body)
    return "RACETRACK_MAX_REQUEST_BODY", int(settings.max_request_body)


def _limit_request_body() -> None:
    """Refuse a body over the limit by its Content-Length, before a byte of it is read. A body without
    one is never read past the limit (werkzeug reads none of it unless the server marks the input
    terminated, and then raises RequestEntityTooLarge at the limit)."""
    setting, limit = _body_limit()
    request.max_content_length = limit
    request.max_form_memory_size = limit
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body: {request.content_length} bytes is over {setting} ({limit} bytes)")


def _body_too_large(error: RequestEntityTooLarge) -> tuple[dict[str, Any], int]:
    setting, limit = _body_limit()
    return PayloadTooLarge(f"request body: over {setting} ({limit} bytes)").to_dict(), 413


def _racetrack_error(error: RacetrackError) -> tuple[dict[str, Any], int, dict[str, str]]:
    if error.status_code >= 500:
        log.error("%s: %s", error.reference, error.message)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, TooManyAuthFailures) else {}
    return error.to_dict(), error.status_code, headers


def _storage_error(error: Exception) -> tuple[dict[str, Any], int, dict[str, str]] | tuple[dict[str, Any], int]:
    """A full disk is the operator's to fix and says so (507); anything else stays an internal error (500)."""
    if is_storage_full(error):
        return _racetrack_error(
            StorageFull(
                f"the disk under racetrackd's data dir is full ({error}); nothing was stored",
                hint="ask the operator to free some space (old images: docker image prune), then try again",
            )
        )
    log.exception("internal error: %s", error)
    return _http_error(InternalServerError(original_exception=error))


def _http_error(error: HTTPException) -> tuple[dict[str, Any], int]:
    reference = re.sub(r"[^a-z0-9]+", "-", (error.name or "error").lower()).strip("-")
    return {"error": error.description or error.name, "type": reference}, error.code or 500
