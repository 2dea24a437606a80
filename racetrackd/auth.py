"""Who is calling: the bootstrap admin token, checked on the API and the gateway.

Until users, ESCs and scopes exist, the admin token is the one credential. Clients send it as
the `X-Racetrack-Auth` header (or a cookie of that name, for browsers).
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Protocol

from racetrackd.errors import UnauthorizedError
from racetrackd.settings import Settings

AUTH_HEADER = "X-Racetrack-Auth"
LEGACY_HEADERS = ("X-Racetrack-User-Auth", "X-Racetrack-Esc-Auth")
ADMIN_TOKEN_FILE = "admin-token"
ADMIN_USERNAME = "admin"


def ensure_admin_token(settings: Settings) -> str:
    """The admin token from settings, else the one in DATA_DIR/admin-token (generated once, mode 0600)."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token


class _Lookup(Protocol):
    def get(self, key: str) -> str | None: ...


def token_from(headers: _Lookup, cookies: _Lookup) -> str | None:
    for name in (AUTH_HEADER, *LEGACY_HEADERS):
        value = headers.get(name)
        if value:
            return value
    return cookies.get(AUTH_HEADER)


class Authenticator:
    def __init__(self, required: bool, admin_token: str) -> None:
        self.required = required
        self._admin_token = admin_token.encode()

    def authenticate(self, token: str | None) -> str | None:
        """The caller's name; raises UnauthorizedError when auth is required and the token is wrong."""
        if token and hmac.compare_digest(token.encode(), self._admin_token):
            return ADMIN_USERNAME
        if not self.required:
            return None
        if not token:
            raise UnauthorizedError(f"missing {AUTH_HEADER} header", hint="run `rtd login TOKEN` first")
        raise UnauthorizedError("invalid auth token")
