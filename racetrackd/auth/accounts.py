"""Subjects and what they hold, in the registry: users, ESCs, tokens, grants, public endpoints.

Tokens are random and shown once; the registry keeps only their SHA-256 (job-family tokens are
also kept sealed by the vault, because the daemon hands them to the family's containers). Every
change that could alter an answer of the authenticator's cache rings the `ChangeSignal`, so all
HTTP workers drop their cached identities at once.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import peewee

from racetrackd.auth import access
from racetrackd.auth.access import GrantRule, Identity
from racetrackd.auth.passwords import check_password_rules, hash_password, verify_password
from racetrackd.auth.vault import Vault
from racetrackd.db import (
    AuthToken,
    Deployment,
    DeploymentStatus,
    Esc,
    Grant,
    Job,
    PublicEndpoint,
    RegistrySetting,
    User,
    database,
    now,
)
from racetrackd.errors import ConflictError, NotFoundError, ValidationError

TOKEN_PREFIX = "rtd_"
ADMIN_USERNAME = "admin"
CHANGE_SIGNAL_FILE = "auth-changes"
# Marks a registry whose users' default grants were narrowed (deploy_job on every job taken away).
NARROWED_DEFAULTS_KEY = "default_grants_narrowed"
DEFAULT_GRANT_SECONDS = 2.0  # a default grant is made in the same transaction as its user
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$")
ESC_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ChangeSignal:
    """Eight bytes in a shared memory-mapped file, rewritten at random on every auth change.

    Readers compare them with what they saw when they filled their cache: a read costs a memory
    access, and every process of the daemon (HTTP workers, the deployer) sees a change at once.
    """

    SIZE = 8

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < self.SIZE:
                os.ftruncate(fd, self.SIZE)
            self._map = mmap.mmap(fd, self.SIZE)
        finally:
            os.close(fd)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ChangeSignal:
        return cls(data_dir / CHANGE_SIGNAL_FILE)

    def current(self) -> bytes:
        return self._map[: self.SIZE]

    def ring(self) -> None:
        self._map[: self.SIZE] = os.urandom(self.SIZE)


class Accounts:
    def __init__(self, vault: Vault, changes: ChangeSignal) -> None:
        self.vault = vault
        self.changes = changes

    # ---- identities, for the authenticator
    def identity_for(self, token: str) -> Identity | None:
        """The identity holding `token`, or None when it is unknown, revoked or expired."""
        row = AuthToken.get_or_none(AuthToken.token_hash == token_hash(token))
        if row is None or not row.active or (row.expiry_time is not None and row.expiry_time <= time.time()):
            return None
        unrestricted = False
        if row.subject_kind == access.USER:
            user = User.get_or_none(User.username == row.subject_name)
            if user is None or not user.is_active:
                return None
            unrestricted = bool(user.is_staff)
        elif row.subject_kind == access.ESC and Esc.get_or_none(Esc.id == row.subject_name) is None:
            return None
        return Identity(
            kind=row.subject_kind,
            name=row.subject_name,
            grants=self.rules_of(row.subject_kind, row.subject_name),
            unrestricted=unrestricted,
            token_id=row.id,
            expires_at=row.expiry_time,
        )

    def rules_of(self, kind: str, name: str) -> tuple[GrantRule, ...]:
        grants = Grant.select().where((Grant.subject_kind == kind) & (Grant.subject_name == name))
        return tuple(GrantRule(g.scope, g.job_name, g.job_version, g.endpoint) for g in grants)

    def mark_used(self, last_use: dict[int, float]) -> None:
        """Record when tokens were last used (batched by the authenticator; no signal: it changes no answer)."""
        with database.atomic():
            for token_id, when in last_use.items():
                AuthToken.update(last_use_time=when).where(AuthToken.id == token_id).execute()

    # ---- users
    def create_user(
        self,
        username: Any,
        password: Any = None,
        *,
        is_staff: bool = False,
        is_active: bool = True,
        default_grants: bool = True,
        granted_by: str | None = None,
    ) -> User:
        if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
            raise ValidationError("username: 1-150 letters, digits or . _ @ + -, starting with a letter or digit")
        password_hash = hash_password(check_password_rules(password)) if password is not None else None
        try:
            with database.atomic():
                user = User.create(
                    username=username, password_hash=password_hash, is_staff=is_staff, is_active=is_active
                )
                if default_grants:
                    for scope in access.NEW_USER_SCOPES:
                        self._grant(access.USER, username, GrantRule(scope), granted_by)
        except peewee.IntegrityError:
            raise ConflictError(f"user {username} already exists") from None
        self.changes.ring()
        return user

    def get_user(self, username: str) -> User:
        user = User.get_or_none(User.username == username)
        if user is None:
            raise NotFoundError(f"user {username} not found")
        return user

    def update_user(self, username: str, changes: dict[str, Any]) -> User:
        user = self.get_user(username)
        unknown = set(changes) - {"is_active", "is_staff", "password"}
        if unknown:
            raise ValidationError(f"{sorted(unknown)[0]}: not a user field (is_active, is_staff, password)")
        for field in ("is_active", "is_staff"):
            if field in changes:
                if not isinstance(changes[field], bool):
                    raise ValidationError(f"{field}: must be true or false")
                setattr(user, field, changes[field])
        if "password" in changes:
            user.password_hash = (
                None if changes["password"] is None else hash_password(check_password_rules(changes["password"]))
            )
        user.save()
        self.changes.ring()
        return user

    def delete_user(self, username: str) -> None:
        if username == ADMIN_USERNAME:
            raise ValidationError("username: the bootstrap admin cannot be deleted (deactivate its tokens instead)")
        self.get_user(username)
        with database.atomic():
            self._forget_subject(access.USER, username)
            User.delete().where(User.username == username).execute()
        self.changes.ring()

    def change_password(
        self, username: str, old_password: Any, new_password: Any, keep_token_id: int | None = None
    ) -> None:
        """Set a new password; the user's other password logins end (the token in use, `keep_token_id`, stays)."""
        user = self.get_user(username)
        if user.password_hash and not (
            isinstance(old_password, str) and verify_password(old_password, user.password_hash)
        ):
            raise ValidationError("old_password: does not match")
        user.password_hash = hash_password(check_password_rules(new_password, "new_password"))
        user.save()
        AuthToken.update(active=False).where(
            (AuthToken.subject_kind == access.USER)
            & (AuthToken.subject_name == username)
            & (AuthToken.origin == "login")
            & (AuthToken.id != (keep_token_id or 0))
        ).execute()
        self.changes.ring()

    def check_login(self, username: Any, password: Any) -> User | None:
        """The user when username and password match an active account; None otherwise (one answer for all failures)."""
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        user = User.get_or_none(User.username == username)
        stored = user.password_hash if user is not None else None
        # An unknown name costs the same hashing as a known one, so timing does not tell them apart.
        matches = verify_password(password, stored or _unusable_hash())
        if user is None or not user.is_active or not stored or not matches:
            return None
        user.last_login_time = now()
        user.save(only=[User.last_login_time])
        return user

    # ---- external service consumers
    def create_esc(self, name: Any, esc_id: Any = None) -> Esc:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("name: must be a non-empty string")
        if esc_id is None:
            esc_id = uuid.uuid4().hex[:12]
        if not isinstance(esc_id, str) or not ESC_ID_PATTERN.match(esc_id):
            raise ValidationError("id: 1-64 letters, digits or . _ -, starting with a letter or digit")
        try:
            return Esc.create(id=esc_id, name=name.strip())
        except peewee.IntegrityError:
            raise ConflictError(f"an ESC with id {esc_id} or name {name.strip()!r} already exists") from None

    def get_esc(self, id_or_name: str) -> Esc:
        esc = Esc.get_or_none((Esc.id == id_or_name) | (Esc.name == id_or_name))
        if esc is None:
            raise NotFoundError(f"ESC {id_or_name} not found")
        return esc

    def delete_esc(self, id_or_name: str) -> None:
        esc = self.get_esc(id_or_name)
        with database.atomic():
            self._forget_subject(access.ESC, esc.id)
            esc.delete_instance()
        self.changes.ring()

    # ---- tokens
    def issue_token(
        self, kind: str, name: str, *, expiry_time: float | None = None, description: str = "", origin: str = "api"
    ) -> tuple[str, AuthToken]:
        """A new token for a subject: the token (shown once) and its stored row."""
        self.require_subject(kind, name)
        if expiry_time is not None and expiry_time <= time.time():
            raise ValidationError("expiry_time: must be in the future")
        return self._create_token(kind, name, expiry_time=expiry_time, description=description, origin=origin)

    def _create_token(
        self, kind: str, name: str, *, expiry_time: float | None, description: str, origin: str
    ) -> tuple[str, AuthToken]:
        token = new_token()
        row = AuthToken.create(
            subject_kind=kind,
            subject_name=name,
            token_hash=token_hash(token),
            description=description[:200],
            origin=origin,
            expiry_time=expiry_time,
            sealed_token=self.vault.seal(token) if kind == access.JOB_FAMILY else None,
        )
        return token, row

    def tokens_of(self, kind: str | None = None, name: str | None = None) -> list[AuthToken]:
        query = AuthToken.select().order_by(AuthToken.create_time.desc())
        if kind is not None:
            query = query.where(AuthToken.subject_kind == kind)
        if name is not None:
            query = query.where(AuthToken.subject_name == name)
        return list(query)

    def get_token(self, token_id: int) -> AuthToken:
        row = AuthToken.get_or_none(AuthToken.id == token_id)
        if row is None:
            raise NotFoundError(f"token {token_id} not found")
        return row

    def revoke_token(self, token_id: int) -> AuthToken:
        row = self.get_token(token_id)
        row.active = False
        row.save(only=[AuthToken.active])
        self.changes.ring()
        return row

    def revoke_tokens_of(self, kind: str, name: str, origin: str | None = None) -> int:
        query = AuthToken.update(active=False).where(
            (AuthToken.subject_kind == kind) & (AuthToken.subject_name == name) & AuthToken.active
        )
        if origin is not None:
            query = query.where(AuthToken.origin == origin)
        count = query.execute()
        self.changes.ring()
        return count

    def retire_family_tokens(self, family: str) -> int:
        """Once no version of `family` is left (and none is on its way), its tokens stop working: nothing
        should hold them any more. Deploying the family again makes a new one (see `family_token`)."""
        if (
            Job.select().where(Job.name == family).exists()
            or Deployment.select()
            .where((Deployment.job_name == family) & (Deployment.status == DeploymentStatus.IN_PROGRESS))
            .exists()
        ):
            return 0
        return self.revoke_tokens_of(access.JOB_FAMILY, family)

    def family_token(self, family: str) -> str:
        """The token a job family's containers get as AUTH_TOKEN (made on first use, kept sealed)."""
        row = (
            AuthToken.select()
            .where(
                (AuthToken.subject_kind == access.JOB_FAMILY)
                & (AuthToken.subject_name == family)
                & AuthToken.active
                & AuthToken.sealed_token.is_null(False)
                & (AuthToken.expiry_time.is_null() | (AuthToken.expiry_time > time.time()))
            )
            .order_by(AuthToken.create_time.desc())
            .first()
        )
        if row is not None:
            return str(self.vault.open(row.sealed_token))
        # Made before the family's first job exists (its container needs it), so not via issue_token.
        token, _ = self._create_token(
            access.JOB_FAMILY, family, expiry_time=None, origin="job_family", description="AUTH_TOKEN of its jobs"
        )
        return token

    def ensure_bootstrap_admin(self, admin_token: str) -> None:
        """The admin user exists, staff, and `admin_token` is its bootstrap token (an earlier one is revoked).
        Every HTTP worker runs this as it starts: IMMEDIATE makes them take turns."""
        with database.atomic("IMMEDIATE"):
            # Always active staff again at start: the way back in if someone locked the admin out.
            User.insert(username=ADMIN_USERNAME, is_staff=True, is_active=True).on_conflict(
                conflict_target=[User.username], update={User.is_staff: True, User.is_active: True}
            ).execute()
            hashed = token_hash(admin_token)
            current = AuthToken.get_or_none(AuthToken.token_hash == hashed)
            AuthToken.update(active=False).where(
                (AuthToken.subject_kind == access.USER)
                & (AuthToken.subject_name == ADMIN_USERNAME)
                & (AuthToken.origin == "bootstrap")
                & (AuthToken.token_hash != hashed)
            ).execute()
            if current is None:
                AuthToken.create(
                    subject_kind=access.USER,
                    subject_name=ADMIN_USERNAME,
                    token_hash=hashed,
                    origin="bootstrap",
                    description="RACETRACK_ADMIN_TOKEN or DATA_DIR/admin-token",
                )
            elif current.subject_kind != access.USER or current.subject_name != ADMIN_USERNAME:
                raise ValidationError("RACETRACK_ADMIN_TOKEN: is already the token of another subject")
            elif not current.active:
                current.active = True
                current.save(only=[AuthToken.active])
            self._narrow_old_default_grants()
        self.changes.ring()

    def _narrow_old_default_grants(self) -> None:
        """Once per registry: the deploy_job on every job that older versions gave each new user
        becomes deploy_job on each family that user has deployed, so nobody loses what they did.

        Only the grant made with the account goes (an admin's later all-jobs deploy_job stays).
        """
        if RegistrySetting.get_or_none(RegistrySetting.key == NARROWED_DEFAULTS_KEY) is not None:
            return
        for grant in Grant.select().where(
            (Grant.subject_kind == access.USER)
            & (Grant.scope == access.DEPLOY_JOB)
            & Grant.job_name.is_null()
            & Grant.job_version.is_null()
            & Grant.endpoint.is_null()
        ):
            user = User.get_or_none(User.username == grant.subject_name)
            if user is None or abs(grant.create_time - user.create_time) > DEFAULT_GRANT_SECONDS:
                continue
            deployed = (
                Deployment.select(Deployment.job_name)
                .distinct()
                .where(
                    (
                        (Deployment.requested_by == f"{access.USER}:{user.username}")
                        | (Deployment.requested_by.is_null() & (Deployment.deployed_by == user.username))
                    )
                    & (Deployment.status == DeploymentStatus.DONE)
                )
            )
            for family in sorted({row.job_name for row in deployed}):
                rule = GrantRule(access.DEPLOY_JOB, job_name=family)
                if not self._has_grant(access.USER, user.username, rule):
                    self._grant(access.USER, user.username, rule, "upgrade: was deploy_job on every job")
            grant.delete_instance()
        RegistrySetting.insert(
            key=NARROWED_DEFAULTS_KEY, value="true", changed_by="upgrade", update_time=now()
        ).on_conflict_ignore().execute()

    # ---- grants
    def add_grant(self, kind: str, name: str, rule: GrantRule, granted_by: str | None) -> Grant:
        self.require_subject(kind, name)
        if rule.scope not in access.SCOPES:
            raise ValidationError(f"scope: {rule.scope!r} is not one of {', '.join(access.SCOPES)}")
        if rule.job_version is not None and rule.job_name is None:
            raise ValidationError("job_version: needs job_name")
        if rule.endpoint is not None and not rule.endpoint.startswith("/"):
            raise ValidationError("endpoint: must start with / (e.g. /api/v1/perform)")
        if rule.endpoint is not None and rule.job_name is None:
            raise ValidationError("endpoint: needs job_name")
        # Checked here, not by the unique index alone: SQLite treats each NULL filter as distinct.
        with database.atomic("IMMEDIATE"):
            if self._has_grant(kind, name, rule):
                raise ConflictError(f"{kind}:{name} already has this grant")
            grant = self._grant(kind, name, rule, granted_by)
        self.changes.ring()
        return grant

    def grant_family_owner(self, kind: str, name: str, family: str) -> None:
        """The first deployer of a family may read, call, redeploy and delete all its versions."""
        if kind not in (access.USER, access.ESC):
            return
        for scope in access.FAMILY_OWNER_SCOPES:
            rule = GrantRule(scope, job_name=family)
            if not self._has_grant(kind, name, rule):
                self._grant(kind, name, rule, "first deploy")
        self.changes.ring()

    def grants(self, kind: str | None = None, name: str | None = None) -> list[Grant]:
        query = Grant.select().order_by(Grant.id)
        if kind is not None:
            query = query.where(Grant.subject_kind == kind)
        if name is not None:
            query = query.where(Grant.subject_name == name)
        return list(query)

    def remove_grant(self, grant_id: int) -> None:
        if Grant.delete().where(Grant.id == grant_id).execute() == 0:
            raise NotFoundError(f"grant {grant_id} not found")
        self.changes.ring()

    def require_subject(self, kind: str, name: str) -> None:
        if kind == access.USER:
            self.get_user(name)
        elif kind == access.ESC:
            if Esc.get_or_none(Esc.id == name) is None:
                raise NotFoundError(f"ESC {name} not found", hint="subjects name ESCs by id: rtd esc list")
        elif kind == access.JOB_FAMILY:
            if not Job.select().where(Job.name == name).exists():
                raise NotFoundError(f"job family {name} not found", hint="deploy a job of that name first")
        else:
            raise ValidationError(f"subject: kind {kind!r} is not one of {', '.join(access.SUBJECT_KINDS)}")

    def _grant(self, kind: str, name: str, rule: GrantRule, granted_by: str | None) -> Grant:
        return Grant.create(
            subject_kind=kind,
            subject_name=name,
            scope=rule.scope,
            job_name=rule.job_name,
            job_version=rule.job_version,
            endpoint=rule.endpoint,
            granted_by=granted_by,
        )

    def _has_grant(self, kind: str, name: str, rule: GrantRule) -> bool:
        return (
            Grant.select()
            .where(
                (Grant.subject_kind == kind)
                & (Grant.subject_name == name)
                & (Grant.scope == rule.scope)
                & _equals_or_null(Grant.job_name, rule.job_name)
                & _equals_or_null(Grant.job_version, rule.job_version)
                & _equals_or_null(Grant.endpoint, rule.endpoint)
            )
            .exists()
        )

    def _forget_subject(self, kind: str, name: str) -> None:
        AuthToken.delete().where((AuthToken.subject_kind == kind) & (AuthToken.subject_name == name)).execute()
        Grant.delete().where((Grant.subject_kind == kind) & (Grant.subject_name == name)).execute()

    # ---- public endpoints
    def request_public_endpoints(self, job_name: str, job_version: str, endpoints: list[str]) -> None:
        """Record what a manifest asks to open; each stays closed until an admin approves it."""
        for endpoint in endpoints:
            PublicEndpoint.insert(
                job_name=job_name, job_version=job_version, endpoint=endpoint
            ).on_conflict_ignore().execute()

    def public_endpoints(
        self, job_name: str | None = None, job_version: str | None = None, active: bool | None = None
    ) -> list[PublicEndpoint]:
        query = PublicEndpoint.select().order_by(PublicEndpoint.id)
        if job_name is not None:
            query = query.where(PublicEndpoint.job_name == job_name)
        if job_version is not None:
            query = query.where(PublicEndpoint.job_version == job_version)
        if active is not None:
            query = query.where(PublicEndpoint.active == active)
        return list(query)

    def set_public_endpoint(self, request_id: int, active: bool, approved_by: str | None) -> PublicEndpoint:
        row = PublicEndpoint.get_or_none(PublicEndpoint.id == request_id)
        if row is None:
            raise NotFoundError(f"public endpoint request {request_id} not found")
        row.active = active
        row.approved_by = approved_by if active else None
        row.save()
        return row


@functools.cache
def _unusable_hash() -> str:
    """A hash no password matches, checked for unknown users so they cost the same time."""
    return hash_password(secrets.token_urlsafe(16))


def _equals_or_null(field: peewee.Field, value: str | None) -> peewee.Expression:
    return field.is_null() if value is None else (field == value)
