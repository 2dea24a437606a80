"""The gateway (`/pub`): every call to every job, forwarded in one streamed hop. An ASGI app.

    ANY  /pub/job/<name>/<version>/<path>          (and the legacy /pub/fatman/...)
    WS   /pub/job/<name>/<version>/<path>          WebSocket upgrades, relayed both ways
    POST /pub/async/new/job/<name>/<version>/<path> → 201 {task_id, status}
    GET  /pub/async/task/<id>/poll | /status

Per call: where the job is (`RoutingTable`, in memory), who is calling and whether they may
call that endpoint (`Authenticator`, in memory; the job's /health, /live, /ready and its
approved public endpoints are open), a pooled keep-alive connection (`UpstreamPool`), and one
deadline, the job's call_timeout, from the first byte in to the last byte out. Errors are JSON
`{error, type, job_name, job_version, request_id}`: 400 ambiguous path, 401, 403, 404 unknown
job, 429 too many failed auth attempts, 502 unreachable, 503 starting, 504 past the deadline.

Trust: the path is read once from the raw bytes (`pathmapping.read_gateway_path`, via `checked_path`),
and the endpoint authorised is the one forwarded. The job's answer is the job's own, except that it
can never set or clear a cookie the daemon owns (`_sets_daemon_cookie`), and the job never sees
those cookies in the caller's request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from racetrackd import maintenance, metrics, naming
from racetrackd.auth import access
from racetrackd.auth.access import Identity
from racetrackd.auth.authenticator import AUTH_HEADER, LEGACY_HEADERS, PLANTED_COOKIE, Authenticator
from racetrackd.db import JobStatus
from racetrackd.errors import (
    JobNotFound,
    JobTimeout,
    JobUnavailable,
    NotFoundError,
    PayloadTooLarge,
    RacetrackError,
    TooManyAuthFailures,
    UnauthorizedError,
    UpstreamError,
)
from racetrackd.gateway import asynccalls, pathmapping
from racetrackd.gateway.lastcall import LastCalls
from racetrackd.gateway.routing import LeastOutstanding, Route, RoutingTable
from racetrackd.gateway.upstream import Headers, UpstreamPool, UpstreamResponse
from racetrackd.serving import WRAPPER

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRACING = naming.TRACING_HEADER.lower().encode()
CALLER = naming.CALLER_HEADER.lower().encode()
AUTH_HEADERS = {name.lower().encode() for name in (AUTH_HEADER, *LEGACY_HEADERS)}
# Cookies the daemon owns: its login cookie, and every `__Host-` one (reserved for the daemon's
# own use). Jobs share the daemon's origin, so a job's Set-Cookie for one of these would plant a
# session (fixation) or clear the user's (forced logout); compared case-insensitively, as some
# servers read cookie names.
DAEMON_COOKIE = AUTH_HEADER.lower().encode()
DAEMON_COOKIE_PREFIX = b"__host-"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)
# Not passed to the job: framing is redone, Host names the job, the caller's token stays here.
NOT_FORWARDED = HOP_BY_HOP | AUTH_HEADERS | {b"host", b"content-length", TRACING, CALLER}
# Headers whose effect reaches past the job's own pages to the whole origin, which jobs share with
# the dashboard: Clear-Site-Data would clear the daemon's login cookie (a forced logout), and
# Service-Worker-Allowed would let a job's service worker control the dashboard's pages.
ORIGIN_WIDE = frozenset({b"clear-site-data", b"service-worker-allowed"})
NOT_RETURNED = HOP_BY_HOP | ORIGIN_WIDE | {TRACING}
WEBSOCKET_OWN = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
# Where a browser without a login is sent (racetrackd/dashboard/views.py `login`); it returns the
# browser to `next`, which its `safe_next` accepts for /pub/job/... pages.
LOGIN_PAGE = "/dashboard/login"
SMALL_BODY = 64 * 1024  # read whole (and so replayable on a stale connection) up to this size
POLL_WAIT_SECONDS = 30.0
POLL_STEP_SECONDS = 0.1

Waker = Callable[[str, str], None]  # blocking: starts a sleeping job and waits until it is ready


class Gateway:
    def __init__(
        self,
        *,
        routes: RoutingTable,
        upstream: UpstreamPool,
        authenticator: Authenticator,
        wake: Waker,
        async_max_body: int,
        last_calls: LastCalls | None = None,
        maintenance_blocks_calls: bool = True,
    ) -> None:
        self._routes = routes
        self.last_calls = last_calls or LastCalls()
        self._maintenance_blocks_calls = maintenance_blocks_calls
        self._upstream = upstream
        self.authenticator = authenticator
        self._wake = wake
        self._balancer = LeastOutstanding()
        self._async_max_body = async_max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        request_id = _header(headers, TRACING) or new_tracing_id()
        call = _Call(scope, request_id, headers)
        target_route: str | None = None
        try:
            # Read once, from the bytes the caller sent: the same path is authorised and forwarded.
            target = pathmapping.read_gateway_path(pathmapping.raw_path(scope["path"], scope.get("raw_path")))
            job_call = target.call
            target_route = target.route
            if job_call is not None:
                call.name, call.version = job_call.name, job_call.version
            if target.route in (pathmapping.SYNC, pathmapping.ASYNC_NEW):
                # Polls stay open: a call accepted before maintenance began still hands its result over.
                self._refuse_in_maintenance()
            if scope["type"] == "websocket":
                if target.route != pathmapping.SYNC or job_call is None:
                    raise NotFoundError(f"no gateway route {target.path}")
                await self._websocket(call, job_call, receive, send)
            elif target.route == pathmapping.SYNC and job_call is not None:
                await self._forward(call, job_call, receive=receive, send=send)
            elif target.route == pathmapping.ASYNC_NEW:
                if job_call is None:
                    raise NotFoundError("async calls go to /pub/async/new/job/<name>/<version>/<path>")
                await self._async_new(call, job_call, receive, send)
            elif target.route == pathmapping.ASYNC_TASK:
                if target.task_id is None or target.task_action is None:
                    raise NotFoundError("use /pub/async/task/<id>/poll or /pub/async/task/<id>/status")
                await self._async_task(call, target.task_id, target.task_action, send)
            else:
                raise NotFoundError(
                    f"no gateway route {target.path}", hint="call jobs at /pub/job/<name>/<version>/<path>"
                )
        except _CallerGone:
            return  # nobody is left to answer
        except RacetrackError as exc:
            if scope["type"] == "websocket":
                await send(
                    {
                        "type": "websocket.close",
                        "code": 1008 if exc.status_code in (400, 401, 403, 429) else 1011,
                        "reason": exc.message[:120],
                    }
                )
            elif (login := _login_redirect(call, target_route, exc)) is not None:
                await _send_redirect(send, login, request_id)
            elif not call.response_started:
                extra = (
                    [(b"retry-after", str(exc.retry_after).encode())] if isinstance(exc, TooManyAuthFailures) else []
                )
                await _send_json(send, exc.status_code, call.error_body(exc), request_id, extra)
            else:
                raise  # headers are out: closing the connection is the only signal left
        except Exception as exc:  # a bug of ours: still a JSON answer, and a traceback in the log
            if call.response_started or scope["type"] == "websocket":
                raise
            log.exception("gateway error on %s %s", scope.get("method", "WS"), scope["path"])
            error = RacetrackError(f"internal gateway error: {type(exc).__name__}")
            await _send_json(send, 500, call.error_body(error), request_id)

    def _refuse_in_maintenance(self) -> None:
        """503 for every job call while maintenance mode is on (Racetrack's answer), unless the admin
        keeps jobs serving. Read from the routing table's copy: no registry read per call."""
        if self._maintenance_blocks_calls:
            maintenance.refuse_job_calls(self._routes.maintenance)

    # ---- synchronous calls
    async def _forward(self, call: _Call, job_call: pathmapping.JobCall, *, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        route = self._authorize(call, self._resolve(call), job_call.endpoint)
        if route.path_mode != WRAPPER and await self._answered_for_job(call, route, job_call, send):
            return
        target = _job_target(call.scope, route, job_call)
        try:
            route = await self._route(call, route)
        except RacetrackError as exc:  # a crashed or starting job: its callers saw a 5xx, shown over time too
            self.last_calls.tally.record(route.name, route.version, exc.status_code, time.perf_counter() - started)
            raise
        deadline = asyncio.get_running_loop().time() + route.call_timeout
        address = self._balancer.acquire(route.addresses)
        counted = metrics.for_job(route.name, route.version)
        counted.in_flight.inc()
        status = 0
        job_seconds = 0.0
        try:
            job_root, caller_root = pathmapping.roots(
                route.path_mode, route.name, route.version, job_call.public_prefix
            )
            headers = _forward_headers(call, address, caller_root)
            body, length = await _request_body(call.headers, receive)
            try:
                async with _Deadline(deadline):
                    asked = time.perf_counter()
                    response = await self._upstream.request(
                        address, call.scope["method"], target, headers, body, length
                    )
                    job_seconds = time.perf_counter() - asked
                    status = response.status
                    out = _response_headers(response.headers, address, job_root, caller_root, call.request_id)
                    try:
                        job_seconds += await _answer(call, response, status, out, send)
                    except BaseException:
                        response.close()  # read only in part: the connection cannot carry another call
                        raise
                    response.release()
            except TimeoutError:
                counted.error("timeout")
                raise JobTimeout(
                    f"job {route.name} {route.version} did not answer within its call_timeout of "
                    f"{route.call_timeout:g} s",
                    hint="set call_timeout in job.yaml for longer calls",
                ) from None
            except UpstreamError as exc:
                counted.error(type(exc).__name__)
                exc.hint = _status_hint(route)
                call.job_status = route.status
                raise
        except RacetrackError as exc:
            status = exc.status_code
            raise
        finally:
            self.last_calls.answered(route.name, route.version, status or 499, time.perf_counter() - started)
            self._balancer.release(address)
            counted.in_flight.dec()
            counted.answered(status or 499)
            counted.job_seconds.observe(job_seconds)
            metrics.OVERHEAD_SECONDS.observe(max(0.0, time.perf_counter() - started - job_seconds))

    async def _answered_for_job(self, call: _Call, route: Route, job_call: pathmapping.JobCall, send: Send) -> bool:
        """What the gateway answers itself for a job whose server does not keep the wrapper contract
        (docker-proxy): its probes and metrics, and the redirect from its bare root to the root with
        a slash. False when the call is for the job's server."""
        if job_call.endpoint in pathmapping.DAEMON_ANSWERED:
            await self._answer_for_job(call, route, job_call.endpoint, send)
            return True
        if pathmapping.lacks_root_slash(route.path_mode, job_call):
            query = call.scope.get("query_string") or b""
            raw = pathmapping.raw_path(call.scope["path"], call.scope.get("raw_path"))  # as sent: still encoded
            location = raw.decode("ascii") + "/" + ("?" + query.decode("latin-1") if query else "")
            await _send_json(
                send, 308, {"location": location}, call.request_id, [(b"location", location.encode("latin-1"))]
            )
            return True
        return False

    async def _answer_for_job(self, call: _Call, route: Route, endpoint: str, send: Send) -> None:
        """/live, /ready, /health and /metrics of a job whose server has none of its own (docker-proxy):
        from what the supervisor knows of it (its probes of the job's server) and the gateway's counts."""
        if endpoint == "/metrics":
            text = await asyncio.get_running_loop().run_in_executor(None, metrics.render_job, route.name, route.version)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", metrics.CONTENT_TYPE.encode()),
                        (b"content-length", str(len(text)).encode()),
                        (TRACING, call.request_id.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": text})
            return
        live = route.status not in JobStatus.UNROUTABLE
        ready = live and route.callable and not route.asleep
        body: dict[str, Any]
        if endpoint == "/live":
            ok, body = live, {"live": live, "deployment_timestamp": route.deployment_timestamp}
        elif endpoint == "/ready":
            ok, body = ready, {"ready": ready}
        else:
            ok, body = (
                ready,
                {
                    "service": "job",
                    "job_name": route.name,
                    "job_version": route.version,
                    "live": live,
                    "ready": ready,
                    "status": "pass" if ready else "fail",
                    "job_status": route.status,
                    "error": route.error,
                    "deployment_timestamp": route.deployment_timestamp,
                },
            )
        await _send_json(send, 200 if ok else 500, body, call.request_id)

    def _resolve(self, call: _Call) -> Route:
        name, version = call.name or "", call.version or ""
        route = self._routes.resolve(name, version)
        if route is None:
            self._identify(call)  # 401 before 404: a caller without a valid token learns no job names
            metrics.GATEWAY_ERRORS.labels(name, version, "not_found").inc()
            raise JobNotFound(f"job {call.name} {call.version} not found")
        return route

    def _authorize(self, call: _Call, route: Route, endpoint: str) -> Route:
        """Let the call through if `endpoint` (checked and decoded: pathmapping.parse_job_call) is
        open, or its caller holds call_job on it (403 otherwise)."""
        if route.is_open(endpoint):
            call.caller = self._identify(call, required=False).display
            return route
        identity = self._identify(call)
        if not identity.allows(access.CALL_JOB, route.name, route.version, endpoint):
            metrics.AUTH_FAILURES.labels("gateway").inc()
            raise access.forbidden(identity, access.CALL_JOB, "call", route.name, route.version, endpoint)
        call.caller = identity.display
        return route

    async def _route(self, call: _Call, route: Route) -> Route:
        """The route, once the job can take calls: a sleeping job is woken, others refused clearly."""
        if route.asleep:  # scaled to zero: this call wakes it (slower, not an error)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._wake, route.name, route.version)
            await loop.run_in_executor(None, self._routes.reload)
            route = self._routes.resolve(route.name, route.version) or route
        if route.status in JobStatus.UNROUTABLE:  # no container to call: fail now, not after a connect timeout
            call.job_status = route.status
            _count_refusal(route, "unreachable", 502)
            raise UpstreamError(f"job {route.name} {route.version} is {route.status}", hint=_status_hint(route))
        if route.starting or not route.addresses:
            call.job_status = route.status
            _count_refusal(route, "unavailable", 503)
            raise JobUnavailable(
                f"job {route.name} {route.version} is {route.status} and not ready for calls yet",
                hint="try again in a moment; `rtd list` shows its status",
            )
        return route

    def _identify(self, call: _Call, *, required: bool = True) -> Identity:
        """The caller; on an open endpoint (`required=False`) a missing or bad token just leaves it unnamed."""
        client = call.scope.get("client")
        try:
            return self.authenticator.identify(call.token(), client[0] if client else "", "gateway")
        except RacetrackError:
            if required:
                raise
            return access.ANYONE

    # ---- WebSockets
    async def _websocket(self, call: _Call, job_call: pathmapping.JobCall, receive: Receive, send: Send) -> None:
        route = await self._route(call, self._authorize(call, self._resolve(call), job_call.endpoint))
        address = self._balancer.acquire(route.addresses)
        try:
            target = _job_target(call.scope, route, job_call).decode("latin-1")
            caller_root = pathmapping.roots(route.path_mode, route.name, route.version, job_call.public_prefix)[1]
            headers = [
                (k.decode("latin-1"), v.decode("latin-1"))
                for k, v in _forward_headers(call, address, caller_root)
                if k not in WEBSOCKET_OWN and k != b"host"
            ]  # the client sets Host itself
            try:
                upstream = await websocket_connect(
                    f"ws://{address}{target}",
                    additional_headers=headers,
                    subprotocols=call.scope.get("subprotocols") or None,
                    open_timeout=min(route.call_timeout, 30.0),
                    max_size=None,
                    compression=None,
                    ping_interval=None,
                    user_agent_header=None,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                detail = f"the job answered {exc.response.status_code}" if isinstance(exc, InvalidStatus) else str(exc)
                raise UpstreamError(f"job {route.name} {route.version} refused the WebSocket: {detail}") from exc
            await receive()  # websocket.connect
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": upstream.subprotocol,
                    "headers": [(naming.TRACING_HEADER.encode(), call.request_id.encode())],
                }
            )
            await _relay(upstream, receive, send)
        finally:
            self.last_calls.record(route.name, route.version)
            self._balancer.release(address)

    # ---- async calls
    async def _async_new(self, call: _Call, job_call: pathmapping.JobCall, receive: Receive, send: Send) -> None:
        route = self._authorize(call, self._resolve(call), job_call.endpoint)
        body = await _read_body(receive, self._async_max_body)
        target = _job_target(call.scope, route, job_call).decode("latin-1")
        caller_root = pathmapping.roots(route.path_mode, route.name, route.version, job_call.public_prefix)[1]
        headers = _forward_headers(call, "", caller_root)
        task = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: asynccalls.submit(
                route.name,
                route.version,
                call.scope["method"],
                target,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k != b"host"],
                body,
                call.caller,
            ),
        )
        self.last_calls.record(route.name, route.version)  # the call is the caller's, whenever it runs
        await _send_json(send, 201, {"task_id": task.id, "status": asynccalls.public_status(task)}, call.request_id)

    async def _async_task(self, call: _Call, task_id: str, action: str, send: Send) -> None:
        identity = self._identify(call)
        call.caller = identity.display
        loop = asyncio.get_running_loop()
        task = await loop.run_in_executor(None, asynccalls.find, task_id, identity)
        if action == "status":
            await _send_json(send, 200, asynccalls.describe(task), call.request_id)
            return
        wait = _query_seconds(call.scope, "wait", POLL_WAIT_SECONDS)
        deadline = loop.time() + wait
        while not asynccalls.finished(task) and loop.time() < deadline:
            await asyncio.sleep(POLL_STEP_SECONDS)
            task = await loop.run_in_executor(None, asynccalls.find, task_id, identity)
        if not asynccalls.finished(task):
            await _send_json(send, 202, asynccalls.describe(task), call.request_id)
        elif task.state == asynccalls.TaskState.FAILED:
            await _send_json(send, 500, asynccalls.describe(task), call.request_id)
        else:
            status, headers, body = await loop.run_in_executor(None, asynccalls.take_result, task)
            out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            out = [(k, v) for k, v in out if _returned(k, v)]
            out.append((b"content-length", str(len(body)).encode()))
            out.append((TRACING, call.request_id.encode()))
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})


