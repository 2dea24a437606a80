"""The job's OpenAPI document and its interactive API page (Swagger UI assets from the image)."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from racetrack_job_wrapper.endpoint_config import Route
from racetrack_job_wrapper.entrypoint import Conventions

JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}


def swagger_ui_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-not-found]  # only in the image
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if path.is_dir() else None


def parameters_of(function: Any) -> list[dict[str, Any]]:
    result = []
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        item: dict[str, Any] = {"name": param.name}
        if param.annotation is not param.empty:
            item["type"] = getattr(param.annotation, "__name__", str(param.annotation))
        if param.default is not param.empty:
            item["default_value"] = param.default
        result.append(item)
    return result


def _schema(function: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop: dict[str, Any] = {}
        if param.annotation in JSON_TYPES:
            prop["type"] = JSON_TYPES[param.annotation]
        if param.default is param.empty:
            required.append(param.name)
        else:
            try:
                json.dumps(param.default)
                prop["default"] = param.default
            except (TypeError, ValueError):
                pass
        properties[param.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _json_call(summary: str, function: Any, example: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": _schema(function)}
    if example is not None:
        content["example"] = example
    return {
        "summary": summary,
        "description": inspect.getdoc(function) or "",
        "requestBody": {"required": False, "content": {"application/json": content}},
        "responses": {
            "200": {"description": "the result, as JSON"},
            "400": {"description": "wrong arguments"},
            "500": {"description": "the job raised an error"},
        },
    }


def _route_operation(route: Route, example: Any) -> dict[str, Any]:
    """An auxiliary_endpoints_v2 route: path and query parameters, and the JSON body when it takes one."""
    operation: dict[str, Any] = {
        "summary": route.options.get("summary") or f"Auxiliary endpoint {route.path}",
        "description": route.options.get("description") or inspect.getdoc(route.handler) or "",
        "responses": {
            "200": {"description": "the result, as JSON"},
            "422": {"description": "a missing or invalid parameter"},
            "500": {"description": "the job raised an error"},
        },
    }
    if isinstance(route.options.get("tags"), list):
        operation["tags"] = [str(tag) for tag in route.options["tags"]]
    operation["parameters"] = [
        {
            "name": p.name,
            "in": p.source,
            "required": p.required or p.source == "path",
            "schema": {"type": JSON_TYPES[p.annotation]} if p.annotation in JSON_TYPES else {},
        }
        for p in route.parameters
        if p.source in ("path", "query")
    ]
    body = [p for p in route.parameters if p.source == "body"]
    if body:
        content: dict[str, Any] = {}
        if example is not None:
            content["example"] = example
        operation["requestBody"] = {"required": any(p.required for p in body), "content": {"application/json": content}}
    return operation


def openapi_document(conventions: Conventions | None, base_url: str) -> dict[str, Any]:
    job_name = os.environ.get("JOB_NAME", "job")
    job_version = os.environ.get("JOB_VERSION", "0.0.0")
    paths: dict[str, Any] = {}
    if conventions is not None:
        examples = conventions.input_examples()
        paths["/api/v1/perform"] = {"post": _json_call("Call the job", conventions.perform, examples.get("/perform"))}
        paths["/api/v1/parameters"] = {
            "get": {"summary": "perform()'s parameters", "responses": {"200": {"description": "list"}}}
        }
        for path, handler in conventions.auxiliary_endpoints.items():
            paths[f"/api/v1{path}"] = {"post": _json_call(f"Auxiliary endpoint {path}", handler, examples.get(path))}
        for route in conventions.auxiliary_routes:
            operation = _route_operation(route, examples.get(route.path))
            paths.setdefault(f"/api/v1{route.path}", {})[route.method.lower()] = operation
        for path in conventions.static_endpoints:
            paths[f"/api/v1{path}"] = {
                "get": {"summary": f"Static file {path}", "responses": {"200": {"description": "the file"}}}
            }
        if conventions.webview_factory is not None:
            paths["/api/v1/webview/"] = {
                "get": {"summary": "The job's web view", "responses": {"200": {"description": "HTML"}}}
            }
    for probe in ("/health", "/live", "/ready", "/metrics"):
        paths[probe] = {
            "get": {"summary": probe.strip("/"), "security": [], "responses": {"200": {"description": "OK"}}}
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{job_name} {job_version}",
            "version": job_version,
            "description": (inspect.getdoc(conventions.perform) if conventions else None) or f"Job {job_name}",
        },
        "servers": [{"url": base_url or "/"}],
        "components": {
            "securitySchemes": {"RacetrackAuth": {"type": "apiKey", "in": "header", "name": "X-Racetrack-Auth"}}
        },
        "security": [{"RacetrackAuth": []}],
        "paths": paths,
    }


def docs_page(base_url: str, have_assets: bool) -> str:
    job = f"{os.environ.get('JOB_NAME', 'job')} {os.environ.get('JOB_VERSION', '')}".strip()
    if not have_assets:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{job}</title></head><body>"
            f"<h1>{job}</h1><p>The OpenAPI document: <a href='{base_url}/openapi.json'>openapi.json</a></p></body></html>"
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{job} - API</title>
<link rel="stylesheet" href="{base_url}/docs/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{base_url}/docs/swagger-ui/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "{base_url}/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});</script>
</body></html>"""
