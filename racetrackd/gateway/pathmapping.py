"""Where a gateway path goes on the job's server, and where the job's redirects go for the caller.

One job-relative path (what follows `/pub/job/<name>/<version>`) maps by the job's path mode
(`racetrackd.serving.Serving.path_mode`, from its job type's `serving:` section):

    wrapper   /pub/job/<name>/<version>/<rest>   the job serves under the gateway's own prefix (its
                                                 resolved name and version: `latest` is never sent on)
    forward   /<rest without api/v1/>            docker-proxy's default: the user's server is
                                                 reached through /api/v1/<path> only
    rewrite   /<rest>                            every path, with the prefix trimmed

A redirect the job answers with is mapped back: `job_root` (the prefix the job serves under:
`/pub/job/<name>/<version>` for a wrapper, nothing otherwise) is replaced by `caller_root` (the
prefix the caller used, plus `/api/v1` in forward mode). Pure: bytes and strings only.

Every gateway path is read once, from the raw request target, into a `GatewayPath`
(`read_gateway_path`: the route it takes and the `JobCall` or async task it names) through `checked_path`, which refuses what a job could read differently from the gateway: encoded `/`,
`\\` or `%`, control characters, dot segments, empty segments. What remains decodes segment for
segment, so the decoded path the gateway authorises is the one the job sees when it decodes the
raw path forwarded to it.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import quote, unquote_to_bytes

from racetrackd.errors import AmbiguousPath
from racetrackd.naming import pub_path
from racetrackd.serving import FORWARD, WRAPPER

API_PREFIX = "api/v1"
# A job that does not keep the wrapper contract has no probes or metrics of its own: the daemon
# answers these paths for it (as Racetrack's proxy wrapper does beside the user's server).
DAEMON_ANSWERED = frozenset({"/live", "/ready", "/health", "/metrics"})
JOB_KINDS = ("job", "fatman")  # /pub/fatman/... is Racetrack's legacy spelling

# Raw bytes no request path may hold: controls, space, non-ASCII and `\\` (which some servers
# read as `/`). Compiled once: this runs on every call.
_RAW_REFUSED = re.compile(rb"[^\x21-\x7e]|\\")
# Escapes a job would decode into a separator, an escape of its own (double encoding: a second
# decoder further in would see the first one's output), or a control character.
_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})|%(2[Ff]|5[Cc]|25|[01][0-9A-Fa-f]|7[Ff])")
_ESCAPE_NAMES = {
    b"2f": "an encoded '/' (%2F)",
    b"5c": "an encoded '\\' (%5C)",
    b"25": "an encoded '%' (%25, double encoding)",
}
# Characters left as they are when a server gave no raw path and the decoded one is encoded again.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclasses.dataclass(frozen=True, slots=True)
class JobCall:
    """A call's job and path under it, read from `/pub/<kind>/<name>/<version>[/<rest>]`."""

    kind: str
    name: str
    version: str
    endpoint: str  # the decoded job-relative path (`/api/v1/perform`): what is authorised
    rest: bytes | None  # the same path as sent, without its leading `/` (None: the path ended at the version)

    @property
    def public_prefix(self) -> str:
        return f"/pub/{self.kind}/{self.name}/{self.version}"


def raw_path(scope_path: str, scope_raw_path: bytes | None) -> bytes:
    """The path as the client sent it (ASGI's `raw_path`); re-encoded from the decoded one if a server omits it."""
    return scope_raw_path or quote(scope_path, safe=_PATH_SAFE).encode("ascii")


def checked_path(raw: bytes) -> str:
    """The path `raw` decodes to, when every reader decodes it alike; AmbiguousPath (400) otherwise.

    Refused: bytes outside printable ASCII, `\\`, malformed escapes, escapes of `/`, `\\`, `%` or
    control characters, `.` and `..` segments (also `..;x`, which Java servers read as `..`), and
    empty segments (`//`, which servers merge or redirect). Without those, splitting the raw path
    at `/` and decoding each piece gives the segments of the decoded path one for one.
    """
    if not raw.startswith(b"/"):
        raise AmbiguousPath("the request path does not start with '/'")
    bad = _RAW_REFUSED.search(raw)
    if bad:
        raise AmbiguousPath(
            f"the request path holds the byte 0x{bad.group(0)[0]:02X} at {bad.start()}: control "
            "characters, spaces, non-ASCII bytes and '\\' are refused unencoded"
        )
    if b"%" in raw:
        escape = _ESCAPE.search(raw)
        if escape:
            code = raw[escape.start() + 1 : escape.start() + 3].lower()
            what = _ESCAPE_NAMES.get(code) or (
                "a malformed escape"
                if escape.group(1) is None
                else f"an encoded control character (%{code.decode().upper()})"
            )
            raise AmbiguousPath(
                f"the request path holds {what}: a job could read it as another path",
                hint="send '/' as itself; encode other reserved characters once",
            )
        try:
            path = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise AmbiguousPath("the request path does not decode to UTF-8") from None
    else:
        path = raw.decode("ascii")
    if "//" in path:
        raise AmbiguousPath("the request path holds an empty segment ('//')")
    if "/." in path:
        for segment in path.split("/"):
            if segment.partition(";")[0] in (".", ".."):
                raise AmbiguousPath(
                    f"the request path holds the segment {segment!r}: '.' and '..' segments are refused, encoded or not"
                )
    return path