class _Deadline:
    """`asyncio.timeout_at` for the gateway's one deadline per call, at a fraction of its cost (a timer
    that cancels the task, ~1 µs, against 16.7 µs measured for asyncio's Timeout under load): past `when` the
    block is cancelled and TimeoutError raised in its place; any other cancellation passes through."""

    __slots__ = ("_when", "_task", "_handle", "_cancelling", "_fired")

    def __init__(self, when: float) -> None:
        self._when = when
        self._fired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = asyncio.get_running_loop().call_at(self._when, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._handle.cancel()
        if self._fired and self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise TimeoutError from exc  # ours, not a cancellation from outside (asyncio.timeout's rule)


_getrandbits = random.getrandbits
_NOT_VERSION_OR_VARIANT = ~((0xF000 << 64) | (0xC << 60))
_VERSION_4_VARIANT_RFC = (0x4000 << 64) | (0x8 << 60)


def new_tracing_id() -> str:
    """A uuid4-shaped tracing id from `random` (reseeded in each forked worker): uuid4 reads os.urandom,
    a system call per gateway call for an id that needs to be unique, not secret."""
    digits = "%032x" % (_getrandbits(128) & _NOT_VERSION_OR_VARIANT | _VERSION_4_VARIANT_RFC)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class _Call:
    """What the gateway knows about one incoming call, for forwarding and for error bodies."""

    def __init__(self, scope: Scope, request_id: str, headers: Headers) -> None:
        self.scope = scope
        self.request_id = request_id
        self.headers = headers
        self.name: str | None = None
        self.version: str | None = None
        self.caller: str | None = None
        self.job_status: str | None = None
        self.response_started = False

    def token(self) -> str | None:
        for header, raw in self.headers:
            if header in AUTH_HEADERS and raw:
                return raw.decode("latin-1")
        cookie = _header(self.headers, b"cookie")
        if not cookie:
            return None
        values = set()
        for item in cookie.split(";"):
            key, _, value = item.strip().partition("=")
            if key == AUTH_HEADER and value:
                values.add(unquote(value))
        if len(values) > 1:
            raise UnauthorizedError(PLANTED_COOKIE)
        return values.pop() if values else None

    def error_body(self, exc: RacetrackError) -> dict[str, Any]:
        body = {**exc.to_dict(), "job_name": self.name, "job_version": self.version, "request_id": self.request_id}
        if self.job_status:
            body["job_status"] = self.job_status
        return body


async def _answer(call: _Call, response: UpstreamResponse, status: int, headers: Headers, send: Send) -> float:
    """Pass the job's answer on; returns the seconds spent waiting for its body."""
    complete = response.buffered_body()
    call.response_started = True
    if complete is not None:  # the whole answer is here already (the common small one): one write
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": complete})
        return 0.0
    streamed_from = time.perf_counter()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    async for chunk in response.body():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    return time.perf_counter() - streamed_from


def _login_redirect(call: _Call, route: str | None, exc: RacetrackError) -> str | None:
    """The dashboard login, returning to this page, for a browser that opened a job's page without a
    login (or with an expired login cookie); None for everyone else, who keeps the 401 JSON.

    A browser is a GET or HEAD of a sync job path asking for HTML (Accept: text/html) with no token
    in a header: a wrong token in a header is an API client's mistake, to be told so. Two login
    cookies at once (a planted one) stay a 401: logging in again would not clear the plant.
    """
    if not isinstance(exc, UnauthorizedError) or exc.message == PLANTED_COOKIE:
        return None
    if route != pathmapping.SYNC or call.scope["type"] != "http" or call.response_started:
        return None
    if call.scope["method"] not in ("GET", "HEAD") or "text/html" not in (_header(call.headers, b"accept") or ""):
        return None
    if any(header in AUTH_HEADERS for header, _ in call.headers):
        return None
    raw = pathmapping.raw_path(call.scope["path"], call.scope.get("raw_path")).decode("latin-1")
    query = (call.scope.get("query_string") or b"").decode("latin-1")
    back = raw + ("?" + query if query else "")
    return f"{LOGIN_PAGE}?next={quote(back, safe='/')}"


async def _send_redirect(send: Send, location: str, request_id: str) -> None:
    body = b"Log in to open this page.\n"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode("latin-1")),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (TRACING, request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _count_refusal(route: Route, kind: str, status: int) -> None:
    """A call refused before it was forwarded still counts as answered (and as an error)."""
    counted = metrics.for_job(route.name, route.version)
    counted.error(kind)
    counted.answered(status)


def _status_hint(route: Route) -> str:
    return f"job status: {route.status}" + (f"; last error: {route.error}" if route.error else "")


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _job_target(scope: Scope, route: Route, job_call: pathmapping.JobCall) -> bytes:
    """The job-side path for the path as sent (racetrackd.gateway.pathmapping), query kept."""
    target = pathmapping.job_path(route.path_mode, route.name, route.version, job_call)
    if target is None:
        raise NotFoundError(
            f"job {route.name} {route.version} serves its API under /api/v1/ only (docker-proxy, forward mode)",
            hint=f"call /pub/job/{route.name}/<version>/api/v1/<path>; or set jobtype_extra.proxy_mode: rewrite",
        )
    query = scope.get("query_string")
    return target + b"?" + query if query else target


def _forward_headers(call: _Call, address: str, public_prefix: str) -> Headers:
    """The headers the job gets: the caller's, less hop-by-hop ones and the token, plus ours.

    One pass over the caller's headers: this runs on every call.
    """
    out: Headers = []
    connection = forwarded_for = forwarded_host = forwarded_proto = host = None
    for name, value in call.headers:
        if name in NOT_FORWARDED:
            if name == b"connection":
                connection = value
            elif name == b"host":
                host = value
            continue
        if name.startswith(b"x-forwarded-"):
            if name == b"x-forwarded-for":
                forwarded_for = value
            elif name == b"x-forwarded-host":
                forwarded_host = value
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
            continue
        if name == b"cookie":
            value = _without_auth_cookie(value)
            if not value:
                continue
        out.append((name, value))
    if connection:  # headers the client named as hop-by-hop go no further either
        named = {token.strip().lower() for token in connection.split(b",")}
        out = [(k, v) for k, v in out if k not in named]
    client = call.scope.get("client")
    client_host = client[0].encode() if client else b""
    out += [
        (b"host", address.encode()),
        (b"x-forwarded-for", forwarded_for + b", " + client_host if forwarded_for else client_host),
        (b"x-forwarded-host", forwarded_host or host or b""),
        (b"x-forwarded-proto", forwarded_proto or call.scope.get("scheme", "http").encode()),
        (b"x-forwarded-prefix", public_prefix.encode()),
        (TRACING, call.request_id.encode()),
    ]
    if call.caller:
        out.append((CALLER, call.caller.encode()))
    return out


def _without_auth_cookie(value: bytes) -> bytes:
    """A Cookie header less the daemon's own cookies: the user's session token is not the job's."""
    lowered = value.lower()
    if DAEMON_COOKIE not in lowered and DAEMON_COOKIE_PREFIX not in lowered:
        return value
    kept = [item for item in value.split(b";") if not _daemon_cookie_name(item.partition(b"=")[0])]
    return b";".join(kept).strip()


def _daemon_cookie_name(name: bytes) -> bool:
    name = name.strip().lower()
    return name == DAEMON_COOKIE or name.startswith(DAEMON_COOKIE_PREFIX)


def _returned(name: bytes, value: bytes) -> bool:
    """Whether a header of the job's answer goes on to the caller (names lower-case, as upstream reads them)."""
    return name not in NOT_RETURNED and not (name == b"set-cookie" and _sets_daemon_cookie(value))


def _sets_daemon_cookie(set_cookie: bytes) -> bool:
    """Whether a job's Set-Cookie value would set or clear a cookie the daemon owns.

    A nameless cookie (`=X-Racetrack-Auth=x`) counts by its value: browsers send it as the value
    alone, which servers then read as `X-Racetrack-Auth=x`.
    """
    pair = set_cookie.partition(b";")[0].strip()
    if pair.startswith(b"="):
        pair = pair[1:]
    name = pair.partition(b"=")[0]
    return _daemon_cookie_name(name) or not name.strip()


def _response_headers(headers: Headers, address: str, job_root: str, caller_root: str, request_id: str) -> Headers:
    out = [(k, v) for k, v in headers if _returned(k, v)]
    for index, (name, value) in enumerate(out):
        if name == b"location":
            location = pathmapping.rewrite_location(value.decode("latin-1"), address, job_root, caller_root)
            out[index] = (name, location.encode("latin-1"))
    out.append((TRACING, request_id.encode()))
    return out


async def _request_body(headers: Headers, receive: Receive) -> tuple[bytes | AsyncIterator[bytes], int | None]:
    """The body to send on: whole bytes when small (the usual call), else a stream."""
    length_text = _header(headers, b"content-length")
    chunked = "chunked" in (_header(headers, b"transfer-encoding") or "").lower()
    length = int(length_text) if length_text and length_text.isdigit() else None
    if length is None and not chunked:
        return b"", None
    if length is not None and length <= SMALL_BODY:
        return await _read_body(receive, SMALL_BODY), None
    return _stream_body(receive), length


async def _read_body(receive: Receive, limit: int) -> bytes:
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _CallerGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _CallerGone()
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


class _CallerGone(UpstreamError):
    """The caller hung up before its request body arrived."""

    status_code = 499
    reference = "caller-gone"

    def __init__(self) -> None:
        super().__init__("the caller closed the connection")


async def _relay(upstream: Any, receive: Receive, send: Send) -> None:
    """Pass WebSocket messages both ways until either side closes."""

    async def caller_to_job() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(message.get("code", 1000))
                return
            text = message.get("text")
            await upstream.send(text if text is not None else message.get("bytes") or b"")

    async def job_to_caller() -> None:
        try:
            async for data in upstream:
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        await send(
            {
                "type": "websocket.close",
                "code": 1000 if code in (1005, 1006) else code,
                "reason": upstream.close_reason or "",
            }
        )

    tasks = [asyncio.ensure_future(caller_to_job()), asyncio.ensure_future(job_to_caller())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await upstream.close()


def _query_seconds(scope: Scope, name: str, most: float) -> float:
    for pair in (scope.get("query_string") or b"").decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            try:
                return max(0.0, min(float(value), most))
            except ValueError:
                break
    return most


async def _send_json(
    send: Send, status: int, body: dict[str, Any], request_id: str, extra_headers: Headers | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (TRACING, request_id.encode()),
                *(extra_headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
