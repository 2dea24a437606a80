"""Where a gateway path goes on the job's server, and where the job's redirects go for the caller.

One job-relative path (what follows `/pub/job/<name>/<version>`) maps by the job's path mode
(`jobtypes.Serving.path_mode`, from its job type's `serving:` section):

    wrapper   /pub/job/<name>/<version>/<rest>   the job serves under the gateway's own prefix (its
                                                 resolved name and version: `latest` is never sent on)
    forward   /<rest without api/v1/>            docker-proxy's default: the user's server is
                                                 reached through /api/v1/<path> only
    rewrite   /<rest>                            every path, with the prefix trimmed

A redirect the job answers with is mapped back: `job_root` (the prefix the job serves under:
`/pub/job/<name>/<version>` for a wrapper, nothing otherwise) is replaced by `caller_root` (the
prefix the caller used, plus `/api/v1` in forward mode). Pure: bytes and strings only.
"""

from __future__ import annotations

from racetrackd.jobtypes import FORWARD, WRAPPER
from racetrackd.naming import pub_path

API_PREFIX = "api/v1"
# A job that does not keep the wrapper contract has no probes or metrics of its own: the daemon
# answers these paths for it (as Racetrack's proxy wrapper does beside the user's server).
DAEMON_ANSWERED = frozenset({"/live", "/ready", "/health", "/metrics"})


def job_path(path_mode: str, name: str, version: str, rest: bytes) -> bytes | None:
    """The path to request from the job for the (raw, still percent-encoded) `rest`; None when the
    job's server is not reachable there (forward mode outside /api/v1/)."""
    if path_mode == WRAPPER:
        return b"/pub/job/%b/%b/%b" % (name.encode(), version.encode(), rest)
    if path_mode == FORWARD:
        api = API_PREFIX.encode()
        if rest == api:
            return b"/"
        if not rest.startswith(api + b"/") and not rest.startswith(api + b"?"):
            return None
        rest = rest[len(api) + 1:]
    return b"/" + rest


def lacks_root_slash(path_mode: str, rest: bytes | None) -> bool:
    """Whether the caller asked for the server's root without the trailing slash (`rest` None: the
    path ended at the version). A page served there would resolve its relative links one level up,
    so the gateway redirects to the path with the slash first, as a static file server would."""
    if path_mode == FORWARD:
        return rest == API_PREFIX.encode()
    return path_mode != WRAPPER and rest is None


def roots(path_mode: str, name: str, version: str, public_prefix: str) -> tuple[str, str]:
    """(job_root, caller_root): the prefix the job sees its paths under, and the one the caller sees."""
    if path_mode == WRAPPER:
        return pub_path(name, version), public_prefix
    if path_mode == FORWARD:
        return "", f"{public_prefix}/{API_PREFIX}"
    return "", public_prefix


def rewrite_location(location: str, address: str, job_root: str, caller_root: str) -> str:
    """A redirect to the job's own address or path becomes one under the gateway path the caller used.

    A relative redirect (`next/`) already resolves under the caller's path and is left alone, as is
    one to another host (`//host/x`, `https://elsewhere/`).
    """
    for origin in (f"http://{address}", f"https://{address}"):
        if location.startswith(origin):
            location = location[len(origin):] or "/"
    if location.startswith("//"):
        return location
    if job_root:
        under_job_root = location == job_root or location.startswith((job_root + "/", job_root + "?"))
    else:  # the job serves at its server's root: every absolute path is the job's own
        under_job_root = location.startswith("/")
    return caller_root + location[len(job_root):] if under_job_root else location
