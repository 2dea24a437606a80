"""Users, ESCs, tokens, grants and public endpoints under /lifecycle/api/v1, with Racetrack's paths
where it has them (users/login, users/validate_user_auth, escs, auth/allow, auth/can-call-job).

Managing other subjects needs `full_access` (staff users have it); anyone may see and manage
their own tokens. Tokens appear in exactly one answer: the one that creates them.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from racetrackd.api import authenticate_request, caller, clear_login_cookie, require, services, set_login_cookie
from racetrackd.auth import access
from racetrackd.auth import login as logins  # `login` is the endpoint (auth.login)
from racetrackd.auth.access import GrantRule, Identity
from racetrackd.auth.accounts import ADMIN_USERNAME
from racetrackd.auth.authenticator import AUTH_HEADER, LEGACY_HEADERS, token_from
from racetrackd.db import AuthToken, Esc, Grant, PublicEndpoint, User
from racetrackd.errors import ForbiddenError, NotFoundError, ValidationError
from racetrackd.jobs import queries as jobs

bp = Blueprint("auth", __name__)

OPEN_ENDPOINTS = {"auth.login", "auth.register"}


@bp.before_request
def _authenticate() -> None:
    if request.endpoint not in OPEN_ENDPOINTS:
        authenticate_request()


# ---- users: log in and out, own profile
@bp.post("/users/login")
def login() -> Response:
    body = _body()
    svc = services()
    user, token = logins.password_login(
        svc.accounts,
        svc.authenticator.limiter,
        body.get("username"),
        body.get("password"),
        request.remote_addr or "",
        svc.settings.login_token_ttl,
    )
    return set_login_cookie(jsonify(_profile(user, token)), token)


@bp.get("/users/logout")
@bp.post("/users/logout")
def logout() -> Response:
    """Ends a password login: its token stops working and the cookie is cleared."""
    logins.end_login(services().accounts, caller())
    return clear_login_cookie(jsonify({"logged_out": True}))


@bp.post("/users/register")
def register() -> tuple[dict[str, Any], int]:
    """Racetrack's self-registration: the account stays inactive until an admin activates it."""
    body = _body()
    user = services().accounts.create_user(body.get("username"), body.get("password"), is_active=False)
    return _user_dto(user), 201


@bp.get("/users/validate_user_auth")
def validate_user_auth() -> dict[str, Any]:
    identity = caller()
    return {
        "username": identity.display or identity.name,
        "token": token_from(request.headers, request.cookies),
        "is_staff": identity.unrestricted,
        "subject": identity.subject,
    }


@bp.put("/users/change_password")
def change_password() -> dict[str, Any]:
    identity = _user_caller()
    body = _body()
    services().accounts.change_password(
        identity.name, body.get("old_password"), body.get("new_password"), keep_token_id=identity.token_id
    )
    return {"changed": True}


@bp.post("/auth/token/user/regenerate")
def regenerate_user_token() -> Response:
    """A new token for the caller; the one used for this request stops working (the bootstrap one excepted)."""
    token = logins.regenerate_token(services().accounts, _user_caller())
    return set_login_cookie(jsonify({"new_token": token}), token)


# ---- users: administration
@bp.get("/users")
def list_users() -> list[dict[str, Any]]:
    _require_admin("list users")
    return [_user_dto(user) for user in User.select().order_by(User.username)]


@bp.post("/users")
def create_user() -> tuple[dict[str, Any], int]:
    who = _require_admin("create users")
    body = _body()
    user = services().accounts.create_user(
        body.get("username"),
        body.get("password"),
        is_staff=_bool(body, "is_staff", False),
        is_active=_bool(body, "is_active", True),
        granted_by=who.display,
    )
    return _user_dto(user), 201


@bp.get("/users/<username>")
def get_user(username: str) -> dict[str, Any]:
    _require_self_or_admin(access.USER, username, "read users")
    return _user_dto(services().accounts.get_user(username))


@bp.patch("/users/<username>")
def update_user(username: str) -> dict[str, Any]:
    _require_admin("change users")
    return _user_dto(services().accounts.update_user(username, _body()))


@bp.delete("/users/<username>")
def delete_user(username: str) -> tuple[str, int]:
    _require_admin("delete users")
    services().accounts.delete_user(username)
    return "", 204


@bp.get("/users/<username>/tokens")
def user_tokens(username: str) -> list[dict[str, Any]]:
    _require_self_or_admin(access.USER, username, "read tokens of users")
    services().accounts.get_user(username)
    return [_token_dto(row) for row in services().accounts.tokens_of(access.USER, username)]


