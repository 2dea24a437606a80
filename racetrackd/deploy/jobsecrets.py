"""A job's secrets: build env, runtime env and git credentials, sealed at rest, never shown.

Each deployment keeps the secrets it was made with, sealed by the vault, so a redeploy without
them, a rollback, or a container recreated after a restart gets the same ones. Builds fetch their
build env over HTTP from the daemon while they run (see `build_secrets_digest`), so no value
lands in an image layer or in `docker history`; containers get the runtime env as variables.
Text the daemon shows from builds and jobs (logs, errors) passes through a `Redactor` first.

What a redeploy may reuse depends on who asks and what it builds (see `Requester` and `Trust`): stored
secrets and the family's AUTH_TOKEN go only to code from a trusted source, and git credentials only
back to the remote they were sent for, because a redeploy runs the caller's code with them.
"""

from __future__ import annotations

import codecs
import dataclasses
import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import yaml

from jobmanifest import Manifest
from racetrackd.auth.vault import Vault
from racetrackd.db import Deployment, DeploymentStatus, Job
from racetrackd.errors import ForbiddenError, NotFoundError, ValidationError
from racetrackd.manifest import RESERVED_ENV

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIN_REDACTED_LENGTH = 4  # shorter values would blank out ordinary text
REDACTED = "***"
BUILD_PHASE = "building image"  # the deployer's phase while the image builds
TRUST_SCAN_LIMIT = 1000  # deployments of a family read to rebuild the trust of one made before it was kept


def normalized_remote(remote: str | None) -> str | None:
    """A git remote as compared for trust (`https://h/r.git/` and `https://h/r` are one repository)."""
    if not remote:
        return None
    return remote.strip().rstrip("/").removesuffix(".git")


@dataclasses.dataclass(frozen=True)
class Trust:
    """Whose code may reuse a family's stored secrets and AUTH_TOKEN: its owners (the first deployer)
    and the git remotes they deployed from. It travels sealed with every deployment of the family."""

    subjects: frozenset[str] = frozenset()
    remotes: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[str]]:
        return {"subjects": sorted(self.subjects), "remotes": sorted(self.remotes)}

    @classmethod
    def from_json(cls, data: Any) -> Trust:
        return cls(frozenset(data.get("subjects") or ()), frozenset(data.get("remotes") or ()))


@dataclasses.dataclass(frozen=True)
class Requester:
    """Who asks for a deployment and what it builds from: decides what it may reuse."""

    subject: str | None  # kind:name; None: anonymous
    git_remote: str | None  # None: an uploaded build context (the caller's own code)
    may_read_secrets: bool = False  # full_access (staff; everyone when auth is off)

    @property
    def remote(self) -> str | None:
        return normalized_remote(self.git_remote)

    def is_trusted_by(self, trust: Trust) -> bool:
        return (
            self.may_read_secrets
            or (self.subject is not None and self.subject in trust.subjects)
            or (self.remote is not None and self.remote in trust.remotes)
        )

    def extend(self, trust: Trust) -> Trust:
        """An owner (or an admin) vouches for the remote they deploy from; someone trusted only
        through a remote adds nothing."""
        vouches = self.may_read_secrets or (self.subject is not None and self.subject in trust.subjects)
        if vouches and self.remote is not None:
            return dataclasses.replace(trust, remotes=trust.remotes | {self.remote})
        return trust


@dataclasses.dataclass(frozen=True)
class JobSecrets:
    build_env: dict[str, str] = dataclasses.field(default_factory=dict)
    runtime_env: dict[str, str] = dataclasses.field(default_factory=dict)
    git_credentials: dict[str, str] | None = None
    # The remote the git credentials were sent for: they are reused only to clone it again.
    credentials_remote: str | None = None
    family_token: bool = True  # whether the containers get the family's AUTH_TOKEN
    trust: Trust | None = None  # None: a deployment sealed before trust was kept
    # A docker-image job's pull credentials ({"username", "password"}), and the registry host they
    # were sent for: they are reused only to pull from that registry again.
    registry_credentials: dict[str, str] | None = None
    credentials_registry: str | None = None

    def is_empty(self) -> bool:
        return (
            not self.build_env
            and not self.runtime_env
            and not self.git_credentials
            and not self.registry_credentials
            and self.family_token
            and self.trust is None
        )

    def values(self) -> list[str]:
        found = [*self.build_env.values(), *self.runtime_env.values()]
        if self.git_credentials:
            found.append(self.git_credentials["password"])
        if self.registry_credentials:
            found.append(self.registry_credentials["password"])
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "build_env": self.build_env,
            "runtime_env": self.runtime_env,
            "git_credentials": self.git_credentials,
            "credentials_remote": self.credentials_remote,
            "family_token": self.family_token,
            "trust": self.trust.to_json() if self.trust is not None else None,
            "registry_credentials": self.registry_credentials,
            "credentials_registry": self.credentials_registry,
        }