def parse_job_call(path: str, raw: bytes, kind_index: int) -> JobCall | None:
    """The job call in a checked gateway path whose segment `kind_index` is `job` or `fatman`
    (2 in `/pub/job/...`, 4 in `/pub/async/new/job/...`); None when the path is no job call."""
    parts = path.split("/", kind_index + 3)
    if len(parts) < kind_index + 3 or parts[kind_index] not in JOB_KINDS:
        return None
    has_rest = len(parts) > kind_index + 3
    rest = raw.split(b"/", kind_index + 3)[kind_index + 3] if has_rest else None
    return JobCall(
        kind=parts[kind_index],
        name=parts[kind_index + 1],
        version=parts[kind_index + 2],
        endpoint="/" + parts[kind_index + 3] if has_rest else "/",
        rest=rest,
    )


SYNC, ASYNC_NEW, ASYNC_TASK, OTHER = "sync", "async-new", "async-task", "other"
_ASYNC_NEW_PREFIX = "/pub/async/new/"
_ASYNC_TASK_PREFIX = "/pub/async/task/"
_TASK_ACTIONS = ("poll", "status")


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayPath:
    """A gateway request target, read once (`read_gateway_path`): which of the gateway's routes it
    takes, and the job call or async task it names, for forward, WebSocket and async calls alike."""

    path: str  # checked and decoded
    route: str  # SYNC (/pub/<kind>/...: a call or a WebSocket), ASYNC_NEW, ASYNC_TASK or OTHER
    call: JobCall | None = None  # SYNC, ASYNC_NEW: None when the path is malformed
    task_id: str | None = None  # ASYNC_TASK: /pub/async/task/<task_id>/<task_action>; None when malformed
    task_action: str | None = None  # poll | status


def read_gateway_path(raw: bytes) -> GatewayPath:
    """Check `raw` (AmbiguousPath when a job could read it differently) and read what it names."""
    path = checked_path(raw)
    call = parse_job_call(path, raw, 2)  # /pub/<kind>/<name>/<version>/<rest>
    if call is not None:
        return GatewayPath(path, SYNC, call)
    if path.startswith(_ASYNC_NEW_PREFIX):
        return GatewayPath(
            path, ASYNC_NEW, parse_job_call(path, raw, 4)
        )  # /pub/async/new/<kind>/<name>/<version>/<rest>
    if path.startswith(_ASYNC_TASK_PREFIX):
        parts = path.split("/")  # ['', 'pub', 'async', 'task', id, 'poll'|'status']
        if len(parts) == 6 and parts[5] in _TASK_ACTIONS:
            return GatewayPath(path, ASYNC_TASK, task_id=parts[4], task_action=parts[5])
        return GatewayPath(path, ASYNC_TASK)
    return GatewayPath(path, OTHER)


def job_path(path_mode: str, name: str, version: str, call: JobCall) -> bytes | None:
    """The path to request from the job for `call` (its raw rest, encoding kept); None when the
    job's server is not reachable there (forward mode outside /api/v1/)."""
    rest = call.rest or b""
    if path_mode == WRAPPER:
        return b"/pub/job/%b/%b/%b" % (name.encode(), version.encode(), rest)
    if path_mode == FORWARD:
        # Decided on the decoded endpoint (what was authorised); the raw rest has the same segments.
        api = "/" + API_PREFIX
        if call.endpoint == api:
            return b"/"
        if not call.endpoint.startswith(api + "/"):
            return None
        rest = rest.split(b"/", API_PREFIX.count("/") + 1)[-1]
    return b"/" + rest


def lacks_root_slash(path_mode: str, call: JobCall) -> bool:
    """Whether the caller asked for the server's root without the trailing slash (the path ended at
    the version, or at /api/v1 in forward mode). A page served there would resolve its relative
    links one level up, so the gateway redirects to the path with the slash first, as a static
    file server would."""
    if path_mode == FORWARD:
        return call.endpoint == "/" + API_PREFIX
    return path_mode != WRAPPER and call.rest is None


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
            location = location[len(origin) :] or "/"
    if location.startswith("//"):
        return location
    if job_root:
        under_job_root = location == job_root or location.startswith((job_root + "/", job_root + "?"))
    else:  # the job serves at its server's root: every absolute path is the job's own
        under_job_root = location.startswith("/")
    return caller_root + location[len(job_root) :] if under_job_root else location
