"""Who is calling: a token (the `X-Racetrack-Auth` header, or a cookie of that name) → an Identity.

The gateway asks on every call, so the answer comes from memory: token SHA-256 → Identity, filled
from the registry on first sight and dropped whole when the accounts' ChangeSignal moves (any
revoke, grant or user change, in any process). Expiry is checked on every use. Failed attempts
are counted per client address (in the registry, across workers); past the limit that address
gets 429 for tokens not already known good, so guessing costs time and a valid caller behind
the same address keeps working.
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
from racetrackd.access import ANYONE, Identity
from racetrackd.accounts import Accounts, new_token, token_hash
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
KNOWN_GOOD_LIMIT = 100_000  # last_use_time is exact to a minute: a call costs no write


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


def token_from(headers: _Lookup, cookies: _Lookup) -> str | None:
    for name in (AUTH_HEADER, *LEGACY_HEADERS):
        value = headers.get(name)
        if value:
            return value
    return cookies.get(AUTH_HEADER)


class FailureLimiter:
    """Failed auth attempts per client address over a sliding window.

    Kept in the registry, so the limit holds for the address whatever HTTP worker its connections
    land on. It costs a query only where one is made anyway: a token not in the cache, a login.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window

    def blocked_for(self, address: str) -> int:
        """Seconds until `address` may try again (0: it may now)."""
        if not self.limit:
            return 0
        now = time.time()
        recent = [row.time for row in AuthFailure.select(AuthFailure.time)
                  .where((AuthFailure.address == address) & (AuthFailure.time > now - self.window))
                  .order_by(AuthFailure.time.desc()).limit(self.limit)]
        if len(recent) < self.limit:
            return 0
        return max(1, int(recent[-1] + self.window - now) + 1)  # until the oldest of them leaves the window

    def record(self, address: str) -> None:
        if not self.limit:
            return
        now = time.time()
        with database.atomic():
            AuthFailure.create(address=address, time=now)
            AuthFailure.delete().where(AuthFailure.time < now - self.window).execute()


class Authenticator:
    def __init__(self, accounts: Accounts, *, required: bool, limiter: FailureLimiter) -> None:
        self.accounts = accounts
        self.required = required
        self.limiter = limiter
        self._cache: dict[str, Identity] = {}
        self._known_good: set[str] = set()  # hashes once valid here: looked up even from a blocked address
        self._seen_changes = b""
        self._last_use: dict[int, float] = {}
        self._last_written: dict[int, float] = {}
        self._flusher: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, accounts: Accounts) -> Authenticator:
        return cls(accounts, required=settings.auth_required,
                   limiter=FailureLimiter(settings.auth_failure_limit, settings.auth_failure_window))

    def identify(self, token: str | None, client: str, area: str) -> Identity:
        """The caller's identity. Raises UnauthorizedError (no or bad token, when auth is required)
        or TooManyAuthFailures; `area` (api, gateway) labels the failure metrics."""
        if token:
            identity = self._cached(token)
            if identity is None:
                wait = self.limiter.blocked_for(client) if self.required and not self._was_good(token) else 0
                if wait:
                    metrics.AUTH_FAILURES.labels(area).inc()
                    raise TooManyAuthFailures(
                        f"too many failed auth attempts from {client}; try again in {wait} s", retry_after=wait)
                identity = self._load(token)
            if identity is not None:
                self._last_use[identity.token_id or 0] = time.time()
                return identity if self.required else _unrestricted(identity)
        if not self.required:
            return ANYONE
        metrics.AUTH_FAILURES.labels(area).inc()
        if not token:
            raise UnauthorizedError(f"missing {AUTH_HEADER} header", hint="run `rtd login TOKEN` first")
        self.limiter.record(client)
        raise UnauthorizedError("invalid, expired or revoked auth token",
                                hint="log in again (rtd login), or ask an admin for a new token")

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
        if identity is not None:
            if len(self._known_good) < KNOWN_GOOD_LIMIT:
                self._known_good.add(token_hash(token))
            if changes == self._seen_changes:
                self._cache[token_hash(token)] = identity
        return identity

    def _was_good(self, token: str) -> bool:
        """Whether this token was valid here before: a caller behind a blocked address keeps working
        after a change emptied the cache (a guess is never in this set)."""
        return token_hash(token) in self._known_good

    # ---- last use, written in the background
    def start(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, daemon=True, name="token-last-use")
            self._flusher.start()

    def flush_last_use(self) -> None:
        due = {token_id: when for token_id, when in list(self._last_use.items())
               if token_id and when - self._last_written.get(token_id, 0.0) >= LAST_USE_RESOLUTION}
        if due:
            self.accounts.mark_used(due)
            self._last_written.update(due)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(LAST_USE_FLUSH_SECONDS)
            try:
                self.flush_last_use()
            except Exception:  # noqa: BLE001 (a missed last-use write is not worth a dead thread)
                log.exception("recording token use failed")


def _unrestricted(identity: Identity) -> Identity:
    """With auth off, a known caller is still named (deployed_by, audit) but may do anything."""
    return dataclasses.replace(identity, unrestricted=True)
