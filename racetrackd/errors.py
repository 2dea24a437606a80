"""One error hierarchy for the daemon; every error knows its HTTP status and a stable reference.

    RacetrackError (500, internal-error)
    ├── ValidationError (400, validation-error)         bad input from a client
    │   ├── ManifestError (400, invalid-manifest)
    │   └── AmbiguousPath (400, ambiguous-path)         a gateway path a job could read as another
    ├── UnauthorizedError (401, unauthorized)            no token, or a wrong, expired or revoked one
    ├── ForbiddenError (403, forbidden)                  a known caller without the scope for this
    ├── TooManyAuthFailures (429, too-many-auth-failures) an address, token or username failed auth too often
    ├── TooManyStreams (429, too-many-streams)           too many follow streams open (per caller or in all)
    ├── NotFoundError (404, not-found)
    │   └── JobNotFound (404, job-not-found)
    ├── ConflictError (409, already-exists)
    ├── SettingsError (500, invalid-setting)             bad RACETRACK_* environment
    ├── BuildError (500, build-failed)                   image build failed
    ├── ImagePushError (502, image-push-failed)          the registry refused or could not take an image
    ├── JobStartError (500, job-start-failed)            container did not come up
    ├── JobTypeError (500, jobtype-error)                job-type plugin missing or broken
    ├── PayloadTooLarge (413, payload-too-large)          a request body over a limit
    ├── NotSupported (501, not-supported)                a Racetrack API racetrackd does not offer
    ├── StorageFull (507, storage-full)                  the disk under the data dir is full
    ├── MaintenanceMode (503, maintenance-mode)          an admin stopped deployments for now
    ├── DockerUnavailable (503, docker-unavailable)      engine not reachable
    ├── JobUnavailable (503, job-unavailable)            job starting, not ready for calls
    ├── JobTimeout (504, job-timeout)                    a call ran past the job's call_timeout
    └── UpstreamError (502, job-unreachable)             gateway could not reach a job

Third-party exceptions are translated into these at the adapter boundary, so the rest of
the daemon, the HTTP error handler and the CLI only ever deal with this tree.
"""

from __future__ import annotations

from typing import Any


class RacetrackError(Exception):
    """Base of every error racetrackd raises on purpose."""

    status_code: int = 500
    reference: str = "internal-error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, Any]:
        """Racetrack's error shape `{"error", "type"}`, plus a hint where one helps."""
        body = {"error": self.message, "type": self.reference}
        if self.hint:
            body["hint"] = self.hint
        return body


class ValidationError(RacetrackError):
    status_code = 400
    reference = "validation-error"


class ManifestError(ValidationError):
    """Carries every field error at once, as `(field.path, message)` pairs."""

    reference = "invalid-manifest"

    def __init__(self, message: str, *, hint: str | None = None, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = super().to_dict()
        if self.errors:
            body["errors"] = [{"field": field, "message": message} for field, message in self.errors]
        return body


class AmbiguousPath(ValidationError):
    """A gateway path that the gateway and a job could read as different endpoints (racetrackd.gateway.pathmapping)."""

    reference = "ambiguous-path"


class UnauthorizedError(RacetrackError):
    status_code = 401
    reference = "unauthorized"


class ForbiddenError(RacetrackError):
    status_code = 403
    reference = "forbidden"


class TooManyAuthFailures(RacetrackError):
    status_code = 429
    reference = "too-many-auth-failures"

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class TooManyStreams(RacetrackError):
    status_code = 429
    reference = "too-many-streams"


class NotFoundError(RacetrackError):
    status_code = 404
    reference = "not-found"


class JobNotFound(NotFoundError):
    reference = "job-not-found"


class ConflictError(RacetrackError):
    status_code = 409
    reference = "already-exists"


class SettingsError(RacetrackError):
    reference = "invalid-setting"


class BuildError(RacetrackError):
    reference = "build-failed"


class ImageUnavailable(RacetrackError):
    """A docker-image job's image is neither in the engine nor pullable."""

    reference = "image-unavailable"


class ImagePushError(RacetrackError):
    status_code = 502
    reference = "image-push-failed"


class JobStartError(RacetrackError):
    reference = "job-start-failed"


class JobTypeError(RacetrackError):
    reference = "jobtype-error"


class MaintenanceMode(RacetrackError):
    status_code = 503
    reference = "maintenance-mode"


class DockerUnavailable(RacetrackError):
    status_code = 503
    reference = "docker-unavailable"


class UpstreamError(RacetrackError):
    status_code = 502
    reference = "job-unreachable"


class JobUnavailable(RacetrackError):
    status_code = 503
    reference = "job-unavailable"


class JobTimeout(RacetrackError):
    status_code = 504
    reference = "job-timeout"


class NotSupported(RacetrackError):
    status_code = 501
    reference = "not-supported"


class PayloadTooLarge(RacetrackError):
    status_code = 413
    reference = "payload-too-large"


class StorageFull(RacetrackError):
    status_code = 507
    reference = "storage-full"
