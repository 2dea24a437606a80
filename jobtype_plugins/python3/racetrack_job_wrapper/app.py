"""The job's WSGI application: perform, parameters and health endpoints, at `/` and under the pub path.

The entrypoint loads in a background thread, so `/live` answers at once; `/ready` turns 200
once loading succeeded; a loading error makes `/live` answer 500 with the error, which the
daemon reports as the reason the deployment failed.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from racetrack_job_wrapper.entrypoint import load_entrypoint

StartResponse = Callable[..., Any]
PUB_PREFIX = re.compile(r"^/pub/(?:job|fatman)/[^/]+/[^/]+")
MAX_BODY_BYTES = 256 * 1024**2


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JobApp:
    def __init__(self, entrypoint_path: str, entrypoint_class: str | None) -> None:
        self.entrypoint_path = entrypoint_path
        self.entrypoint_class = entrypoint_class
        self.entrypoint: Any = None
        self.init_error: str | None = None
        self.job_name = os.environ.get("JOB_NAME", "")
        self.job_version = os.environ.get("JOB_VERSION", "")
        self.deployment_timestamp = int(os.environ.get("JOB_DEPLOYMENT_TIMESTAMP", "0") or 0)
        self._loading: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any]], tuple[int, Any]]] = {
            ("GET", "/live"): self._live,
            ("GET", "/ready"): self._ready,
            ("GET", "/health"): self._health,
            ("GET", "/"): self._index,
            ("POST", "/api/v1/perform"): self._perform,
            ("GET", "/api/v1/parameters"): self._parameters,
        }

    # --- start-up -----------------------------------------------------------------------------
    def start_loading(self) -> None:
        if self._loading is None:
            self._loading = threading.Thread(target=self._load, name="entrypoint-init", daemon=True)
            self._loading.start()

    def _load(self) -> None:
        try:
            self.entrypoint = load_entrypoint(self.entrypoint_path, self.entrypoint_class)
        except BaseException as exc:  # noqa: BLE001 (any failure in user code must be reported, not crash)
            self.init_error = f"{type(exc).__name__}: {exc}"
            print(f"job initialization failed: {self.init_error}", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"job {self.job_name} {self.job_version} is ready", file=sys.stderr)

    # --- WSGI ---------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self.start_loading()  # harmless when already started; covers servers without the hook
        method = environ["REQUEST_METHOD"].upper()
        path = PUB_PREFIX.sub("", environ.get("PATH_INFO", "")) or "/"
        if path != "/":
            path = path.rstrip("/")
        handler = self._routes.get((method, path))
        try:
            if handler is None:
                if any(p == path for (_, p) in self._routes):
                    raise HttpError(405, f"method {method} not allowed on {path}")
                raise HttpError(404, f"no endpoint {path}")
            status, payload = handler(environ)
        except HttpError as exc:
            status, payload = exc.status, {"error": exc.message}
        try:
            body = json.dumps(payload, default=_json_default).encode()
        except (TypeError, ValueError) as exc:
            status = 500
            body = json.dumps({"error": f"result is not JSON-serializable: {exc}"}).encode()
        start_response(f"{status} {_REASONS.get(status, 'Status')}", [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ])
        return [body]

    # --- endpoints ----------------------------------------------------------------------------
    def _live(self, environ: dict[str, Any]) -> tuple[int, Any]:
        body = {"live": self.init_error is None, "deployment_timestamp": self.deployment_timestamp}
        if self.init_error is not None:
            body["error"] = self.init_error
            return 500, body
        return 200, body

    def _ready(self, environ: dict[str, Any]) -> tuple[int, Any]:
        ready = self.entrypoint is not None
        return (200 if ready else 500), {"ready": ready}

    def _health(self, environ: dict[str, Any]) -> tuple[int, Any]:
        live = self.init_error is None
        ready = self.entrypoint is not None
        return (200 if live else 500), {
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
        }

    def _index(self, environ: dict[str, Any]) -> tuple[int, Any]:
        return 200, {
            "job_name": self.job_name,
            "job_version": self.job_version,
            "endpoints": sorted({f"{m} {p}" for (m, p) in self._routes}),
        }

    def _perform(self, environ: dict[str, Any]) -> tuple[int, Any]:
        entrypoint = self._require_entrypoint()
        kwargs = _read_json_object(environ)
        perform = entrypoint.perform
        try:
            inspect.signature(perform).bind(**kwargs)
        except TypeError as exc:
            raise HttpError(400, f"failed to call a function: {exc}") from exc
        try:
            return 200, perform(**kwargs)
        except Exception as exc:  # noqa: BLE001 (the job's error goes back to the caller; we keep serving)
            traceback.print_exc()
            raise HttpError(500, f"{type(exc).__name__}: {exc}") from exc

    def _parameters(self, environ: dict[str, Any]) -> tuple[int, Any]:
        entrypoint = self._require_entrypoint()
        parameters = []
        for param in inspect.signature(entrypoint.perform).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            item: dict[str, Any] = {"name": param.name}
            if param.annotation is not param.empty:
                item["type"] = getattr(param.annotation, "__name__", str(param.annotation))
            if param.default is not param.empty:
                item["default_value"] = param.default
            parameters.append(item)
        return 200, parameters

    def _require_entrypoint(self) -> Any:
        if self.entrypoint is None:
            if self.init_error is not None:
                raise HttpError(500, f"job failed to initialize: {self.init_error}")
            raise HttpError(503, "job is still initializing")
        return self.entrypoint


def _read_json_object(environ: dict[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise HttpError(400, "invalid Content-Length") from exc
    if length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise HttpError(400, "request body must be a JSON object of keyword arguments")
    return payload


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
