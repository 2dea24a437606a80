"""Who is calling: the bootstrap admin token and job-family tokens, checked on the API and the gateway.

Until users, ESCs and scopes exist, the admin token is the one user credential. Clients send it
as the `X-Racetrack-Auth` header (or a cookie of that name, for browsers).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from racetrackd.errors import UnauthorizedError
from racetrackd.settings import Settings

AUTH_HEADER = "X-Racetrack-Auth"
LEGACY_HEADERS = ("X-Racetrack-User-Auth", "X-Racetrack-Esc-Auth")
ADMIN_TOKEN_FILE = "admin-token"
SECRET_KEY_FILE = "secret-key"
ADMIN_USERNAME = "admin"


def ensure_admin_token(settings: Settings) -> str:
    """The admin token from settings, else the one in DATA_DIR/admin-token (generated once, mode 0600)."""
    if settings.admin_token:
        return settings.admin_token
    return _read_or_create(settings.data_dir / ADMIN_TOKEN_FILE, lambda: secrets.token_urlsafe(32))


def ensure_secret_key(settings: Settings) -> bytes:
    """The daemon's signing key in DATA_DIR/secret-key (generated once, mode 0600)."""
    return _read_or_create(settings.data_dir / SECRET_KEY_FILE, lambda: secrets.token_hex(32)).encode()


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the daemon made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
    return value


class JobTokens:
    """Each job family's token (its containers get it as AUTH_TOKEN, for chain calls).

    Derived, not stored: an HMAC of the family name under the daemon's secret key, so it is the
    same for every version and survives restarts, and a leaked registry reveals none.
    """

    PREFIX = "rtdjob"

    def __init__(self, secret_key: bytes) -> None:
        self._key = secret_key

    def token_for(self, family: str) -> str:
        return f"{self.PREFIX}.{family}.{self._signature(family)}"

    def family_of(self, token: str) -> str | None:
        """The family a token belongs to, or None when it is not a valid job token."""
        prefix, _, rest = token.partition(".")
        family, _, signature = rest.rpartition(".")
        if prefix != self.PREFIX or not family:
            return None
        return family if hmac.compare_digest(signature, self._signature(family)) else None

    def _signature(self, family: str) -> str:
        return hmac.new(self._key, f"job-family:{family}".encode(), hashlib.sha256).hexdigest()


class _Lookup(Protocol):
    def get(self, key: str) -> str | None: ...


def token_from(headers: _Lookup, cookies: _Lookup) -> str | None:
    for name in (AUTH_HEADER, *LEGACY_HEADERS):
        value = headers.get(name)
        if value:
            return value
    return cookies.get(AUTH_HEADER)


class Authenticator:
    def __init__(self, required: bool, admin_token: str, job_tokens: JobTokens) -> None:
        self.required = required
        self._admin_token = admin_token.encode()
        self._job_tokens = job_tokens

    def authenticate(self, token: str | None, *, calling_job: bool = False) -> str | None:
        """The caller's name; raises UnauthorizedError when auth is required and the token is wrong.

        Job-family tokens are good for calling jobs (chain calls) and nothing else; finer grants
        arrive with users and scopes.
        """
        if token and hmac.compare_digest(token.encode(), self._admin_token):
            return ADMIN_USERNAME
        family = self._job_tokens.family_of(token) if token else None
        if family is not None:
            if calling_job:
                return f"Job family {family}"
            if self.required:
                raise UnauthorizedError("a job's token may only call jobs through the gateway")
        if not self.required:
            return None
        if not token:
            raise UnauthorizedError(f"missing {AUTH_HEADER} header", hint="run `rtd login TOKEN` first")
        raise UnauthorizedError("invalid auth token")
