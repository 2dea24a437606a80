"""The job's ASGI application: Racetrack's job conventions over HTTP, at `/` and under the pub path.

The entrypoint loads in a background thread when the server starts, so `/live` answers at once;
`/ready` turns 200 once loading succeeded; a loading error makes `/live` answer 500 with the
error, which the daemon reports as the reason the deployment failed. Job code (perform,
auxiliary endpoints, WSGI webviews) runs in a thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime
import decimal
import functools
import inspect
import logging
import os
import random
import re
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from racetrack_job_wrapper import docs, endpoint_config, files, logs, webview
from racetrack_job_wrapper.context import RequestInfo, request_context
from racetrack_job_wrapper.entrypoint import Conventions, load_entrypoint
from racetrack_job_wrapper.http import (
    HttpError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    error_response,
    json_response,
    read_body,
    send_response,
)
from racetrack_job_wrapper.metrics import Metrics
from racetrack_job_wrapper.threads import JobThreads

log = logging.getLogger("racetrack.job")

PUB_PREFIX = re.compile(r"^/pub/(?:job|fatman)/[^/]+/[^/]+")
TRACING_HEADER = os.environ.get("REQUEST_TRACING_HEADER", "X-Request-Tracing-Id").lower()
TRACING_HEADER_BYTES = TRACING_HEADER.encode()
MAX_BODY_BYTES = 256 * 1024**2
PROBES = ("/live", "/ready", "/health", "/metrics")


@dataclasses.dataclass(frozen=True)
class WrapperOptions:
    threads: int = 32
    max_concurrency: int | None = None  # calls of job code running at once
    max_concurrency_queue: int | None = None  # calls waiting for a slot before 429
    home_page: str = "/docs"
    call_timeout: float | None = None  # seconds a call of job code may take (the daemon's call_timeout)

    @classmethod
    def from_env(cls) -> WrapperOptions:
        def optional_int(name: str) -> int | None:
            raw = os.environ.get(name, "")
            return int(raw) if raw.strip() else None

        return cls(
            threads=optional_int("JOB_THREADS") or 32,
            max_concurrency=optional_int("JOB_MAX_CONCURRENCY"),
            max_concurrency_queue=optional_int("JOB_MAX_CONCURRENCY_QUEUE"),
            home_page="/" + os.environ.get("JOB_HOME_PAGE", "/docs").lstrip("/"),
            call_timeout=float(os.environ.get("JOB_CALL_TIMEOUT") or 0) or None,
        )


def new_tracing_id() -> str:
    """A random id in uuid4's form. Not uuid.uuid4(): its os.urandom call was an eighth of the
    wrapper's time per call; a tracing id needs to be unique, not unpredictable. (`random`
    reseeds itself in a forked worker.)"""
    h = "%032x" % (random.getrandbits(128) & _UUID4_MASK | _UUID4_BITS)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID4_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)  # the version nibble and the variant's two bits
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)  # version 4, variant RFC 4122


def to_json(value: Any) -> Any:
    """json.dumps `default`: numpy arrays and scalars, dataclasses, dates, decimals, sets."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


class _Arguments:
    """Checks keyword arguments against a function's signature; built once per function (binding a
    signature on every call cost more than the rest of the request handling)."""

    def __init__(self, function: Any) -> None:
        self.signature = inspect.signature(function)
        params = self.signature.parameters.values()
        self.open = any(p.kind == p.VAR_KEYWORD for p in params)
        self.names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        self.required = {
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
        }

    def check(self, kwargs: dict[str, Any]) -> None:
        """TypeError naming the problem, as Python would say it."""
        if (self.open or kwargs.keys() <= self.names) and self.required <= kwargs.keys():
            return
        self.signature.bind(**kwargs)  # the slow path: raises the precise TypeError


def _header_dict(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


@functools.lru_cache(maxsize=256)
def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function)


@functools.lru_cache(maxsize=256)
def _arguments(function: Any) -> _Arguments:
    return _Arguments(function)


class _Limiter:
    """max_concurrency calls at once; beyond max_concurrency_queue waiting callers: 429."""

    def __init__(self, limit: int | None, queue: int | None) -> None:
        self.semaphore = asyncio.Semaphore(limit) if limit else None
        self.queue = queue
        self.waiting = 0

    async def acquire(self) -> None:
        if self.semaphore is None:
            return
        if self.semaphore.locked():
            if self.queue is not None and self.waiting >= self.queue:
                raise HttpError(429, "too many requests waiting in a queue; try again later")
            self.waiting += 1
            try:
                await self.semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await self.semaphore.acquire()


