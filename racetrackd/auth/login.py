"""Logins: a password exchanged for a login token, a token renewed, a login ended.

The same for the API (`POST /users/login`, Racetrack's clients) and the dashboard's login form:
both edges parse their input, call these and put the token in their own answer (JSON and a cookie,
or a redirect and a cookie). No HTTP here: the client address comes in as a value.
"""

from __future__ import annotations

import time
from typing import Any

from racetrackd.auth import access
from racetrackd.auth.access import Identity
from racetrackd.auth.accounts import Accounts
from racetrackd.auth.authenticator import FailureLimiter, username_key
from racetrackd.db import AuthToken, User
from racetrackd.errors import TooManyAuthFailures, UnauthorizedError


def password_login(
    accounts: Accounts, limiter: FailureLimiter, username: Any, password: Any, client: str, token_ttl: float
) -> tuple[User, str]:
    """Check a username and password and issue a login token that expires after `token_ttl` seconds.

    Failures count for the client address and for the username. A username over its limit is
    refused whatever the password (so guessing it from many addresses stalls); an address over its
    limit still logs in with the right password (its other users are not locked out) but gets 429
    for a wrong one.
    """
    name_key = username_key(username) if isinstance(username, str) else None
    wait = limiter.blocked_for(name_key) if name_key else 0
    if wait:
        raise TooManyAuthFailures(f"too many failed logins as this user; try again in {wait} s", retry_after=wait)
    user = accounts.check_login(username, password)
    if user is None:
        wait = limiter.blocked_for(client)
        if wait:
            raise TooManyAuthFailures(
                f"too many failed auth attempts from {client}; try again in {wait} s", retry_after=wait
            )
        limiter.record(client, *([name_key] if name_key else []))
        raise UnauthorizedError("invalid username or password")
    token, _ = accounts.issue_token(
        access.USER, user.username, origin="login", description="password login", expiry_time=time.time() + token_ttl
    )
    return user, token


def end_login(accounts: Accounts, identity: Identity) -> None:
    """The password-login token `identity` came with stops working; an API token is left alone."""
    if identity.token_id is None:
        return
    row = AuthToken.get_or_none(AuthToken.id == identity.token_id)
    if row is not None and row.origin == "login":
        accounts.revoke_token(row.id)


def regenerate_token(accounts: Accounts, identity: Identity) -> str:
    """A new token for a user; the one `identity` came with stops working (the bootstrap one excepted)."""
    token, _ = accounts.issue_token(access.USER, identity.name, description="regenerated")
    row = AuthToken.get_or_none(AuthToken.id == identity.token_id)
    if row is not None and row.origin != "bootstrap":
        accounts.revoke_token(row.id)
    return token
