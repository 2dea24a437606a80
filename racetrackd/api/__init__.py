"""HTTP edges: thin Flask blueprints that parse input, call one use case and serialise the result."""

from __future__ import annotations

import dataclasses

from flask import current_app, g, request

from racetrackd import metrics
from racetrackd.addressing import Addressing
from racetrackd.auth import Authenticator, token_from
from racetrackd.errors import UnauthorizedError
from racetrackd.jobtypes import JobType
from racetrackd.runtime import Runtime
from racetrackd.settings import Settings
from racetrackd.vault import Vault


@dataclasses.dataclass(frozen=True)
class Services:
    """Everything handlers need, wired once by `create_app`."""

    settings: Settings
    runtime: Runtime
    job_types: list[JobType]
    authenticator: Authenticator
    addressing: Addressing
    vault: Vault


def services() -> Services:
    svc: Services = current_app.extensions["racetrackd"]
    return svc


def authenticate_request() -> None:
    """before_request hook: set `g.caller` or raise UnauthorizedError (counted in /metrics)."""
    token = token_from(request.headers, request.cookies)
    try:
        g.caller = services().authenticator.authenticate(token)
    except UnauthorizedError:
        metrics.AUTH_FAILURES.labels("api").inc()
        raise
