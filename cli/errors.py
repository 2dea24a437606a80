"""rtd's one error type and its exit codes: each class of failure exits with its own number,
so scripts can tell "no such job" from "wrong token" from "daemon down" without parsing text.

    RtdError (1, the daemon failed or answered something unexpected)
    ├── usage (2, a bad option or argument, e.g. a payload that is not JSON or YAML; click's own code)
    ├── not found (3, no such job, deployment, task, user ...)
    ├── auth (4, no token, a wrong one, or one without the scope)
    ├── conflict (5, already exists, something is in progress, or maintenance mode is on)
    ├── deployment failed (6, a build, start or rollback ended failed)
    ├── unreachable (7, nothing answered at the remote's URL)
    ├── invalid input (8, an invalid manifest, or a request the daemon refused as invalid)
    └── interrupted (130, Ctrl-C)
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_CONFLICT = 5
EXIT_DEPLOY_FAILED = 6
EXIT_UNREACHABLE = 7
EXIT_INVALID_INPUT = 8
EXIT_INTERRUPTED = 130  # the shell's own code for Ctrl-C

_EXIT_BY_STATUS = {
    400: EXIT_INVALID_INPUT,
    401: EXIT_AUTH,
    403: EXIT_AUTH,
    404: EXIT_NOT_FOUND,
    409: EXIT_CONFLICT,
    413: EXIT_INVALID_INPUT,
    422: EXIT_INVALID_INPUT,
    429: EXIT_AUTH,
    503: EXIT_CONFLICT,
}  # 503: maintenance mode, from the control plane or (for rtd call) the gateway


class RtdError(Exception):
    """A failure rtd reports as `error: MESSAGE` (and `hint: HINT`), then exits with `exit_code`."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def exit_code_for_status(status: int | None) -> int:
    """The exit code for a daemon's HTTP error status."""
    return _EXIT_BY_STATUS.get(status or 0, EXIT_ERROR)
