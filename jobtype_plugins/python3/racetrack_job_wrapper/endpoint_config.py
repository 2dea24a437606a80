"""Racetrack's `auxiliary_endpoints_v2()` convention: endpoints declared as `EndpointConfig(path,
method, handler, other_options)`, with path templates (`/multiply/{factor}`) and parameters taken
from the path, the query string or the JSON body, as FastAPI takes them under Racetrack's runner.

Job code imports `EndpointConfig` from here (`from racetrack_job_wrapper.endpoint_config import
EndpointConfig`), as it does with Racetrack's runner. The wrapper has no FastAPI: a parameter's
source is read from its annotation's markers by their class names (`Annotated[float, Body()]`,
`Query()`, `Path()`, also as defaults), so a job using FastAPI's markers needs `fastapi` in its own
requirements, only for those markers. Without a marker, FastAPI's rules apply: a name in the path
template comes from the path, a scalar (str, int, float, bool) from the query string, anything else
(list, dict, a pydantic model) from the body. One body parameter takes the whole JSON body (unless
`Body(embed=True)`); several take the body's keys of their names. A missing or unconvertible value
is a 422 naming the parameter, as FastAPI's validation answers.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from racetrack_job_wrapper.http import HttpError

BODY, QUERY, PATH = "body", "query", "path"
_MARKERS = {"Body": BODY, "Form": BODY, "Query": QUERY, "Path": PATH}
_SCALARS = (str, int, float, bool)
_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclasses.dataclass
class EndpointConfig:
    """One auxiliary endpoint: its path below /api/v1 (with {name} fields), GET or POST, its handler,
    and the options FastAPI would take (tags, summary, description: used by the API page)."""

    path: str
    method: Any  # http.HTTPMethod, or its name
    handler: Callable[..., Any]
    other_options: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    source: str
    annotation: Any  # the type without Annotated's markers; None when not annotated
    required: bool
    default: Any
    embed: bool  # a single body parameter read from the body's key of its name


@dataclasses.dataclass(frozen=True)
class Route:
    path: str  # normalised: "/multiply/{factor}"
    method: str
    handler: Callable[..., Any]
    options: dict[str, Any]
    pattern: re.Pattern[str]
    parameters: tuple[Parameter, ...]

    def bind(self, path_values: dict[str, str], query: dict[str, str], body: Callable[[], Any]) -> dict[str, Any]:
        """The handler's keyword arguments for one request; 422 naming the first bad parameter."""
        kwargs: dict[str, Any] = {}
        body_parameters = [p for p in self.parameters if p.source == BODY]
        whole_body = len(body_parameters) == 1 and not body_parameters[0].embed
        payload: Any = body() if body_parameters else None
        for parameter in self.parameters:
            if parameter.source == PATH:
                present, raw = parameter.name in path_values, path_values.get(parameter.name)
            elif parameter.source == QUERY:
                present, raw = parameter.name in query, query.get(parameter.name)
            elif whole_body:
                present, raw = payload is not None, payload
            else:
                present = isinstance(payload, dict) and parameter.name in payload
                raw = payload.get(parameter.name) if present else None
            if not present:
                if parameter.required:
                    raise HttpError(422, f"missing {parameter.source} parameter {parameter.name!r}")
                kwargs[parameter.name] = parameter.default
                continue
            kwargs[parameter.name] = _convert(parameter, raw)
        return kwargs


def routes_of(instance: Any) -> list[Route]:
    """The routes `instance.auxiliary_endpoints_v2()` declares ([] without the method)."""
    declared = getattr(instance, "auxiliary_endpoints_v2", None)
    if not callable(declared):
        return []
    routes = []
    for config in declared() or []:
        path = getattr(config, "path", None)
        handler = getattr(config, "handler", None)
        if not isinstance(path, str) or not callable(handler):
            raise TypeError(f"auxiliary_endpoints_v2: {config!r} is not an EndpointConfig(path, method, handler)")
        method = str(getattr(config.method, "value", config.method)).upper()
        if method not in ("GET", "POST"):
            raise ValueError(f"auxiliary endpoint {path}: method {method} is not GET or POST")
        path = "/" + path.strip("/")
        fields = _TEMPLATE_FIELD.findall(path)
        regex = "".join(
            f"(?P<{part[1:-1]}>[^/]+)" if _TEMPLATE_FIELD.fullmatch(part) else re.escape(part)
            for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", path)
        )
        routes.append(
            Route(
                path=path,
                method=method,
                handler=handler,
                options=dict(getattr(config, "other_options", None) or {}),
                pattern=re.compile(regex + r"\Z"),
                parameters=tuple(_parameters(handler, set(fields), path)),
            )
        )
    return routes


