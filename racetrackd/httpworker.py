"""The daemon's gunicorn worker: job calls (`/pub`) served by a lean HTTP/1.1 protocol of our own.

Why: through gunicorn's asgi worker the daemon spent 178 µs of CPU per gateway call against nginx's
38 µs (docs/benchmarks.md, "Gateway"); most of it was gunicorn's per-request machinery (its parser,
scope and receive/send objects, a task and a queue per request) and one send(2) per ASGI message.
Here a connection whose first request is for `/pub` is parsed by httptools (llhttp) and each request
is handed to the same ASGI app (racetrackd.asgi.Daemon) with a plain receive/send pair; the answer's
head and its body go out in one write when the body comes in one message (the gateway's usual small
answer), with a Content-Length instead of chunked framing when the app gave none.

Everything else keeps gunicorn's own protocol, unchanged: a connection whose first request is not for
`/pub` (the CLI, the dashboard, probes) is handed to gunicorn's `ASGIProtocol` with the bytes read so
far, and so is a WebSocket upgrade (its head rebuilt from what was parsed). Gunicorn keeps the master
(process management, reload, graceful shutdown) and the worker's life cycle (lifespan, heartbeat).

What this protocol keeps of HTTP/1.1: keep-alive (idle connections closed after `--keep-alive` s),
pipelining (answered in order, reading paused while a request waits), HEAD (no body), `Expect:
100-continue` (answered when the app first reads the body), chunked and streamed request bodies
(reading paused past `BODY_HIGH_WATER` bytes not yet taken), write flow control (a send waits while
the client is slow), gunicorn's limits on the request line, header count and header size (414/431),
a client that goes away (`http.disconnect`; a send raises; the app's task is cancelled after a grace
period when it does not notice), and a graceful stop (idle connections closed, calls in flight
finished, then closed).
"""

from __future__ import annotations

import asyncio
import collections
import http
import os
import time
from typing import Any

import httptools
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers.gasgi import ASGIWorker

_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in http.HTTPStatus
}
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_METHODS: dict[bytes, str] = {}
# Request bytes held for the app before reading from the client pauses (an upload is never held whole).
BODY_HIGH_WATER = 256 * 1024
# The longest first line read before the connection is given to gunicorn anyway (which refuses it).
PEEK_LIMIT = 8192
# An app still running this long after its client went (it never sent or read again) is cancelled,
# freeing what it holds (an upstream connection to a job); gunicorn's asgi_disconnect_grace_period.
DISCONNECT_GRACE_SECONDS = 3.0


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


def is_gateway_target(target: bytes) -> bool:
    """Whether a request target is the gateway's (`/pub`, `/pub/...`, `/pub?...`)."""
    return target.startswith(b"/pub") and (len(target) == 4 or target[4:5] in (b"/", b"?"))


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.header = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = b"date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode() + b"\r\n"
        return self.header


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Body:
    """A request body on its way to the app while it still arrives: chunks in, `next` out."""

    __slots__ = ("connection", "chunks", "waiting", "complete", "gone", "abandoned", "arrived")

    def __init__(self, connection: PubConnection) -> None:
        self.connection = connection
        self.chunks: collections.deque[bytes] = collections.deque()
        self.waiting = 0
        self.complete = False
        self.gone = False
        self.abandoned = False  # the exchange ended first: the rest is read and dropped
        self.arrived: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        if self.abandoned:
            return
        self.chunks.append(chunk)
        self.waiting += len(chunk)
        self._wake()
        if self.waiting > BODY_HIGH_WATER:
            self.connection.pause_reading_for_body()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def disconnect(self) -> None:
        self.gone = True
        self._wake()

    async def next(self) -> tuple[bytes, bool] | None:
        """The body read so far and whether more follows; None once the client has gone."""
        while not self.chunks and not self.complete:
            if self.gone:
                return None
            self.arrived = asyncio.get_running_loop().create_future()
            await self.arrived
        chunk = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.waiting = 0
        self.connection.resume_reading_for_body()
        return chunk, not self.complete

    def abandon(self) -> None:
        self.abandoned = True
        self.chunks.clear()
        self.waiting = 0
        self.connection.resume_reading_for_body()

    def _wake(self) -> None:
        arrived, self.arrived = self.arrived, None
        if arrived is not None and not arrived.done():
            arrived.set_result(None)


