"""Mount the job's `webview_app(base_url)` at /api/v1/webview: a WSGI app (run in a thread) or an
ASGI app (called directly, websockets included).

The paths a webview app sees are those Racetrack's runner gives it, so that apps written for
Racetrack (whose samples route `base_url + '/postme'`) work unchanged. `base_url` is the job's
/pub/job/<name>/<version>/api/v1/webview. For a request at <prefix>/api/v1/webview/<rest>
(<prefix> being /pub/job/<name>/<version>, or nothing when the job is called at its root; behind
racetrackd's gateway the X-Forwarded-Prefix it sends, the path the caller used, e.g. with `latest`,
so that links the app builds from SCRIPT_NAME or root_path stay on it):

- a WSGI app gets SCRIPT_NAME <prefix>/api/v1/webview and PATH_INFO `base_url` + /<rest>, whatever
  the prefix (so url_for() answers SCRIPT_NAME + PATH_INFO, as under Racetrack);
- an ASGI app gets root_path <prefix>/api/v1/webview and path the whole request path;
- ./static of the job is served at /api/v1/webview/static/ before either app sees the request;
- <prefix>/api/v1/webview without the slash is the app's root, except at the job's root, where it
  is redirected (307) to the same URL with the slash.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import re
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from racetrack_job_wrapper.http import Receive, Request, Response, Scope, Send

WEBVIEW_PREFIX = "/api/v1/webview"
# PATH_INFO that already names a job's path (/pub/job/<name>/<version>/<rest>, as url_for() builds
# it from the SCRIPT_NAME and PATH_INFO given) is moved under base_url: base_url + /<rest>.
_UNDER_A_JOB = re.compile(r"^/pub/job/(.+?)/(.+?)/(.*)$")
_A_JOBS_ROOT = re.compile(r"^/pub/job/(.+?)/(.+?)$")


def wsgi_path_info(subpath: str, base_url: str) -> str:
    """PATH_INFO for the path below /api/v1/webview (`subpath`, starting with /), as Racetrack's runner gives it."""
    under_a_job = _UNDER_A_JOB.match(subpath)
    if under_a_job:
        return f"{base_url}/{under_a_job.group(3)}"
    if _A_JOBS_ROOT.match(subpath):
        return f"{base_url}/"
    return subpath if subpath.startswith(base_url) else base_url + subpath


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


async def call_asgi(app: Any, scope: Scope, receive: Receive, send: Send, prefix: str, subpath: str) -> None:
    """Call an ASGI webview for <prefix>/api/v1/webview<subpath> (subpath "/" for its root)."""
    inner = dict(scope)
    mount = prefix + WEBVIEW_PREFIX
    inner["root_path"] = scope.get("root_path", "") + mount
    inner["path"] = mount + subpath
    inner["raw_path"] = inner["path"].encode()
    await app(inner, receive, send)


async def call_wsgi(
    app: Callable[..., Any], request: Request, scope: Scope, subpath: str, base_url: str, executor: Executor
) -> Response:
    """Run a WSGI app for one buffered request (at /api/v1/webview<subpath>) in a worker thread."""
    path_info = wsgi_path_info(subpath, base_url)
    environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": request.base_url + WEBVIEW_PREFIX,
        "PATH_INFO": path_info,
        "REQUEST_URI": path_info,
        "RAW_URI": path_info,
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