@bp.post("/users/<username>/tokens")
def create_user_token(username: str) -> tuple[dict[str, Any], int]:
    _require_self_or_admin(access.USER, username, "create tokens for users")
    return _issue(access.USER, username, _body())


# ---- external service consumers (Racetrack's /escs)
@bp.get("/escs")
def list_escs() -> list[dict[str, Any]]:
    _require_admin("list ESCs")
    return [_esc_dto(esc) for esc in Esc.select().order_by(Esc.name)]


@bp.post("/escs")
def create_esc() -> tuple[dict[str, Any], int]:
    _require_admin("create ESCs")
    body = _body()
    return _esc_dto(services().accounts.create_esc(body.get("name"), body.get("id"))), 201


@bp.get("/escs/<esc_id>")
def get_esc(esc_id: str) -> dict[str, Any]:
    _require_admin("read ESCs")
    return _esc_dto(services().accounts.get_esc(esc_id))


@bp.delete("/escs/<esc_id>")
def delete_esc(esc_id: str) -> tuple[str, int]:
    _require_admin("delete ESCs")
    services().accounts.delete_esc(esc_id)
    return "", 204


@bp.get("/escs/<esc_id>/auth_data")
def esc_auth_data(esc_id: str) -> list[dict[str, Any]]:
    _require_admin("read ESC tokens")
    esc = services().accounts.get_esc(esc_id)
    return [_token_dto(row) for row in services().accounts.tokens_of(access.ESC, esc.id)]


@bp.post("/escs/<esc_id>/auth_token")
def create_esc_token(esc_id: str) -> tuple[dict[str, Any], int]:
    _require_admin("create ESC tokens")
    return _issue(access.ESC, services().accounts.get_esc(esc_id).id, _body())


@bp.get("/auth/token/esc/<esc_id>")
@bp.post("/auth/token/esc/<esc_id>")
def esc_token(esc_id: str) -> dict[str, Any]:
    """Racetrack returns the ESC's token here; tokens are stored hashed, so this makes a new one.

    A GET that creates a token must not work with the browser's cookie alone: any page could make
    an admin's browser fetch it. Programs send the token as a header; browsers POST with the CSRF token.
    """
    if request.method == "GET" and not any(request.headers.get(name) for name in (AUTH_HEADER, *LEGACY_HEADERS)):
        raise ForbiddenError(
            "GET /auth/token/esc/<id> makes a token: it needs the X-Racetrack-Auth header, "
            "not the browser's cookie alone",
            hint="POST it with the dashboard's X-CSRF-Token, or send the token as a header",
        )
    _require_admin("create ESC tokens")
    body, _ = _issue(access.ESC, services().accounts.get_esc(esc_id).id, {})
    return body


@bp.delete("/escs/<esc_id>/auth_token/<int:token_id>")
def revoke_esc_token(esc_id: str, token_id: int) -> tuple[str, int]:
    _require_admin("revoke ESC tokens")
    esc = services().accounts.get_esc(esc_id)
    row = services().accounts.get_token(token_id)
    if (row.subject_kind, row.subject_name) != (access.ESC, esc.id):
        raise NotFoundError(f"ESC {esc_id} has no token {token_id}")
    services().accounts.revoke_token(token_id)
    return "", 204


# ---- tokens of any subject
@bp.get("/auth/tokens")
def list_tokens() -> list[dict[str, Any]]:
    """Your tokens; an admin may ask for any subject's (`?subject=esc:ID`) or everyone's (`?all=true`)."""
    identity = caller()
    subject = request.args.get("subject")
    if request.args.get("all", "").lower() in ("1", "true", "yes"):
        _require_admin("list every token")
        return [_token_dto(row) for row in services().accounts.tokens_of()]
    kind, name = _subject(subject) if subject else (identity.kind, identity.name)
    _require_self_or_admin(kind, name, "read tokens of other subjects")
    return [_token_dto(row) for row in services().accounts.tokens_of(kind, name)]


@bp.post("/auth/tokens")
def create_token() -> tuple[dict[str, Any], int]:
    identity = caller()
    body = _body()
    subject = body.get("subject")
    kind, name = _subject(subject) if subject is not None else (identity.kind, identity.name)
    _require_self_or_admin(kind, name, "create tokens for other subjects")
    return _issue(kind, name, body)


@bp.delete("/auth/tokens/<int:token_id>")
def revoke_token(token_id: int) -> dict[str, Any]:
    row = services().accounts.get_token(token_id)
    _require_self_or_admin(row.subject_kind, row.subject_name, "revoke tokens of other subjects")
    return _token_dto(services().accounts.revoke_token(token_id))


