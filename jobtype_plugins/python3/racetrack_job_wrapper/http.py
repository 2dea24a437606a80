"""Minimal ASGI request/response plumbing (the wrapper carries no web framework: it must not
clash with whatever the job installs, and every microsecond here is paid on every call)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class Request:
    method: str
    path: str  # without the /pub/job/<name>/<version> prefix
    base_url: str  # that prefix ("" when called at /)
    query_string: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json_value(self) -> Any:
        """The body as any JSON value (None when empty); 400 when it is not JSON."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object of keyword arguments ({} when empty); 400 otherwise."""
        if not self.body.strip():
            return {}
        try:
            # UTF-8 as RFC 8259 wants it, without json.loads's encoding sniffing; else let it sniff.
            payload = _DECODER.decode(self.body.decode()) if self.body[:1] == b"{" else json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise HttpError(400, "request body must be a JSON object of keyword arguments")
        return payload


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)


_DECODER = json.JSONDecoder()
_ENCODERS: dict[Any, json.JSONEncoder] = {}


def json_response(status: int, payload: Any, default: Callable[[Any], Any] | None = None) -> Response:
    # One encoder per `default`, as json.dumps(default=...) would build one on every call.
    encoder = _ENCODERS.get(default)
    if encoder is None:
        encoder = _ENCODERS.setdefault(default, json.JSONEncoder(default=default))
    return Response(status, encoder.encode(payload).encode())


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(499, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_response(send: Send, response: Response, extra_headers: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
