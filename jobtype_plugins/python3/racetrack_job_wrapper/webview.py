"""Mount the job's `webview_app(base_url)` at /api/v1/webview: a WSGI app (run in a thread) or an
ASGI app (called directly, websockets included)."""

from __future__ import annotations

import asyncio
import inspect
import io
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from racetrack_job_wrapper.http import Receive, Request, Response, Scope, Send

WEBVIEW_PREFIX = "/api/v1/webview"


def is_asgi(app: Any) -> bool:
    """ASGI apps take (scope, receive, send); WSGI apps take (environ, start_response)."""
    try:
        parameters = [
            p
            for p in inspect.signature(app).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(parameters) == 3


async def call_asgi(app: Any, scope: Scope, receive: Receive, send: Send, base_url: str, subpath: str) -> None:
    inner = dict(scope)
    inner["root_path"] = scope.get("root_path", "") + base_url + WEBVIEW_PREFIX
    inner["path"] = subpath or "/"
    inner["raw_path"] = inner["path"].encode()
    await app(inner, receive, send)


async def call_wsgi(
    app: Callable[..., Any], request: Request, scope: Scope, subpath: str, executor: Executor
) -> Response:
    """Run a WSGI app for one buffered request in a worker thread."""
    environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": request.base_url + WEBVIEW_PREFIX,
        "PATH_INFO": subpath or "/",
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": (scope.get("server") or ("localhost", 7000))[0],
        "SERVER_PORT": str((scope.get("server") or ("localhost", 7000))[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": (scope.get("client") or ("", 0))[0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(request.body)),
        "CONTENT_TYPE": request.headers.get("content-type", ""),
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.upper().replace("-", "_")
        if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            environ[key] = value

    def run() -> Response:
        captured: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = headers
            return lambda data: None

        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close:
                close()
        headers = [
            (k.lower().encode(), v.encode())
            for k, v in captured.get("headers", [])
            if k.lower() not in ("content-length", "content-type")
        ]
        content_type = next((v for k, v in captured.get("headers", []) if k.lower() == "content-type"), "text/html")
        return Response(captured.get("status", 500), body, content_type, headers)

    return await asyncio.get_running_loop().run_in_executor(executor, run)
