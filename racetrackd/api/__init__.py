"""HTTP edges: thin Flask blueprints that parse input, call one use case and serialise the result."""

from __future__ import annotations

import dataclasses

from flask import current_app, g, request

from racetrackd.access import Identity, forbidden
from racetrackd.accounts import Accounts
from racetrackd.addressing import Addressing
from racetrackd.auth import Authenticator, token_from
from racetrackd.plugins import PluginStore
from racetrackd.runtime import Runtime
from racetrackd.settings import Settings
from racetrackd.vault import Vault


@dataclasses.dataclass(frozen=True)
class Services:
    """Everything handlers need, wired once by `create_app`."""

    settings: Settings
    runtime: Runtime
    plugins: PluginStore
    authenticator: Authenticator
    accounts: Accounts
    addressing: Addressing
    vault: Vault


def services() -> Services:
    svc: Services = current_app.extensions["racetrackd"]
    return svc


def authenticate_request() -> None:
    """before_request hook: set `g.identity` or raise UnauthorizedError / TooManyAuthFailures."""
    token = token_from(request.headers, request.cookies)
    g.identity = services().authenticator.identify(token, request.remote_addr or "", "api")


def caller() -> Identity:
    identity: Identity = g.identity
    return identity


def require(scope: str, job_name: str | None = None, job_version: str | None = None, *, doing: str) -> Identity:
    """The caller, if it holds `scope` (on that job, when named); ForbiddenError saying what is missing otherwise."""
    identity = caller()
    if not identity.allows(scope, job_name, job_version):
        raise forbidden(identity, scope, doing, job_name, job_version)
    return identity

