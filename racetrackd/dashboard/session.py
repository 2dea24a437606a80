"""A browser's session on the dashboard: who it is (from the cookie), its CSRF token, where logins go.

No server-side session state: the cookie holds an auth token (a password login's, or one pasted on
the login page), and the CSRF token is a keyed digest of it (racetrackd.api.csrf_token).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import g, request

from racetrackd.api import check_csrf, csrf_token, services
from racetrackd.auth.access import Identity
from racetrackd.auth.authenticator import token_from
from racetrackd.errors import ForbiddenError

CSRF_FIELD = "csrf_token"
HOME = "/dashboard/jobs"


def open_session() -> Identity:
    """Identify the browser (UnauthorizedError when it has no valid token) and check the CSRF token of a form post."""
    token = token_from(request.headers, request.cookies)
    g.identity = services().authenticator.identify(token, request.remote_addr or "", "dashboard")
    g.auth_token = token
    if token and request.method == "POST":
        check_csrf(token, request.form.get(CSRF_FIELD))
    identity: Identity = g.identity
    return identity


def session_csrf_token() -> str:
    """The CSRF token pages embed (empty when auth is off and the browser has no token: nothing to protect)."""
    token: str | None = g.get("auth_token")
    return csrf_token(token) if token else ""


def check_same_origin() -> None:
    """A login form must come from this daemon's own pages (there is no session yet to bind a token to)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin is None:
        return  # not a browser's cross-site post: those always carry Origin
    parts = urlsplit(origin)
    if parts.netloc != request.host:
        raise ForbiddenError(f"a login from another site ({parts.scheme}://{parts.netloc}) is refused")


# Pages a login may return to: the dashboard's, and jobs' pages through the gateway (a browser that
# opened a job's URL without a login is sent to the login page and back).
NEXT_PREFIXES = ("/dashboard", "/pub/job/", "/pub/fatman/")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard or job page of this daemon, never another site.

    Only a path on this host: no scheme or `//host` (an open redirect), no backslash (which browsers
    read as a slash) and no control characters (header splitting, or a tab that browsers drop)."""
    if (
        target
        and target.startswith(NEXT_PREFIXES)
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(char) < 0x20 or ord(char) == 0x7F for char in target)
    ):
        return target
    return HOME
