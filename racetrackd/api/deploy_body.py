"""Racetrack's `POST /deploy` JSON body, parsed once into a DeployRequest; every error names its field.

The shape is Racetrack's (racetrack-client sends it unchanged): `manifest` (a mapping), `build_context`
(the job's directory as a base64 tar.gz, or null to clone git.remote), `force`, `secret_vars`,
`git_credentials`, `build_flags`; and racetrackd's own `registry_credentials` (a docker-image job's pull
credentials, kept sealed like git credentials). What the host allows (scopes, job types, versions) is checked by the
use case, racetrackd.deploy.requests.request_deployment.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from racetrackd.auth.access import Identity
from racetrackd.deploy import jobsecrets
from racetrackd.deploy.requests import MAX_UPLOAD_BYTES, DeployRequest
from racetrackd.errors import ValidationError
from racetrackd.manifest import accept_manifest
from racetrackd.settings import Settings


def parse_deploy_body(body: Any, requester: Identity, settings: Settings) -> DeployRequest:
    """The request a `POST /deploy` body asks for (ValidationError or ManifestError naming the field)."""
    if not isinstance(body, dict):
        raise ValidationError("request body: must be a JSON object with a manifest")
    manifest = accept_manifest(body.get("manifest"), settings)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ValidationError("force: must be true or false")
    archive = _build_context(body.get("build_context"))
    secret_vars = jobsecrets.parse_secret_vars(body.get("secret_vars"))
    git_credentials = _credentials("git_credentials", body.get("git_credentials"))
    registry_credentials = _credentials("registry_credentials", body.get("registry_credentials"))
    return DeployRequest(
        manifest=manifest,
        requester=requester,
        archive=archive,
        force=force,
        no_cache=_no_cache(body.get("build_flags")),
        secret_vars=secret_vars,
        git_credentials=git_credentials,
        registry_credentials=registry_credentials,
    )


def _build_context(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("build_context: must be a base64-encoded tar.gz string or null")
    if len(value) > MAX_UPLOAD_BYTES * 4 // 3:  # before decoding: never hold a second copy of an oversize body
        raise ValidationError(f"build_context: larger than {MAX_UPLOAD_BYTES // 1024**2} MiB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"build_context: not valid base64: {exc}") from exc


def _credentials(field: str, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) - {"username", "password"}
        or not all(isinstance(value.get(k), str) and value.get(k) for k in ("username", "password"))
    ):
        raise ValidationError(f'{field}: must be {{"username": "...", "password": "..."}} or null')
    return {"username": value["username"], "password": value["password"]}


def _no_cache(flags: Any) -> bool:
    if flags is None:
        return False
    if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
        raise ValidationError("build_flags: must be a list of strings")
    unknown = [flag for flag in flags if flag != "--no-cache"]
    if unknown:
        raise ValidationError(f"build_flags: {unknown[0]!r} is not supported (supported: --no-cache)")
    return "--no-cache" in flags
