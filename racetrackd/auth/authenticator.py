"""Who is calling: a token (the `X-Racetrack-Auth` header, or a cookie of that name) → an Identity.

The gateway asks on every call, so the answer comes from memory: token SHA-256 → Identity, filled
from the registry on first sight and dropped whole when the accounts' ChangeSignal moves (any
revoke, grant or user change, in any process). Expiry is checked on every use. Failed attempts
are counted per client address and per presented token (in the registry, across workers); past
the limit, bad tokens get 429 instead of 401, so guessing costs time, while a valid token always
passes: callers behind the same proxy as a guesser keep working.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from racetrackd import metrics
from racetrackd.auth.access import ANYONE, Identity
from racetrackd.auth.accounts import Accounts, new_token, token_hash
from racetrackd.db import AuthFailure, database
from racetrackd.errors import TooManyAuthFailures, UnauthorizedError
from racetrackd.settings import Settings

log = logging.getLogger(__name__)

AUTH_HEADER = "X-Racetrack-Auth"
LEGACY_HEADERS = ("X-Racetrack-User-Auth", "X-Racetrack-Esc-Auth")
ADMIN_TOKEN_FILE = "admin-token"
SECRET_KEY_FILE = "secret-key"
LAST_USE_FLUSH_SECONDS = 10.0
LAST_USE_RESOLUTION = 60.0


def ensure_admin_token(settings: Settings) -> str:
    """The bootstrap admin token: RACETRACK_ADMIN_TOKEN, else DATA_DIR/admin-token (generated once, mode 0600)."""
    if settings.admin_token:
        return settings.admin_token
    return _read_or_create(settings.data_dir / ADMIN_TOKEN_FILE, new_token)


def ensure_secret_key(settings: Settings) -> bytes:
    """The key sealing stored secrets: RACETRACK_SECRET_KEY, else DATA_DIR/secret-key (generated once, mode 0600)."""
    if settings.secret_key:
        return settings.secret_key.encode()
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


class _Lookup(Protocol):
    def get(self, key: str) -> str | None: ...


class _MultiLookup(_Lookup, Protocol):
    def getlist(self, key: str) -> list[str]: ...


# A page served from the daemon's origin (a job's web view) can set a second X-Racetrack-Auth
# cookie with a narrower path, which browsers then send first: reading "the first one" would log
# the visitor in as whoever planted it. Two different values are refused instead.
PLANTED_COOKIE = (
    "several different X-Racetrack-Auth cookies were sent (a page on this origin may have set one):"
    " log in again, or clear this site's cookies"
)


def token_from(headers: _Lookup, cookies: _MultiLookup) -> str | None:
    """The caller's token: from a header, else from the login cookie.

    Raises:
        UnauthorizedError: the cookie came more than once with different values.
    """
    for name in (AUTH_HEADER, *LEGACY_HEADERS):
        value = headers.get(name)
        if value:
            return value
    values = set(cookies.getlist(AUTH_HEADER))
    if len(values) > 1:
        raise UnauthorizedError(PLANTED_COOKIE)
    return values.pop() if values else None


def credential_key(token: str) -> str:
    """What the limiter counts for a presented token: a digest of it, never the token itself."""
    return "token:" + token_hash(token)[:32]


def username_key(username: str) -> str:
    """What the limiter counts for a password login, whichever address it comes from."""
    return "user:" + username[:150]


class FailureLimiter:
    """Failed auth attempts over a sliding window, counted per key: the client address, the
    presented credential (`credential_key`) and the username of a password login (`username_key`).

    Kept in the registry, so the limit holds whatever HTTP worker each attempt lands on. It costs
    queries only after a failure: a valid token or password never asks it.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window

    def blocked_for(self, *keys: str) -> int:
        """Seconds until none of `keys` is over the limit any more (0: none is)."""
        if not self.limit:
            return 0
        now = time.time()
        wait = 0
        for key in keys:
            recent = [
                row.time
                for row in AuthFailure.select(AuthFailure.time)
                .where((AuthFailure.address == key) & (AuthFailure.time > now - self.window))
                .order_by(AuthFailure.time.desc())
                .limit(self.limit)
            ]
            if len(recent) >= self.limit:  # until the oldest of them leaves the window
                wait = max(wait, int(recent[-1] + self.window - now) + 1)
        return wait

    def record(self, *keys: str) -> None:
        if not self.limit:
            return
        now = time.time()
        with database.atomic():
            for key in keys:
                AuthFailure.create(address=key, time=now)
            AuthFailure.delete().where(AuthFailure.time < now - self.window).execute()


