"""HTTP edges: thin Flask blueprints that parse input, call one use case and serialise the result."""

from __future__ import annotations

import dataclasses

from flask import current_app, g, request

from racetrackd.addressing import Addressing
from racetrackd.auth import Authenticator, token_from
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


def authenticate_request(*, calling_job: bool = False) -> None:
    """before_request hook: set `g.caller` or raise UnauthorizedError."""
    token = token_from(request.headers, request.cookies)
    g.caller = services().authenticator.authenticate(token, calling_job=calling_job)