def match(routes: list[Route], method: str, sub: str) -> tuple[Route, dict[str, str]] | None:
    """The route for `method` at `sub` (the path below /api/v1) and its path values; 405 when only
    another method is declared there; None when no route has that path."""
    allowed = []
    for route in routes:
        found = route.pattern.match(sub)
        if found is None:
            continue
        if route.method == method or (route.method == "GET" and method == "HEAD"):
            return route, found.groupdict()
        allowed.append(route.method)
    if allowed:
        raise HttpError(405, f"method {method} not allowed here; use {' or '.join(sorted(set(allowed)))}")
    return None


def _parameters(handler: Callable[..., Any], path_fields: set[str], path: str) -> list[Parameter]:
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except (NameError, TypeError, AttributeError):  # an unresolvable forward reference: the raw annotations
        hints = {}
    parameters = []
    for name, declared in inspect.signature(handler).parameters.items():
        if declared.kind in (declared.VAR_POSITIONAL, declared.VAR_KEYWORD):
            continue
        annotation = hints.get(name, declared.annotation)
        markers: list[Any] = []
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *markers = typing.get_args(annotation)
        default = declared.default
        if default is not declared.empty and _marker_source(default):  # old style: x: float = Body(...)
            markers.append(default)
            default = _marker_default(default)
        source = next((s for s in map(_marker_source, markers) if s), None)
        if source is None:
            if name in path_fields:
                source = PATH
            elif annotation in (declared.empty, None, *_SCALARS) or _optional_scalar(annotation):
                source = QUERY
            else:
                source = BODY
        if source == PATH and name not in path_fields:
            raise ValueError(f"auxiliary endpoint {path}: parameter {name!r} is not a field of the path")
        marker = next((m for m in markers if _marker_source(m)), None)
        if marker is not None and default is declared.empty:
            default = _marker_default(marker)
        parameters.append(
            Parameter(
                name=name,
                source=source,
                annotation=None if annotation is declared.empty else annotation,
                required=default is declared.empty,
                default=None if default is declared.empty else default,
                embed=bool(getattr(marker, "embed", False)),
            )
        )
    return parameters


def _marker_source(value: Any) -> str | None:
    for cls in type(value).__mro__:
        if cls.__name__ in _MARKERS and cls.__module__.startswith("fastapi"):
            return _MARKERS[cls.__name__]
    return None


def _marker_default(marker: Any) -> Any:
    """A FastAPI marker's default: inspect.Parameter.empty for `...` or pydantic's 'undefined'."""
    default = getattr(marker, "default", inspect.Parameter.empty)
    if default is Ellipsis or type(default).__name__ == "PydanticUndefinedType":
        return inspect.Parameter.empty
    return default


def _optional_scalar(annotation: Any) -> bool:
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
        len(arguments) == 1 and arguments[0] in _SCALARS
    )


def _convert(parameter: Parameter, raw: Any) -> Any:
    annotation = parameter.annotation
    if _optional_scalar(annotation):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    try:
        if annotation is bool and isinstance(raw, str):
            if raw.lower() not in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                raise ValueError(f"{raw!r} is not a boolean")
            return raw.lower() in ("true", "1", "yes", "on")
        if annotation in (int, float) and not isinstance(raw, bool):
            value = annotation(raw)
            if annotation is int and isinstance(raw, float) and raw != value:
                raise ValueError(f"{raw!r} is not an integer")
            return value
        if annotation is str and not isinstance(raw, str):
            raise ValueError(f"{raw!r} is not a string")
        validate = getattr(annotation, "model_validate", None)  # a pydantic model from the job's requirements
        if callable(validate):
            return validate(raw)
    except (TypeError, ValueError) as exc:
        raise HttpError(422, f"{parameter.source} parameter {parameter.name!r}: {exc}") from exc
    except Exception as exc:  # pydantic's ValidationError: the job's own library, not ours to import
        raise HttpError(422, f"{parameter.source} parameter {parameter.name!r}: {exc}") from exc
    return raw