# ---- grants
@bp.get("/auth/grants")
def list_grants() -> list[dict[str, Any]]:
    """Your grants; an admin may filter by `?subject=` or see all."""
    identity = caller()
    subject = request.args.get("subject")
    if subject:
        kind, name = _subject(subject)
        _require_self_or_admin(kind, name, "read grants of other subjects")
        return [_grant_dto(grant) for grant in services().accounts.grants(kind, name)]
    if identity.allows(access.FULL_ACCESS):
        return [_grant_dto(grant) for grant in services().accounts.grants()]
    return [_grant_dto(grant) for grant in services().accounts.grants(identity.kind, identity.name)]


@bp.post("/auth/grants")
def add_grant() -> tuple[dict[str, Any], int]:
    who = _require_admin("grant permissions")
    body = _body()
    kind, name = _subject(body.get("subject"))
    rule = GrantRule(
        scope=_text(body, "scope"),
        job_name=_optional_text(body, "job_name"),
        job_version=_optional_text(body, "job_version"),
        endpoint=_optional_text(body, "endpoint"),
    )
    return _grant_dto(services().accounts.add_grant(kind, name, rule, who.display)), 201


@bp.delete("/auth/grants/<int:grant_id>")
def remove_grant(grant_id: int) -> tuple[str, int]:
    _require_admin("remove grants")
    services().accounts.remove_grant(grant_id)
    return "", 204


@bp.post("/auth/allow/esc/<esc_id>/job/<job_name>/scope/<scope>")
def allow_esc(esc_id: str, job_name: str, scope: str) -> tuple[dict[str, Any], int]:
    who = _require_admin("grant permissions")
    esc = services().accounts.get_esc(esc_id)
    return _grant_dto(services().accounts.add_grant(access.ESC, esc.id, GrantRule(scope, job_name), who.display)), 201


@bp.post("/auth/allow/job_family/<source>/job/<job_name>/scope/<scope>")
def allow_job_family(source: str, job_name: str, scope: str) -> tuple[dict[str, Any], int]:
    who = _require_admin("grant permissions")
    grant = services().accounts.add_grant(access.JOB_FAMILY, source, GrantRule(scope, job_name), who.display)
    return _grant_dto(grant), 201


@bp.get("/auth/allowed/job/<name>/<version>/scope/<scope>")
def allowed_job(name: str, version: str, scope: str) -> tuple[dict[str, Any], int]:
    job = jobs.resolve_job(name, version)
    require(_scope(scope), job.name, job.version, doing=f"use {scope} on")
    return {"allowed": True}, 202


@bp.get("/auth/allowed/job_endpoint/<name>/<version>/scope/<scope>/endpoint/<path:endpoint>")
def allowed_endpoint(name: str, version: str, scope: str, endpoint: str) -> tuple[dict[str, Any], int]:
    job = jobs.resolve_job(name, version)
    path = "/" + endpoint.lstrip("/")
    if not caller().allows(_scope(scope), job.name, job.version, path):
        raise access.forbidden(caller(), scope, f"use {scope} on", job.name, job.version, path)
    return {"allowed": True}, 202


@bp.get("/auth/can-call-job/<name>/<version>/<path:endpoint>")
def can_call_job(name: str, version: str, endpoint: str) -> dict[str, Any]:
    """Racetrack's gateway question, answered the way racetrackd's own gateway answers it."""
    job = jobs.resolve_job(name, version)
    path = "/" + endpoint.lstrip("/")
    identity = caller()
    if not (identity.allows(access.CALL_JOB, job.name, job.version, path) or _open_path(job.name, job.version, path)):
        raise access.forbidden(identity, access.CALL_JOB, "call", job.name, job.version, path)
    return {"job": jobs.job_dto(job, services().settings), "caller": identity.display}


# ---- public endpoints
@bp.get("/job/<name>/<version>/public-endpoints")
def job_public_endpoints(name: str, version: str) -> list[dict[str, Any]]:
    """The endpoints of a job version anyone may call (approved ones only, as Racetrack lists them)."""
    job = jobs.resolve_job(name, version)
    require(access.READ_JOB, job.name, job.version, doing="read")
    return [
        _public_endpoint_dto(row) for row in services().accounts.public_endpoints(job.name, job.version, active=True)
    ]


@bp.get("/auth/public-endpoints")
def list_public_endpoints() -> list[dict[str, Any]]:
    """Every request to open an endpoint (`?pending=true`: only those waiting for approval)."""
    _require_admin("review public endpoints")
    pending = request.args.get("pending", "").lower() in ("1", "true", "yes")
    rows = services().accounts.public_endpoints(request.args.get("job_name"), active=False if pending else None)
    return [_public_endpoint_dto(row) for row in rows]


