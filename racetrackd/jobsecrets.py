"""A job's secrets: build env, runtime env and git credentials, sealed at rest, never shown.

Each deployment keeps the secrets it was made with, sealed by the vault, so a redeploy without
them, a rollback, or a container recreated after a restart gets the same ones. Builds fetch their
build env over HTTP from the daemon while they run (see `build_secrets_digest`), so no value
lands in an image layer or in `docker history`; containers get the runtime env as variables.
Text the daemon shows from builds and jobs (logs, errors) passes through a `Redactor` first.
"""

from __future__ import annotations

import codecs
import dataclasses
import hmac
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from jobmanifest import Manifest
from racetrackd.db import Deployment, DeploymentStatus, Job
from racetrackd.errors import NotFoundError, ValidationError
from racetrackd.manifest import RESERVED_ENV
from racetrackd.vault import Vault

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIN_REDACTED_LENGTH = 4  # shorter values would blank out ordinary text
REDACTED = "***"
BUILD_PHASE = "building image"  # the deployer's phase while the image builds


@dataclasses.dataclass(frozen=True)
class JobSecrets:
    build_env: dict[str, str] = dataclasses.field(default_factory=dict)
    runtime_env: dict[str, str] = dataclasses.field(default_factory=dict)
    git_credentials: dict[str, str] | None = None

    def is_empty(self) -> bool:
        return not self.build_env and not self.runtime_env and not self.git_credentials

    def values(self) -> list[str]:
        found = [*self.build_env.values(), *self.runtime_env.values()]
        if self.git_credentials:
            found.append(self.git_credentials["password"])
        return found

    def to_json(self) -> dict[str, Any]:
        return {"build_env": self.build_env, "runtime_env": self.runtime_env, "git_credentials": self.git_credentials}


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


def for_deployment(manifest: Manifest, secret_vars: tuple[dict[str, str], dict[str, str]] | None,
                   git_credentials: dict[str, str] | None, vault: Vault) -> JobSecrets:
    """The secrets a new deployment runs with: those sent, else the last ones of that job version."""
    earlier = _latest_of_version(manifest.name, manifest.version, vault)
    if secret_vars is None:
        build_env, runtime_env = earlier.build_env, earlier.runtime_env
        for field, wanted, have in (("secret_build_env_file", manifest.secret_build_env_file, build_env),
                                    ("secret_runtime_env_file", manifest.secret_runtime_env_file, runtime_env)):
            if wanted and not have:
                raise ValidationError(
                    f"{field}: job.yaml names {wanted}, but the deploy carried no secrets and no earlier deployment "
                    f"of {manifest.name} {manifest.version} has any",
                    hint=f"deploy from the job's directory with {wanted} in it (rtd submit reads and sends it)",
                )
    else:
        build_env, runtime_env = secret_vars
    return JobSecrets(build_env=build_env, runtime_env=runtime_env,
                      git_credentials=git_credentials or earlier.git_credentials)


def seal(secrets: JobSecrets, vault: Vault) -> str | None:
    return None if secrets.is_empty() else vault.seal(secrets.to_json())


def of_deployment(deployment: Deployment, vault: Vault) -> JobSecrets:
    if deployment.secrets:
        data = vault.open(deployment.secrets)
        return JobSecrets(build_env=data.get("build_env") or {}, runtime_env=data.get("runtime_env") or {},
                          git_credentials=data.get("git_credentials"))
    if deployment.git_credentials:  # stored by a version before secrets were kept per deployment
        return JobSecrets(git_credentials=vault.open(deployment.git_credentials))
    return NONE


def of_release(job: Job, vault: Vault) -> JobSecrets:
    """The secrets of the release a job runs now (the last finished deployment of its image)."""
    deployment = (Deployment.select()
                  .where((Deployment.job_name == job.name) & (Deployment.job_version == job.version)
                         & (Deployment.image_name == job.image_name) & (Deployment.status == DeploymentStatus.DONE))
                  .order_by(Deployment.create_time.desc()).first())
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
    building = (Deployment.select()
                .where((Deployment.job_name == name) & (Deployment.job_version == version)
                       & (Deployment.status == DeploymentStatus.IN_PROGRESS) & Deployment.secrets.is_null(False))
                .first())
    if building is not None and building.phase == BUILD_PHASE:
        env = of_deployment(building, vault).build_env
        if env and hmac.compare_digest(digest, build_secrets_digest(vault, name, version, env)):
            return env
    raise NotFoundError("no build is waiting for these secrets")


def _latest_of_version(name: str, version: str, vault: Vault) -> JobSecrets:
    latest = (Deployment.select()
              .where((Deployment.job_name == name) & (Deployment.job_version == version)
                     & (Deployment.secrets.is_null(False) | Deployment.git_credentials.is_null(False)))
              .order_by(Deployment.create_time.desc()).first())
    return of_deployment(latest, vault) if latest is not None else NONE


class Redactor:
    """Replaces secret values in text shown to anyone (build logs, job logs, errors)."""

    def __init__(self, values: list[str]) -> None:
        # A multi-line value (a PEM key, say) is also masked line by line: streamed logs arrive in
        # chunks that may split it, and a program may print only part of it.
        pieces = {line.strip() for value in values if "\n" in value for line in value.splitlines()}
        wanted = sorted({value for value in [*values, *pieces] if len(value) >= MIN_REDACTED_LENGTH},
                        key=len, reverse=True)
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
