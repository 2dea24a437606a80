"""Who may do what: scopes, grants and the caller's identity, with no storage behind them.

A grant gives a subject (a user, an ESC or a job family) one scope on every job, one job family,
one job version, or one endpoint of it. A check passes when some grant of the caller names the
scope (or `full_access`) and its filters match. Staff users, and everyone when auth is off, pass
every check.
"""

from __future__ import annotations

import dataclasses

from racetrackd.errors import ForbiddenError

READ_JOB = "read_job"
DEPLOY_JOB = "deploy_job"
DEPLOY_NEW_FAMILY = "deploy_new_family"
DELETE_JOB = "delete_job"
CALL_JOB = "call_job"
CALL_ADMIN_API = "call_admin_api"
FULL_ACCESS = "full_access"
SCOPES = (READ_JOB, DEPLOY_JOB, DEPLOY_NEW_FAMILY, DELETE_JOB, CALL_JOB, CALL_ADMIN_API, FULL_ACCESS)

USER = "user"
ESC = "esc"
JOB_FAMILY = "job_family"
ANONYMOUS = "anonymous"
SUBJECT_KINDS = (USER, ESC, JOB_FAMILY)

# What a new user may do: see and call every job (as in Racetrack) and start new families. Unlike
# Racetrack, not deploy_job on every job: a redeploy runs the caller's code with the family's
# secrets and AUTH_TOKEN, so deploying over a family needs its ownership or an explicit grant.
NEW_USER_SCOPES = (READ_JOB, CALL_JOB, DEPLOY_NEW_FAMILY)
# What the first deployer of a family gets on it.
FAMILY_OWNER_SCOPES = (READ_JOB, CALL_JOB, DEPLOY_JOB, DELETE_JOB)
# Job paths anyone may call, exactly these (no sub-paths): orchestrators and load balancers probe
# them without tokens.
OPEN_JOB_PATHS = ("/health", "/live", "/ready")


@dataclasses.dataclass(frozen=True)
class GrantRule:
    scope: str
    job_name: str | None = None
    job_version: str | None = None
    endpoint: str | None = None

    def covers(self, scope: str, job_name: str | None, job_version: str | None, endpoint: str | None) -> bool:
        if self.scope not in (scope, FULL_ACCESS):
            return False
        if self.job_name is not None and self.job_name != job_name:
            return False
        if self.job_version is not None and self.job_version != job_version:
            return False
        return self.endpoint is None or (endpoint is not None and path_within(endpoint, self.endpoint))


@dataclasses.dataclass(frozen=True)
class Identity:
    """The caller of one request, as the token told (cached per token)."""

    kind: str
    name: str
    grants: tuple[GrantRule, ...] = ()
    unrestricted: bool = False  # staff, or auth is off
    token_id: int | None = None
    expires_at: float | None = None

    @property
    def subject(self) -> str:
        """`kind:name`, as the CLI and the grant API spell subjects."""
        return f"{self.kind}:{self.name}"

    @property
    def display(self) -> str | None:
        """How the caller is named in deployed_by, the audit log and X-Caller-Name (None: nobody)."""
        if self.kind == ANONYMOUS:
            return None
        if self.kind == ESC:
            return f"ESC {self.name}"
        if self.kind == JOB_FAMILY:
            return f"Job family {self.name}"
        return self.name

    def allows(
        self, scope: str, job_name: str | None = None, job_version: str | None = None, endpoint: str | None = None
    ) -> bool:
        return self.unrestricted or any(rule.covers(scope, job_name, job_version, endpoint) for rule in self.grants)

    def may_see_any(self, scope: str, job_name: str) -> bool:
        """Whether some version of `job_name` is within `scope` (for filtering lists by family)."""
        return self.unrestricted or any(
            rule.scope in (scope, FULL_ACCESS) and rule.job_name in (None, job_name) and rule.endpoint is None
            for rule in self.grants
        )


ANYONE = Identity(kind=ANONYMOUS, name="anonymous", unrestricted=True)  # auth is off and no token was given


def path_within(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it, segment-wise (`/api/v1` covers `/api/v1/perform`, not `/api/v10`)."""
    prefix = prefix.rstrip("/")
    if not prefix:
        return True
    if any(segment in (".", "..") for segment in path.split("/")):
        return False  # a job may resolve dot segments: never let them carry a call past an open prefix
    return path == prefix or path.startswith(prefix + "/") or path.rstrip("/") == prefix


def parse_subject(text: str) -> tuple[str, str]:
    """`user:alice`, `esc:ID`, `job_family:NAME` (also `family:NAME`) → (kind, name); ValueError otherwise."""
    kind, sep, name = text.partition(":")
    kind = JOB_FAMILY if kind == "family" else kind
    if not sep or kind not in SUBJECT_KINDS or not name:
        raise ValueError(f"{text!r} is not a subject; use user:NAME, esc:ID or job_family:NAME")
    return kind, name


def forbidden(
    identity: Identity,
    scope: str,
    doing: str,
    job_name: str | None = None,
    job_version: str | None = None,
    endpoint: str | None = None,
) -> ForbiddenError:
    """The 403 for `identity` lacking `scope`, naming what is missing and the command that grants it."""
    target = f" job {job_name} {job_version or ''}".rstrip() if job_name else ""
    where = f" (endpoint {endpoint})" if endpoint else ""
    grant = f"rtd grant add {identity.subject} {scope}" + (f" --job {job_name}" if job_name else "")
    return ForbiddenError(
        f"{identity.display or identity.subject} may not {doing}{target}{where}: it lacks the {scope} scope",
        hint=f"an admin can grant it: {grant}",
    )