@bp.put("/auth/public-endpoints/<int:request_id>")
def set_public_endpoint(request_id: int) -> dict[str, Any]:
    who = _require_admin("approve public endpoints")
    active = _body().get("active")
    if not isinstance(active, bool):
        raise ValidationError("active: must be true (approve) or false (close again)")
    return _public_endpoint_dto(services().accounts.set_public_endpoint(request_id, active, who.display))


# ---- helpers
def _require_admin(doing: str) -> Identity:
    return require(access.FULL_ACCESS, doing=doing)


def _require_self_or_admin(kind: str, name: str, doing: str) -> None:
    identity = caller()
    if (identity.kind, identity.name) != (kind, name) and not identity.allows(access.FULL_ACCESS):
        raise access.forbidden(identity, access.FULL_ACCESS, doing)


def _user_caller() -> Identity:
    identity = caller()
    if identity.kind != access.USER:
        raise ForbiddenError(f"{identity.display or identity.subject} is not a user", hint="log in as a user")
    return identity


def _issue(kind: str, name: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    expiry_time = body.get("expiry_time")
    expires_in = body.get("expires_in")
    for field, value in (("expiry_time", expiry_time), ("expires_in", expires_in)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValidationError(f"{field}: must be a positive number of seconds")
    if expires_in is not None:
        expiry_time = time.time() + expires_in
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise ValidationError("description: must be a string")
    token, row = services().accounts.issue_token(kind, name, expiry_time=expiry_time, description=description)
    return {**_token_dto(row), "token": token}, 201


def _open_path(job_name: str, job_version: str, path: str) -> bool:
    if path in access.OPEN_JOB_PATHS:  # exactly, as the gateway checks them
        return True
    return any(
        access.path_within(path, row.endpoint)
        for row in services().accounts.public_endpoints(job_name, job_version, active=True)
    )


def _profile(user: User, token: str) -> dict[str, Any]:
    return {"username": user.username, "token": token, "is_staff": user.is_staff, "subject": f"user:{user.username}"}


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValidationError("request body: must be a JSON object")
    return body


def _bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise ValidationError(f"{field}: must be true or false")
    return value


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field}: must be a non-empty string")
    return value


def _optional_text(body: dict[str, Any], field: str) -> str | None:
    return None if body.get(field) is None else _text(body, field)


def _subject(text: Any) -> tuple[str, str]:
    if not isinstance(text, str):
        raise ValidationError("subject: must be a string like user:NAME, esc:ID or job_family:NAME")
    try:
        return access.parse_subject(text)
    except ValueError as exc:
        raise ValidationError(f"subject: {exc}") from None


def _scope(scope: str) -> str:
    if scope not in access.SCOPES:
        raise ValidationError(f"scope: {scope!r} is not one of {', '.join(access.SCOPES)}")
    return scope


def _user_dto(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "has_password": bool(user.password_hash),
        "bootstrap_admin": user.username == ADMIN_USERNAME,
        "create_time": int(user.create_time),
        "last_login_time": int(user.last_login_time) if user.last_login_time else None,
    }


def _esc_dto(esc: Esc) -> dict[str, Any]:
    return {"id": esc.id, "name": esc.name, "create_time": int(esc.create_time)}


def _token_dto(row: AuthToken) -> dict[str, Any]:
    expired = row.expiry_time is not None and row.expiry_time <= time.time()
    return {
        "id": row.id,
        "subject": f"{row.subject_kind}:{row.subject_name}",
        "description": row.description,
        "origin": row.origin,
        "active": row.active and not expired,
        "revoked": not row.active,
        "expired": expired,
        "create_time": int(row.create_time),
        "expiry_time": int(row.expiry_time) if row.expiry_time else None,
        "last_use_time": int(row.last_use_time) if row.last_use_time else None,
    }


def _grant_dto(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "subject": f"{grant.subject_kind}:{grant.subject_name}",
        "scope": grant.scope,
        "job_name": grant.job_name,
        "job_version": grant.job_version,
        "endpoint": grant.endpoint,
        "granted_by": grant.granted_by,
        "create_time": int(grant.create_time),
    }


def _public_endpoint_dto(row: PublicEndpoint) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_name": row.job_name,
        "job_version": row.job_version,
        "endpoint": row.endpoint,
        "active": row.active,
        "approved_by": row.approved_by,
        "create_time": int(row.create_time),
    }