class _Request:
    __slots__ = ("method", "target", "headers", "keep_alive", "http_version", "body", "expect_continue")

    def __init__(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool, version: str
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.http_version = version
        self.body: _Body | None = None
        self.expect_continue = False


class PubConnection(asyncio.Protocol):
    """One client connection: parses requests and answers them one at a time, in order.

    Until the first request line has arrived the connection is undecided; then it is either served
    here (a `/pub` target) or handed to gunicorn's protocol."""

    def __init__(self, worker: PubWorker) -> None:
        self.worker = worker
        self.app = worker.asgi
        self.transport: Any = None
        self.parser: httptools.HttpRequestParser | None = None
        self.peeked = b""
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.current: _Request | None = None  # the request being parsed
        self.busy = False  # a request is being answered
        self.pipeline: collections.deque[_Request] = collections.deque()
        self.handoff: bytes | None = None  # an upgrade's bytes, for gunicorn once the answers before it are out
        self.refusal: tuple[int, str] | None = None  # a malformed request's answer, after those before it
        self.trusted = False  # a proxy gunicorn trusts (forwarded_allow_ips): it may say the scheme was https
        self.reading_paused = False  # a pipelined request waits (or an upgrade does)
        self.body_paused = False  # the app has not taken what waits of a body
        self.writing_paused: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.last_active = 0.0
        self.counted = False

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.last_active = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.counted:
            self.counted = False
            self.worker.nr_conns -= 1
            self.worker.connections.discard(self)
        for request in (self.current, *self.pipeline):
            if request is not None and request.body is not None:
                request.body.disconnect()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        self.resume_writing()
        if self.task is not None and not self.task.done():
            self.task.get_loop().call_later(DISCONNECT_GRACE_SECONDS, self.task.cancel)

    def pause_writing(self) -> None:
        if self.writing_paused is None:
            self.writing_paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self.writing_paused = self.writing_paused, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self.peeked += data
            line_end = self.peeked.find(b"\r\n")
            if line_end < 0 and len(self.peeked) < PEEK_LIMIT:
                return
            parts = self.peeked[: max(line_end, 0)].split(b" ")
            if len(parts) != 3 or not is_gateway_target(parts[1]):
                self._hand_to_gunicorn(self.peeked)
                return
            data, self.peeked = self.peeked, b""
            self.parser = httptools.HttpRequestParser(self)
            self.client = _address(self.transport.get_extra_info("peername"))
            self.server = _address(self.transport.get_extra_info("sockname"))
            self.trusted = self.worker.trusts(self.client)
            self.counted = True
            self.worker.nr_conns += 1
            self.worker.connections.add(self)
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :] if upgrade.args else b"")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.message)
            else:
                self.worker.log.exception("error parsing a request")
                self._refuse(400, "malformed HTTP request")
        except httptools.HttpParserError:
            self._refuse(400, "malformed HTTP request")

    # --- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        limit = self.worker.cfg.limit_request_line
        if limit and len(self.url) > limit:
            raise _Refused(414, f"request line longer than {limit} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        cfg = self.worker.cfg
        if cfg.limit_request_field_size and len(name) + len(value) + 2 > cfg.limit_request_field_size:
            raise _Refused(431, f"a request header is longer than {cfg.limit_request_field_size} bytes")
        if cfg.limit_request_fields and len(self.headers) >= cfg.limit_request_fields:
            raise _Refused(431, f"more than {cfg.limit_request_fields} request headers")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        if self.parser.should_upgrade():
            return  # handed to gunicorn by _upgrade()
        raw_method = self.parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS.setdefault(raw_method, raw_method.decode("latin-1"))
        request = _Request(
            method, self.url, self.headers, self.parser.should_keep_alive(), self.parser.get_http_version()
        )
        request.body = _Body(self)
        for name, value in self.headers:
            if name == b"expect" and value.lower() == b"100-continue":
                request.expect_continue = True
        self.current = request
        if self.busy or self.handoff is not None:
            self.pipeline.append(request)  # answered in its turn; its body is held meanwhile
            if not self.reading_paused:  # a pipelining client: read no more until we catch up
                self.reading_paused = True
                self.transport.pause_reading()
        else:
            self._start(request)

    def on_body(self, body: bytes) -> None:
        if self.current is not None and self.current.body is not None:
            self.current.body.feed(body)

    def on_message_complete(self) -> None:
        if self.current is not None and self.current.body is not None:
            self.current.body.finish()
        self.current = None

    def pause_reading_for_body(self) -> None:
        if not self.body_paused and not self.closed:
            self.body_paused = True
            if not self.reading_paused:
                self.transport.pause_reading()

    def resume_reading_for_body(self) -> None:
        if self.body_paused and not self.closed:
            self.body_paused = False
            if not self.reading_paused:
                self.transport.resume_reading()

    # --- answering ------------------------------------------------------------------------------
    def _start(self, request: _Request) -> None:
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._answer(request))

    def _scope(self, request: _Request) -> dict[str, Any]:
        target = request.target
        if target[:1] != b"/":  # absolute-form (a proxy's request line): only the path counts
            parsed = httptools.parse_url(target)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        else:
            raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            from urllib.parse import unquote

            path = unquote(path)
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": self.worker.scheme(request.headers) if self.trusted else "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": self.client,
            "server": self.server,
            "state": self.worker.state.copy(),  # as gunicorn: a shallow copy of the lifespan state per request
        }

    async def _answer(self, request: _Request) -> None:
        body = request.body
        assert body is not None
        keep_alive = request.keep_alive
        state = {"body_given": False, "started": False, "finished": False}
        held: list[bytes] = []  # the response head, written with the first part of the body
        chunked = bodiless = False
        transport = self.transport

        async def receive() -> dict[str, Any]:
            if not state["body_given"]:
                if request.expect_continue and not body.complete and not state["started"] and not self.closed:
                    request.expect_continue = False
                    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                part = await body.next()
                if part is None:
                    return {"type": "http.disconnect"}
                data, more = part
                state["body_given"] = not more
                return {"type": "http.request", "body": data, "more_body": more}
            if self.lost is None:
                self.lost = asyncio.get_running_loop().create_future()
            if not self.closed:
                await self.lost
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal keep_alive, chunked, bodiless
            if self.closed:
                raise ConnectionResetError("the client has gone")
            kind = message["type"]
            if kind == "http.response.start":
                if state["started"]:
                    raise RuntimeError("http.response.start sent twice")
                state["started"] = True
                status = int(message["status"])
                bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
                held.append(_status_line(status))
                held.append(self.worker.clock.date())
                has_length = False
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-length":
                        has_length = True
                    held.append(b"%s: %s\r\n" % (name, value))
                if not has_length and not bodiless:
                    chunked = True  # unless the whole body comes in the first message: see below
                if not body.complete:
                    keep_alive = False  # answering before the body is all in: see the end of the exchange
                if self.worker.stopping:
                    keep_alive = False
                return
            if kind != "http.response.body":
                raise RuntimeError(f"unexpected ASGI message {kind!r}")
            if not state["started"] or state["finished"]:
                raise RuntimeError("http.response.body outside a response")
            data = message.get("body", b"")
            more = message.get("more_body", False)
            out: list[bytes] = held[:]
            if held:
                held.clear()
                if chunked and not more:  # the whole body in one message: a length, not chunks
                    chunked = False
                    if not bodiless:
                        out.append(b"content-length: %d\r\n" % len(data))
                if chunked and request.http_version == "1.0":  # no chunks in HTTP/1.0: the close ends the body
                    chunked = False
                    keep_alive = False
                elif chunked:
                    out.append(b"transfer-encoding: chunked\r\n")
                if not keep_alive:
                    out.append(b"connection: close\r\n")
                elif request.http_version == "1.0":
                    out.append(b"connection: keep-alive\r\n")
                out.append(b"\r\n")
            if not bodiless:
                if chunked:
                    if data:
                        out += (b"%x\r\n" % len(data), data, b"\r\n")
                    if not more:
                        out.append(b"0\r\n\r\n")
                elif data:
                    out.append(data)
            if not more:
                state["finished"] = True
            if out:
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            if self.writing_paused is not None:
                await self.writing_paused

        try:
            await self.app(self._scope(request), receive, send)
        except asyncio.CancelledError:
            keep_alive = False  # cancelled once its client had gone
        except Exception:  # the server keeps serving whatever the app does
            self.worker.log.exception("error answering %s %s", request.method, request.target[:200])
            if not state["started"] and not self.closed:
                self._write_error(500, "internal server error")
                state["started"] = state["finished"] = True
        if not state["started"] and not self.closed:
            self._write_error(500, "the application sent no answer")
            state["finished"] = True
        elif not state["finished"]:
            keep_alive = False  # an answer cut short: the client must not read the next one from it
        if not body.complete:
            # answered before its body was all in: the rest is dropped and the connection closed after
            # this answer (the next request cannot be told apart from the unread body)
            body.abandon()
            keep_alive = False
        self._finish(keep_alive)

    def _write_error(self, status: int, message: str) -> None:
        body = b'{"error": "%s"}' % message.encode()
        self.transport.write(
            _status_line(status)
            + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )

    def _finish(self, keep_alive: bool) -> None:
        self.last_active = time.monotonic()
        self.task = None
        if self.closed:
            return
        if not keep_alive or self.worker.stopping:
            self.close()
            return
        self.busy = False
        if self.pipeline:
            self._start(self.pipeline.popleft())
            if self.pipeline or self.handoff is not None or self.refusal is not None:
                return  # more is waiting: read on once it is answered
        elif self.handoff is not None:
            self._hand_to_gunicorn(self.handoff)
            return
        elif self.refusal is not None:
            self._refuse(*self.refusal)
            return
        if self.reading_paused:  # the last request that waited is under way: its body may still be coming
            self.reading_paused = False
            if not self.body_paused:
                self.transport.resume_reading()

    def _refuse(self, status: int, message: str) -> None:
        if self.closed:
            return
        if self.busy or self.pipeline:  # the answers to the requests before it come first
            self.refusal = (status, message)
            if not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            return
        self._write_error(status, message)
        self.close()

    def _upgrade(self, rest: bytes) -> None:
        """A WebSocket (or other) upgrade: gunicorn's protocol takes the connection, from this request on.

        The request's head is rebuilt from what was parsed (names lower-cased, which HTTP allows)."""
        assert self.parser is not None
        head = [
            self.parser.get_method(),
            b" ",
            self.url,
            b" HTTP/%s\r\n" % self.parser.get_http_version().encode(),
            *(b"%s: %s\r\n" % (name, value) for name, value in self.headers),
            b"\r\n",
            rest,
        ]
        replay = b"".join(head)
        if self.busy or self.pipeline:
            self.handoff = replay  # after the answers before it
            if not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
        else:
            self._hand_to_gunicorn(replay)

    def _hand_to_gunicorn(self, replay: bytes) -> None:
        """Give this connection to gunicorn's own protocol, replaying the bytes read so far."""
        if self.counted:
            self.counted = False
            self.worker.nr_conns -= 1
            self.worker.connections.discard(self)
        protocol = ASGIProtocol(self.worker)
        transport = self.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.reading_paused or self.body_paused:
            transport.resume_reading()
        if replay:
            protocol.data_received(replay)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def close_if_idle(self, now: float, keepalive: float) -> None:
        if not self.busy and not self.closed and now - self.last_active > keepalive:
            self.close()


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