NONE = JobSecrets()


def parse_secret_vars(value: Any) -> tuple[dict[str, str], dict[str, str]] | None:
    """`{"build_env": {...}, "runtime_env": {...}}` from a deploy request (None: not sent)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"build_env", "runtime_env"}:
        raise ValidationError('secret_vars: must be {"build_env": {NAME: value}, "runtime_env": {NAME: value}} or null')
    parsed = []
    for part in ("build_env", "runtime_env"):
        env = value.get(part) or {}
        if not isinstance(env, dict):
            raise ValidationError(f"secret_vars.{part}: must be a mapping of NAME to value")
        for name, text in env.items():
            if not isinstance(name, str) or not ENV_NAME.match(name):
                raise ValidationError(f"secret_vars.{part}: {name!r} is not a valid environment variable name")
            if name in RESERVED_ENV:
                raise ValidationError(f"secret_vars.{part}.{name}: reserved: racetrackd sets it in every job")
            if not isinstance(text, str):
                raise ValidationError(f"secret_vars.{part}.{name}: must be a string")
        parsed.append(dict(env))
    return parsed[0], parsed[1]


def for_deployment(
    manifest: Manifest,
    secret_vars: tuple[dict[str, str], dict[str, str]] | None,
    git_credentials: dict[str, str] | None,
    vault: Vault,
    requester: Requester,
    registry: RegistryPull | None = None,
) -> JobSecrets:
    """The secrets a new deployment runs with: those sent, else the last ones of that job version.

    Stored ones (and the family's AUTH_TOKEN) are reused only by a requester the family trusts;
    stored git credentials only to clone the remote they were sent for; stored registry
    credentials (docker-image jobs) only by a trusted requester, to pull from the same registry.
    """
    trust = family_trust(manifest.name, vault)
    trusted = trust is None or requester.is_trusted_by(trust)
    new_trust = (
        Trust(
            frozenset({requester.subject} if requester.subject else ()),
            frozenset({requester.remote} if requester.remote else ()),
        )
        if trust is None
        else requester.extend(trust)
        if trusted
        else trust
    )
    earlier = _latest_of_version(
        manifest.name, manifest.version, vault, lambda secrets: bool(secrets.build_env or secrets.runtime_env)
    )
    if secret_vars is None:
        build_env, runtime_env = (earlier.build_env, earlier.runtime_env) if trusted else ({}, {})
        for field, wanted, have in (
            ("secret_build_env_file", manifest.secret_build_env_file, build_env),
            ("secret_runtime_env_file", manifest.secret_runtime_env_file, runtime_env),
        ):
            if wanted and not have and not trusted and (earlier.build_env or earlier.runtime_env):
                raise ForbiddenError(
                    f"{field}: job.yaml names {wanted} and the deploy carried no secrets; the stored secrets of "
                    f"{manifest.name} {manifest.version} go only to its owners, to their git remotes, or to "
                    f"callers with the full_access scope",
                    hint=f"deploy from the job's directory with {wanted} in it (rtd submit reads and sends it)",
                )
            if wanted and not have:
                raise ValidationError(
                    f"{field}: job.yaml names {wanted}, but the deploy carried no secrets and no earlier deployment "
                    f"of {manifest.name} {manifest.version} has any",
                    hint=f"deploy from the job's directory with {wanted} in it (rtd submit reads and sends it)",
                )
    else:
        build_env, runtime_env = secret_vars
    stored = _latest_of_version(manifest.name, manifest.version, vault, lambda secrets: bool(secrets.git_credentials))
    if git_credentials is not None:
        credentials, credentials_remote = git_credentials, requester.remote
    elif stored.git_credentials and requester.remote is not None and requester.remote == stored.credentials_remote:
        credentials, credentials_remote = stored.git_credentials, stored.credentials_remote
    else:
        credentials, credentials_remote = None, None
    registry_credentials, credentials_registry = _registry_credentials(manifest, registry, trusted, vault)
    return JobSecrets(
        build_env=build_env,
        runtime_env=runtime_env,
        git_credentials=credentials,
        credentials_remote=credentials_remote,
        family_token=trusted,
        trust=new_trust,
        registry_credentials=registry_credentials,
        credentials_registry=credentials_registry,
    )


@dataclasses.dataclass(frozen=True)
class RegistryPull:
    """A docker-image deployment's pull: the registry host of its image, and the credentials sent for it."""

    registry: str
    credentials: dict[str, str] | None = dataclasses.field(default=None, repr=False)


def _registry_credentials(
    manifest: Manifest, pull: RegistryPull | None, trusted: bool, vault: Vault
) -> tuple[dict[str, str] | None, str | None]:
    """Those sent; else the stored ones of this version, when the requester is trusted and the image is
    on the registry they were sent for (a manifest naming another registry never receives them)."""
    if pull is None:
        return None, None
    if pull.credentials is not None:
        return pull.credentials, pull.registry
    if not trusted:
        return None, None
    stored = _latest_of_version(
        manifest.name, manifest.version, vault, lambda secrets: bool(secrets.registry_credentials)
    )
    if stored.registry_credentials and stored.credentials_registry == pull.registry:
        return stored.registry_credentials, stored.credentials_registry
    return None, None


def family_trust(family: str, vault: Vault) -> Trust | None:
    """The trust of `family`, from its latest deployment (None: no deployment yet, a new family).

    Rollbacks are skipped: they carry the older trust of the release they restore. For a family
    deployed only before trust was kept, everyone who deployed it and every remote it was built
    from are trusted, as they were then.
    """
    deployments = (
        Deployment.select()
        .where((Deployment.job_name == family) & (Deployment.kind == "deploy"))
        .order_by(Deployment.create_time.desc())
        .limit(TRUST_SCAN_LIMIT)
    )
    subjects: set[str] = set()
    remotes: set[str] = set()
    found = False
    for deployment in deployments:
        found = True
        kept = of_deployment(deployment, vault).trust
        if kept is not None:
            return Trust(kept.subjects | subjects, kept.remotes | remotes) if subjects else kept
        subject = deployment.requested_by or _subject_of_display(deployment.deployed_by)
        if subject:
            subjects.add(subject)
        remote = deployment_remote(deployment)
        if remote is not None:
            remotes.add(remote)
    if not found and not Job.select().where(Job.name == family).exists():
        return None
    return Trust(frozenset(subjects), frozenset(remotes))


def _subject_of_display(display: str | None) -> str | None:
    """The subject behind an old deployment's deployed_by (recorded before requested_by was)."""
    if not display or display.startswith("Job family "):
        return None
    return f"esc:{display.removeprefix('ESC ')}" if display.startswith("ESC ") else f"user:{display}"


def deployment_remote(deployment: Deployment) -> str | None:
    """The git remote a deployment built from (None: it built an uploaded context)."""
    if deployment.build_context_path:
        return None
    try:
        raw = yaml.safe_load(deployment.manifest_yaml or "") or {}
    except yaml.YAMLError:
        return None
    git = raw.get("git") if isinstance(raw, dict) else None
    return (
        normalized_remote(git.get("remote")) if isinstance(git, dict) and isinstance(git.get("remote"), str) else None
    )


def seal(secrets: JobSecrets, vault: Vault) -> str | None:
    return None if secrets.is_empty() else vault.seal(secrets.to_json())


def of_deployment(deployment: Deployment, vault: Vault) -> JobSecrets:
    if deployment.secrets:
        data = vault.open(deployment.secrets)
        credentials = data.get("git_credentials")
        # Sealed before the remote was kept: the credentials belong to the remote that deployment cloned.
        remote = data["credentials_remote"] if "credentials_remote" in data else deployment_remote(deployment)
        return JobSecrets(
            build_env=data.get("build_env") or {},
            runtime_env=data.get("runtime_env") or {},
            git_credentials=credentials,
            credentials_remote=remote if credentials else None,
            family_token=data.get("family_token", True),
            trust=Trust.from_json(data["trust"]) if data.get("trust") is not None else None,
            registry_credentials=data.get("registry_credentials"),
            credentials_registry=data.get("credentials_registry"),
        )
    if deployment.git_credentials:  # stored by a version before secrets were kept per deployment
        return JobSecrets(
            git_credentials=vault.open(deployment.git_credentials), credentials_remote=deployment_remote(deployment)
        )
    return NONE


def of_release(job: Job, vault: Vault) -> JobSecrets:
    """The secrets of the release a job runs now (the last finished deployment of its image)."""
    deployment = (
        Deployment.select()
        .where(
            (Deployment.job_name == job.name)
            & (Deployment.job_version == job.version)
            & (Deployment.image_name == job.image_name)
            & (Deployment.status == DeploymentStatus.DONE)
        )
        .order_by(Deployment.create_time.desc())
        .first()
    )
    return of_deployment(deployment, vault) if deployment is not None else NONE


def build_secrets_digest(vault: Vault, name: str, version: str, build_env: dict[str, str]) -> str:
    """The capability in a build's secrets URL: only the daemon can make it, and it stays the same
    while the secrets do, so Docker's layer cache still works for the step that uses them."""
    return vault.digest(json.dumps([name, version, build_env], sort_keys=True))[:40]


def build_env_for_build(name: str, version: str, digest: str, vault: Vault) -> dict[str, str]:
    """The secret build env for a build of `name` `version` running now, if `digest` is its own.

    Anything else (a finished build, a wrong digest, a job without secrets) is the same 404, so the
    URL left in `docker history` is worth nothing once the build is over.
    """
    building = (
        Deployment.select()
        .where(
            (Deployment.job_name == name)
            & (Deployment.job_version == version)
            & (Deployment.status == DeploymentStatus.IN_PROGRESS)
            & Deployment.secrets.is_null(False)
        )
        .first()
    )
    if building is not None and building.phase == BUILD_PHASE:
        env = of_deployment(building, vault).build_env
        if env and hmac.compare_digest(digest, build_secrets_digest(vault, name, version, env)):
            return env
    raise NotFoundError("no build is waiting for these secrets")


def _latest_of_version(name: str, version: str, vault: Vault, holds: Callable[[JobSecrets], bool]) -> JobSecrets:
    """The secrets of the newest deployment of that version that `holds` what is wanted (NONE: none does).
    Every deployment is sealed (its trust at least), so the newest sealed one may hold no secret at all."""
    candidates = (
        Deployment.select()
        .where(
            (Deployment.job_name == name)
            & (Deployment.job_version == version)
            & (Deployment.secrets.is_null(False) | Deployment.git_credentials.is_null(False))
        )
        .order_by(Deployment.create_time.desc())
        .limit(TRUST_SCAN_LIMIT)
    )
    for deployment in candidates:
        secrets = of_deployment(deployment, vault)
        if holds(secrets):
            return secrets
    return NONE


class Redactor:
    """Replaces secret values in text shown to anyone (build logs, job logs, errors)."""

    def __init__(self, values: list[str]) -> None:
        # A multi-line value (a PEM key, say) is also masked line by line: streamed logs arrive in
        # chunks that may split it, and a program may print only part of it.
        pieces = {line.strip() for value in values if "\n" in value for line in value.splitlines()}
        wanted = sorted(
            {value for value in [*values, *pieces] if len(value) >= MIN_REDACTED_LENGTH}, key=len, reverse=True
        )
        self._pattern = re.compile("|".join(re.escape(value) for value in wanted)) if wanted else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text

    def lines(self, chunks: Iterable[bytes]) -> Iterator[str]:
        """A byte stream as redacted text, a whole line at a time (a value split across chunks is still found)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span chunks
        pending = ""
        for chunk in chunks:
            pending += decoder.decode(chunk)
            complete, newline, pending = pending.rpartition("\n")
            if newline:
                yield self(complete + newline)
        pending += decoder.decode(b"", final=True)
        if pending:
            yield self(pending)
