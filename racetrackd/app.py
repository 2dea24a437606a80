"""The control plane's composition root: `create_app(settings)` wires settings, registry, Docker, job types
and blueprints (racetrackd.asgi puts the gateway beside it)."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask
from jinja2 import StrictUndefined
from werkzeug.exceptions import HTTPException

from racetrackd import dashboard
from racetrackd.accounts import Accounts, ChangeSignal
from racetrackd.addressing import resolve_addressing
from racetrackd.api import Services, health, lifecycle
from racetrackd.api import auth as auth_api
from racetrackd.api import plugins as plugins_api
from racetrackd.auth import Authenticator, ensure_admin_token, ensure_secret_key
from racetrackd.db import open_database
from racetrackd.errors import RacetrackError, TooManyAuthFailures
from racetrackd.plugins import PluginStore
from racetrackd.runtime import DockerRuntime, Runtime
from racetrackd.settings import Settings
from racetrackd.vault import Vault

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = settings or Settings.from_env()
    open_database(settings.database_path)
    app = Flask("racetrackd")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider has it
    app.jinja_env.undefined = StrictUndefined  # a misspelt template variable is an error, never an empty string
    vault = Vault(ensure_secret_key(settings))
    accounts = Accounts(vault, ChangeSignal.in_data_dir(settings.data_dir))
    accounts.ensure_bootstrap_admin(ensure_admin_token(settings))
    runtime = runtime or DockerRuntime()
    app.extensions["racetrackd"] = Services(
        settings=settings,
        addressing=resolve_addressing(settings, runtime),
        vault=vault,
        runtime=runtime,
        plugins=PluginStore.from_settings(settings),
        accounts=accounts,
        authenticator=Authenticator.from_settings(settings, accounts),
    )
    app.register_blueprint(health.bp)
    app.register_blueprint(health.bp, url_prefix="/lifecycle", name="lifecycle_health")
    app.register_blueprint(lifecycle.bp, url_prefix="/lifecycle/api/v1")
    app.register_blueprint(auth_api.bp, url_prefix="/lifecycle/api/v1")
    app.register_blueprint(plugins_api.bp, url_prefix="/lifecycle/api/v1")
    app.register_blueprint(dashboard.bp, url_prefix="/dashboard")
    app.register_error_handler(RacetrackError, _racetrack_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _racetrack_error(error: RacetrackError) -> tuple[dict[str, Any], int, dict[str, str]]:
    if error.status_code >= 500:
        log.error("%s: %s", error.reference, error.message)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, TooManyAuthFailures) else {}
    return error.to_dict(), error.status_code, headers


def _http_error(error: HTTPException) -> tuple[dict[str, Any], int]:
    reference = re.sub(r"[^a-z0-9]+", "-", (error.name or "error").lower()).strip("-")
    return {"error": error.description or error.name, "type": reference}, error.code or 500
