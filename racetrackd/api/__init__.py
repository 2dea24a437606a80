"""HTTP edges: thin Flask blueprints that parse input, call one use case and serialise the result."""

from __future__ import annotations

import hmac
from typing import TypeVar

from flask import current_app, g, request
from werkzeug.wrappers import Response

from racetrackd.auth.access import Identity, forbidden
from racetrackd.auth.authenticator import AUTH_HEADER, LEGACY_HEADERS, token_from
from racetrackd.errors import ForbiddenError
from racetrackd.services import Services


def services() -> Services:
    """The app's Services (racetrackd.services), put there by `create_app`."""
    svc: Services = current_app.extensions["racetrackd"]
    return svc


AnyResponse = TypeVar("AnyResponse", bound=Response)  # a JSON answer, or a redirect of the dashboard

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Ending a login is harmless to force on someone, and Racetrack's clients post it with the cookie alone.
CSRF_EXEMPT_ENDPOINTS = frozenset({"auth.logout"})


def authenticate_request() -> None:
    """before_request hook: set `g.identity` or raise UnauthorizedError / TooManyAuthFailures
    (ForbiddenError for a browser's change without its CSRF token)."""
    token = token_from(request.headers, request.cookies)
    g.identity = services().authenticator.identify(token, request.remote_addr or "", "api")
    if token and request.method not in SAFE_METHODS and request.endpoint not in CSRF_EXEMPT_ENDPOINTS:
        check_csrf(token, request.headers.get(CSRF_HEADER))


def csrf_token(auth_token: str) -> str:
    """The CSRF token of a browser session: a keyed digest of its auth token, so it needs no storage
    and dies with the login."""
    return services().vault.digest("csrf:" + auth_token)


def check_csrf(auth_token: str, given: str | None) -> None:
    """A change authenticated by the cookie alone must carry the session's CSRF token (the dashboard's
    pages embed it); programs that send the token as a header are not browsers and need none."""
    if any(request.headers.get(name) for name in (AUTH_HEADER, *LEGACY_HEADERS)):
        return
    if not given or not hmac.compare_digest(given, csrf_token(auth_token)):
        raise ForbiddenError(
            f"missing or wrong {CSRF_HEADER}: a change made with the browser's cookie needs the "
            "CSRF token of a dashboard page",
            hint="reload the dashboard page and try again",
        )


def caller() -> Identity:
    identity: Identity = g.identity
    return identity


def require(scope: str, job_name: str | None = None, job_version: str | None = None, *, doing: str) -> Identity:
    """The caller, if it holds `scope` (on that job, when named); ForbiddenError saying what is missing otherwise."""
    identity = caller()
    if not identity.allows(scope, job_name, job_version):
        raise forbidden(identity, scope, doing, job_name, job_version)
    return identity


# The login cookie is HTTP, so it lives here at the edge, shared by the API's login and logout and the
# dashboard's forms; what a login *is* (password check, token issued or revoked) is racetrackd.auth.login.
def set_login_cookie(response: AnyResponse, token: str) -> AnyResponse:
    """The HttpOnly, SameSite=Lax `X-Racetrack-Auth` cookie browsers authenticate with."""
    settings = services().settings
    response.set_cookie(
        AUTH_HEADER,
        token,
        max_age=int(settings.login_token_ttl),
        httponly=True,
        samesite="Lax",
        secure=settings.secure_cookie,
        path="/",
    )
    return response


def clear_login_cookie(response: AnyResponse) -> AnyResponse:
    response.delete_cookie(AUTH_HEADER, path="/")
    return response
