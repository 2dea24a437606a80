"""A small in-process client for ASGI apps (the job wrapper), with werkzeug-like responses."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class _Headers(dict[str, str]):
    """Header names are case-insensitive."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())


class AsgiResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.headers = _Headers((k.decode().lower(), v.decode()) for k, v in headers)
        self.data = body

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def text(self) -> str:
        return self.data.decode()


class AsgiClient:
    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> AsgiResponse:
        return self.request("GET", path, headers=headers)

    def post(
        self,
        path: str,
        json: Any = None,
        data: bytes | str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> AsgiResponse:
        body = data.encode() if isinstance(data, str) else data
        if json is not None:
            body = _json_dumps(json)
        return self.request("POST", path, body or b"", {"content-type": content_type, **(headers or {})})

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> AsgiResponse:
        return asyncio.run(self._request(method, path, body, headers or {}))

    async def _request(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> AsgiResponse:
        url = urlsplit(target)
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": url.path,
            "raw_path": url.path.encode(),
            "query_string": url.query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 7000),
        }
        sent = False
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return AsgiResponse(status, response_headers, b"".join(chunks))


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