class Authenticator:
    def __init__(self, accounts: Accounts, *, required: bool, limiter: FailureLimiter) -> None:
        self.accounts = accounts
        self.required = required
        self.limiter = limiter
        self._cache: dict[str, Identity] = {}
        self._seen_changes = b""
        self._last_use: dict[int, float] = {}
        self._last_written: dict[int, float] = {}
        self._flusher: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, accounts: Accounts) -> Authenticator:
        return cls(
            accounts,
            required=settings.auth_required,
            limiter=FailureLimiter(settings.auth_failure_limit, settings.auth_failure_window),
        )

    def identify(self, token: str | None, client: str, area: str) -> Identity:
        """The caller's identity. Raises UnauthorizedError (no or bad token, when auth is required)
        or TooManyAuthFailures; `area` (api, gateway) labels the failure metrics."""
        if token:
            # A valid token is never refused, whatever failed before from its address: the limit
            # slows guessing, and a guess that is right is worth nothing less for having waited.
            identity = self._cached(token) or self._load(token)
            if identity is not None:
                self._last_use[identity.token_id or 0] = time.time()
                return identity if self.required else _unrestricted(identity)
        if not self.required:
            return ANYONE
        metrics.AUTH_FAILURES.labels(area).inc()
        if not token:
            raise UnauthorizedError(f"missing {AUTH_HEADER} header", hint="run `rtd login TOKEN` first")
        keys = (client, credential_key(token))
        wait = self.limiter.blocked_for(*keys)
        if wait:  # no write while blocked: a flood of guesses costs the registry nothing more
            raise TooManyAuthFailures(
                f"too many failed auth attempts from {client} or with this token; try again in {wait} s",
                retry_after=wait,
            )
        self.limiter.record(*keys)
        raise UnauthorizedError(
            "invalid, expired or revoked auth token", hint="log in again (rtd login), or ask an admin for a new token"
        )

    def forget(self) -> None:
        self._cache = {}

    def _cached(self, token: str) -> Identity | None:
        changes = self.accounts.changes.current()
        if changes != self._seen_changes:
            self._cache = {}
            self._seen_changes = changes
            return None
        identity = self._cache.get(token_hash(token))
        if identity is not None and identity.expires_at is not None and identity.expires_at <= time.time():
            return None
        return identity

    def _load(self, token: str) -> Identity | None:
        changes = self.accounts.changes.current()  # before the read: a change during it empties the cache next time
        identity = self.accounts.identity_for(token)
        if identity is not None and changes == self._seen_changes:
            self._cache[token_hash(token)] = identity
        return identity

    # ---- last use, written in the background
    def start(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, daemon=True, name="token-last-use")
            self._flusher.start()

    def flush_last_use(self) -> None:
        due = {
            token_id: when
            for token_id, when in list(self._last_use.items())
            if token_id and when - self._last_written.get(token_id, 0.0) >= LAST_USE_RESOLUTION
        }
        if due:
            self.accounts.mark_used(due)
            self._last_written.update(due)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(LAST_USE_FLUSH_SECONDS)
            try:
                self.flush_last_use()
            except Exception:  # a missed last-use write is not worth a dead thread
                log.exception("recording token use failed")


def _unrestricted(identity: Identity) -> Identity:
    """With auth off, a known caller is still named (deployed_by, audit) but may do anything."""
    return dataclasses.replace(identity, unrestricted=True)