class JobApp:
    def __init__(
        self, entrypoint_path: str, entrypoint_class: str | None, options: WrapperOptions | None = None
    ) -> None:
        self.entrypoint_path = entrypoint_path
        self.entrypoint_class = entrypoint_class
        self.options = options or WrapperOptions.from_env()
        self.conventions: Conventions | None = None
        self.init_error: str | None = None
        self.webview_app: Any = None
        self.webview_asgi = False
        self.metrics = Metrics()
        self.access_log = logs.AccessLog()
        self.executor = JobThreads(self.options.threads)
        self.job_name = os.environ.get("JOB_NAME", "")
        self.job_version = os.environ.get("JOB_VERSION", "")
        self.deployment_timestamp = int(os.environ.get("JOB_DEPLOYMENT_TIMESTAMP", "0") or 0)
        self.swagger_dir = docs.swagger_ui_dir()
        self._limiter: _Limiter | None = None
        self._loading: threading.Thread | None = None

    # --- start-up -----------------------------------------------------------------------------
    def start_loading(self) -> None:
        if self._loading is None:
            self._loading = threading.Thread(target=self.load, name="entrypoint-init", daemon=True)
            self._loading.start()

    def load(self) -> None:
        """Import and instantiate the entrypoint (blocking); record the error instead of raising."""
        try:
            instance = load_entrypoint(self.entrypoint_path, self.entrypoint_class)
            instance.request_context = request_context
            conventions = Conventions(instance)
            conventions.input_examples()  # fail at start-up, not in the docs page, on a bad example
            if conventions.webview_factory is not None:
                # Racetrack's runner gives webview_app() the webview's own public path
                self.webview_app = conventions.webview_factory(self._public_base_url() + webview.WEBVIEW_PREFIX)
                self.webview_asgi = webview.is_asgi(self.webview_app)
            self.conventions = conventions
        except BaseException as exc:  # noqa: BLE001 (any failure in user code must be reported, not crash)
            self.init_error = f"{type(exc).__name__}: {exc}"
            log.error("job initialization failed: %s\n%s", self.init_error, traceback.format_exc())
        else:
            log.info("job %s %s is ready", self.job_name, self.job_version)

    def shutdown(self) -> None:
        """The server is stopping: queued job calls are dropped, the access log written out."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.access_log.flush()

    def _public_base_url(self) -> str:
        return f"/pub/job/{self.job_name}/{self.job_version}" if self.job_name else ""

    # --- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        base_url, _ = self._split(scope)
        target = self._webview_target(scope)
        if self._addressed_to_another_job(base_url):
            await send({"type": "websocket.close", "code": 1008})
        elif self.webview_asgi and target is not None:
            await webview.call_asgi(
                self.webview_app,
                scope,
                receive,
                send,
                self._caller_prefix(_header_dict(scope), base_url),
                target[1] or "/",
            )
        else:
            await send({"type": "websocket.close", "code": 1000})

    def _addressed_to_another_job(self, base_url: str) -> bool:
        """A call for /pub/job/<other>/<version>: a stale address reached this container (its
        predecessor's IP was reused), and answering it would hand the caller another job's result."""
        if not base_url or not self.job_name:
            return False
        parts = base_url.split("/")  # ['', 'pub', 'job', name, version]
        if len(parts) != 5:
            return False
        name, version = parts[3], parts[4]
        if name != self.job_name:
            return True
        alias = version == "latest" or "x" in version.lower() or "*" in version
        return not alias and version != self.job_version

    def _webview_target(self, scope: Scope) -> tuple[str, str] | None:
        """(prefix, subpath) of a request for the webview app: the /pub/job/<name>/<version> it came
        under ("" at the job's root) and the raw path below /api/v1/webview ("" for the mount
        itself; trailing slashes kept, the app's routes may need them); None for any other request."""
        if self.webview_app is None:
            return None
        raw = scope["path"]
        match = PUB_PREFIX.match(raw)
        prefix, rest = (match.group(0), raw[match.end() :]) if match else ("", raw)
        if rest != webview.WEBVIEW_PREFIX and not rest.startswith(webview.WEBVIEW_PREFIX + "/"):
            return None
        return prefix, rest[len(webview.WEBVIEW_PREFIX) :]

    @staticmethod
    def _webview_own_answer(scope: Scope, prefix: str, subpath: str) -> Response | None:
        """What the wrapper answers itself under /api/v1/webview, before the webview app (as
        Racetrack's runner does): the job's ./static files, and at the job's root the redirect of
        the bare mount to the mount with a slash (a whole URL, as Racetrack's answers it)."""
        if subpath == "" and not prefix:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            query = scope.get("query_string", b"").decode("latin-1")
            location = f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}{scope['path']}/"
            return Response(
                307, b"", "text/plain", [(b"location", (location + (f"?{query}" if query else "")).encode())]
            )
        if subpath.startswith("/static/") and Path("static").is_dir():
            return files.file_response(files.file_in(Path("static"), subpath[len("/static/") :]))
        return None

    @staticmethod
    def _caller_prefix(headers: dict[str, str], base_url: str) -> str:
        """Behind the gateway, links and redirects must use the path the caller used (e.g. `latest`):
        the gateway's X-Forwarded-Prefix, else the /pub/job/<name>/<version> of the request.
        `headers`: lower-case names."""
        forwarded = headers.get("x-forwarded-prefix")
        return base_url if forwarded is None else forwarded.rstrip("/")

    @staticmethod
    def _split(scope: Scope) -> tuple[str, str]:
        raw = scope["path"]
        match = PUB_PREFIX.match(raw) if raw.startswith("/pub/") else None
        base, path = (match.group(0), raw[match.end() :]) if match else ("", raw)
        return base, (path.rstrip("/") or "/") if path != "/" else "/"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.start_loading()  # servers without lifespan support
        response = await self.respond(scope, receive=receive, send=send)
        if response is not None:
            await send_response(send, response, [])

    async def respond(
        self,
        scope: Scope,
        body: bytes | None = None,
        receive: Receive | None = None,
        send: Send | None = None,
    ) -> Response | None:
        """Answer one HTTP request: the ASGI entry above, and the wrapper's own server (serve.py)
        with the body it has already read, which skips ASGI's message passing for every call.

        Returns the response to send (tracing header included), or None when an ASGI webview has
        answered through `send` itself (only when `send` is given).
        """
        started = time.perf_counter()
        headers = _header_dict(scope)
        tracing_id = headers.get(TRACING_HEADER) or new_tracing_id()
        base_url, path = self._split(scope)
        if self._addressed_to_another_job(base_url):
            return error_response(404, f"this is job {self.job_name} {self.job_version}, not the one at {base_url}")
        base_url = self._caller_prefix(headers, base_url)
        method = scope["method"]
        endpoint = path if path in PROBES or path.startswith("/api/") else "other"
        is_call = path.startswith("/api/v1/") and path != "/api/v1/parameters"
        if endpoint not in PROBES:
            self.metrics.started(endpoint)
        try:
            if send is not None and self.webview_asgi:
                target = self._webview_target(scope)
                if target is not None and self._webview_own_answer(scope, *target) is None:
                    assert receive is not None
                    await webview.call_asgi(self.webview_app, scope, receive, send, base_url, target[1] or "/")
                    return None
            if body is None:
                assert receive is not None
                body = b"" if method in ("GET", "HEAD") else await read_body(receive, MAX_BODY_BYTES)
            request = Request(method, path, base_url, scope.get("query_string", b"").decode("latin-1"), headers, body)
            info = RequestInfo(method, path, request.query_string, headers, tracing_id)
            response = await self._route(request, info, scope)
        except HttpError as exc:
            response = error_response(exc.status, exc.message)
        except Exception as exc:  # the wrapper keeps serving whatever a handler does
            log.exception("error serving %s %s", method, path)
            response = error_response(500, f"{type(exc).__name__}: {exc}")
        response.headers.append((TRACING_HEADER_BYTES, tracing_id.encode()))
        elapsed = time.perf_counter() - started
        if endpoint not in PROBES:
            self.metrics.done(endpoint, elapsed, response.status, is_call)
        self.access_log.write(method, path, response.status, elapsed, tracing_id)
        return response

    # --- routing ------------------------------------------------------------------------------
    async def _route(self, request: Request, info: RequestInfo, scope: Scope) -> Response:
        path, method = request.path, request.method
        if path == "/live":
            return self._live()
        if path == "/ready":
            ready = self.conventions is not None
            # 503 while loading; 500 once loading has failed (it will never be ready).
            return json_response(200 if ready else 500 if self.init_error else 503, {"ready": ready})
        if path == "/health":
            return self._health()
        if path == "/metrics":
            user = self.conventions.user_metrics() if self.conventions else []
            return Response(200, self.metrics.render(user).encode(), "text/plain; version=0.0.4")
        if path == "/":
            return Response(
                307, b"", "text/plain", [(b"location", (request.base_url + self.options.home_page).encode())]
            )
        if path == "/openapi.json":
            return json_response(200, docs.openapi_document(self.conventions, request.base_url), default=str)
        if path == "/docs":
            return Response(
                200, docs.docs_page(request.base_url, self.swagger_dir is not None).encode(), "text/html; charset=utf-8"
            )
        if path.startswith("/docs/swagger-ui/") and self.swagger_dir is not None:
            response = files.file_response(files.file_in(self.swagger_dir, path[len("/docs/swagger-ui/") :]))
            response.headers.append((b"cache-control", b"public, max-age=86400"))
            return response
        conventions = self._require_loaded()
        if path == "/api/v1/perform":
            self._require_method(method, "POST")
            return await self._call(conventions.perform, request.json_object(), info)
        if path == "/api/v1/parameters":
            self._require_method(method, "GET")
            return json_response(200, docs.parameters_of(conventions.perform), default=str)
        webview_target = self._webview_target(scope)
        if webview_target is not None:
            return await self._webview(request, scope, *webview_target)
        if path.startswith("/api/v1/"):
            sub = path[len("/api/v1") :]
            handler = conventions.auxiliary_endpoints.get(sub)
            if handler is not None:
                kwargs = request.json_object() if method != "GET" else request.query()
                return await self._call(handler, kwargs, info)
            routed = endpoint_config.match(conventions.auxiliary_routes, method, sub)
            if routed is not None:
                route, path_values = routed
                kwargs = route.bind(path_values, request.query(), request.json_value)
                return await self._call(route.handler, kwargs, info)
            static = self._static(conventions, sub)
            if static is not None:
                self._require_method(method, "GET")
                return static
        raise HttpError(404, f"no endpoint {path}")

    @staticmethod
    def _require_method(method: str, expected: str) -> None:
        if method != expected and not (expected == "GET" and method == "HEAD"):
            raise HttpError(405, f"method {method} not allowed here; use {expected}")

    def _require_loaded(self) -> Conventions:
        if self.conventions is None:
            if self.init_error is not None:
                raise HttpError(500, f"job failed to initialize: {self.init_error}")
            raise HttpError(503, "job is still initializing")
        return self.conventions

    async def _call(self, function: Any, kwargs: dict[str, Any], info: RequestInfo) -> Response:
        try:
            _arguments(function).check(kwargs)
        except TypeError as exc:
            raise HttpError(400, f"failed to call a function: {exc}") from exc
        if self._limiter is None:
            self._limiter = _Limiter(self.options.max_concurrency, self.options.max_concurrency_queue)
        limiter = self._limiter
        context = contextvars.copy_context()
        context.run(request_context.set, info)
        if limiter.semaphore is not None:  # (not `async with`: two coroutine calls on every call otherwise)
            await limiter.acquire()
        try:
            if _is_async(function):
                # A coroutine runs on the event loop, as under Racetrack's runner: no thread.
                running: Any = asyncio.get_running_loop().create_task(function(**kwargs), context=context)
            else:
                running = self.executor.call(functools.partial(function, **kwargs), context)
            # A thread cannot be stopped: past the timeout the caller is answered and the
            # job's code runs on to its end, its result dropped.
            if self.options.call_timeout is None:
                result = await running
            else:
                result = await asyncio.wait_for(running, self.options.call_timeout)
        except TimeoutError as exc:
            raise HttpError(
                504, f"the job did not answer within its call_timeout of {self.options.call_timeout:g} s"
            ) from exc
        except Exception as exc:  # the job's error goes back to the caller; we keep serving
            log.exception("job raised an error")
            raise HttpError(500, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if limiter.semaphore is not None:
                limiter.semaphore.release()
        try:
            return json_response(200, result, default=to_json)
        except (TypeError, ValueError) as exc:
            raise HttpError(500, f"result is not JSON-serializable: {exc}") from exc

    def _static(self, conventions: Conventions, sub: str) -> Response | None:
        for prefix, (target, content_type) in conventions.static_endpoints.items():
            root = Path(target)
            if sub == prefix:
                if root.is_dir():
                    return files.file_response(files.file_in(root, "index.html"))
                return files.file_response(root, content_type)
            if sub.startswith(prefix + "/") and root.is_dir():
                return files.file_response(files.file_in(root, sub[len(prefix) + 1 :]))
        return None

    async def _webview(self, request: Request, scope: Scope, prefix: str, subpath: str) -> Response:
        own = self._webview_own_answer(scope, prefix, subpath)
        if own is not None:
            return own
        base_url = self._public_base_url() + webview.WEBVIEW_PREFIX
        return await webview.call_wsgi(self.webview_app, request, scope, subpath or "/", base_url, self.executor)

    def _live(self) -> Response:
        body: dict[str, Any] = {"live": self.init_error is None, "deployment_timestamp": self.deployment_timestamp}
        if self.init_error is not None:
            body["error"] = self.init_error
            return json_response(500, body)
        return json_response(200, body)

    def _health(self) -> Response:
        live = self.init_error is None
        ready = self.conventions is not None
        return json_response(
            200 if live else 500,
            {
                "service": "job",
                "job_name": self.job_name,
                "job_version": self.job_version,
                "git_version": os.environ.get("GIT_VERSION", ""),
                "deployed_by_racetrack_version": os.environ.get("DEPLOYED_BY_RACETRACK_VERSION", ""),
                "job_type_version": os.environ.get("JOB_TYPE_VERSION", ""),
                "deployment_timestamp": self.deployment_timestamp,
                "live": live,
                "ready": ready,
                "status": "pass" if live and ready else "fail",
                "error": self.init_error,
            },
        )