class PubWorker(ASGIWorker):
    """gunicorn's asgi worker with `PubConnection` in front of its protocol (`--worker-class
    racetrackd.httpworker.PubWorker`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[PubConnection] = set()
        self.clock = _Clock()
        self.stopping = False
        self._secure_headers = {
            name.lower().encode("latin-1"): value.lower() for name, value in self.cfg.secure_scheme_headers.items()
        }

    async def _serve(self) -> None:
        """As ASGIWorker._serve (lifespan, then serve until told to stop), with our protocol."""
        if self.cfg.is_ssl:  # TLS and ALPN are gunicorn's business: its own protocol serves everything
            await super()._serve()
            return
        if getattr(self.cfg, "asgi_lifespan", "auto") != "off":
            from gunicorn.arbiter import Arbiter
            from gunicorn.asgi.lifespan import LifespanManager, LifespanStartupFailed

            self.lifespan = LifespanManager(self.asgi, self.log, self.state)
            try:
                await self.lifespan.startup()
            except Exception as exc:
                if getattr(self.cfg, "asgi_lifespan", "auto") == "on" or isinstance(exc, LifespanStartupFailed):
                    self.log.error("ASGI lifespan startup failed: %s", exc)
                    self.lifespan = None
                    raise SystemExit(Arbiter.WORKER_BOOT_ERROR) from exc
                self.lifespan = None
        for sock in self.sockets:
            server = await self.loop.create_server(
                lambda: PubConnection(self), sock=sock.sock, reuse_address=True, start_serving=True
            )
            self.servers.append(server)
            self.log.info("ASGI server listening on %s (/pub: racetrackd.httpworker)", sock)
        keepalive = float(self.cfg.keepalive)
        try:
            while self.alive:
                self.notify()
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
                now = time.monotonic()
                for connection in list(self.connections):
                    connection.close_if_idle(now, keepalive)
                await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            pass
        await self._shutdown()

    def trusts(self, client: tuple[str, int] | None) -> bool:
        allowed = self.cfg.forwarded_allow_ips
        return "*" in allowed or (client is not None and client[0] in allowed)

    def scheme(self, headers: list[tuple[bytes, bytes]]) -> str:
        """https when a trusted proxy says so in one of gunicorn's secure_scheme_headers."""
        secure = self._secure_headers
        for name, value in headers:
            expected = secure.get(name)
            if expected is not None and value.decode("latin-1").lower() == expected:
                return "https"
        return "http"

    async def _shutdown(self) -> None:
        """Graceful stop: idle keep-alive connections close now, busy ones after their answer."""
        self.stopping = True
        for connection in list(self.connections):
            connection.close_if_idle(float("inf"), 0)
        await super()._shutdown()
