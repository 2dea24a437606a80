"""The gateway's forwarding: one streamed hop from the caller to the job's container.

Request and response bodies are streamed (never held whole in memory); hop-by-hop headers
are dropped; tracing and forwarding headers are added. Connections to jobs are pooled.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from flask import Request, Response

from racetrackd import naming
from racetrackd.db import Job
from racetrackd.errors import UpstreamError

TRACING_HEADER = "X-Request-Tracing-Id"
CALLER_HEADER = "X-Caller-Name"
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
}
CHUNK_SIZE = 64 * 1024


class Gateway:
    def __init__(self, timeout: float | None = None) -> None:
        self._pool = urllib3.PoolManager(num_pools=64, maxsize=32, block=False, retries=False)
        self._timeout = urllib3.Timeout(connect=5.0, read=timeout)
        self._balancer = LeastOutstanding()

    def forward(self, request: Request, job: Job, path: str, caller: str | None, public_prefix: str) -> Response:
        """Forward to the job; `public_prefix` is the path the caller used (e.g. with `latest`)."""
        tracing_id = request.headers.get(TRACING_HEADER) or str(uuid.uuid4())
        target_path = naming.pub_path(job.name, job.version) + "/" + path.lstrip("/")
        query = request.query_string.decode("latin-1")
        address = self._balancer.acquire(job.ready_addresses())
        url = f"http://{address}{target_path}" + (f"?{query}" if query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update({
            TRACING_HEADER: tracing_id,
            "X-Forwarded-For": _forwarded_for(request),
            "X-Forwarded-Host": request.host,
            "X-Forwarded-Proto": request.scheme,
            "X-Forwarded-Prefix": public_prefix,
        })
        if caller:
            headers[CALLER_HEADER] = caller
        body, chunked = _request_body(request, headers)
        try:
            upstream = self._pool.urlopen(
                request.method, url, body=body, headers=headers, chunked=chunked, redirect=False,
                preload_content=False, decode_content=False, timeout=self._timeout,
            )
        except urllib3.exceptions.HTTPError as exc:
            self._balancer.release(address)
            raise UpstreamError(
                f"job {job.name} {job.version} is unreachable: {_reason(exc)}",
                hint=f"job status: {job.status}",
            ) from exc
        skipped = HOP_BY_HOP | {TRACING_HEADER.lower()}  # ours is added once below
        response_headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in skipped]
        if upstream.headers.get("Content-Length") is not None and upstream.headers.get("Transfer-Encoding") is None:
            response_headers.append(("Content-Length", upstream.headers["Content-Length"]))
        response_headers.append((TRACING_HEADER, tracing_id))
        return Response(_stream(upstream, lambda: self._balancer.release(address)), status=upstream.status,
                        headers=response_headers, direct_passthrough=True)


def _request_body(request: Request, headers: dict[str, Any]) -> tuple[Any, bool]:
    if request.content_length:
        headers["Content-Length"] = str(request.content_length)
        return request.stream, False
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return request.stream, True
    return None, False


def _stream(upstream: urllib3.BaseHTTPResponse, done: Callable[[], None]) -> Iterator[bytes]:
    try:
        yield from upstream.stream(CHUNK_SIZE, decode_content=False)
    finally:
        upstream.release_conn()
        done()


class LeastOutstanding:
    """Pick the replica with the fewest calls in flight from this process (ties: round robin)."""

    def __init__(self) -> None:
        self._outstanding: dict[str, int] = defaultdict(int)
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def acquire(self, addresses: list[str]) -> str:
        with self._lock:
            start = next(self._turn) % len(addresses)
            rotated = addresses[start:] + addresses[:start]
            chosen = min(rotated, key=lambda address: self._outstanding[address])
            self._outstanding[chosen] += 1
            return chosen

    def release(self, address: str) -> None:
        with self._lock:
            self._outstanding[address] -= 1
            if self._outstanding[address] <= 0:
                del self._outstanding[address]


def _forwarded_for(request: Request) -> str:
    previous = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    return f"{previous}, {client}" if previous else client


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    if "Connection refused" in text:
        return "connection refused (the job may be starting or has died)"
    if isinstance(exc, (urllib3.exceptions.ProtocolError,)):
        return "connection broken (the job may have died)"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return text
