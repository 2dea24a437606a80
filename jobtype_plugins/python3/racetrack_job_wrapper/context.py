"""The request being served, for job code: `self.request_context.get()` (as Racetrack's wrapper offers)."""

from __future__ import annotations

import contextvars
import dataclasses


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lower-case names
    tracing_id: str

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


request_context: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("request_context", default=None)


def current_tracing_id() -> str | None:
    info = request_context.get()
    return info.tracing_id if info else None
