"""The wrapper's own HTTP/1.1 server: httptools' parser on uvloop, calling JobApp without ASGI.

Why not a general ASGI server: each one we measured (gunicorn's asgi worker, uvicorn) spent about
three times the CPU per call of a bare httptools server before the job's code even ran, the ASGI
messages (scope, receive, send, a task per request) being most of it. Here a request is parsed by
httptools, its body buffered (the wrapper reads whole bodies anyway), and JobApp.respond() returns
the answer, written in one go. Jobs whose webview is an ASGI app get the ASGI path (a receive and a
send over the same connection, streamed and chunked answers included), and a WebSocket upgrade is
handed to gunicorn's WebSocket protocol (gunicorn stays in the wrapper's requirements for it).

Keep-alive (idle connections closed after `keepalive` s), pipelining (requests answered in order),
`Expect: 100-continue`, limits (request head 64 KiB: 431; body: 413), graceful stop on SIGTERM
(stop accepting, finish calls in flight up to `graceful_timeout`, close idle connections) and
JOB_WORKERS > 1 (forked processes sharing the listening socket) are this module's job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import http
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from racetrack_job_wrapper.http import Response

if TYPE_CHECKING:
    from racetrack_job_wrapper.app import JobApp

log = logging.getLogger("racetrack.server")

# After refusing a request (a body over the limit, say), the rest of what the client sends is read
# and dropped for up to this long before the connection closes: closing a socket with unread data
# makes the kernel send a reset, which destroys the refusal before the client (racetrackd's gateway,
# still streaming the body) reads it, and the caller would get "connection broken" instead of 413.
LINGER_SECONDS = 5.0

MAX_HEAD_BYTES = 64 * 1024
_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in http.HTTPStatus
}
_CONTENT_TYPES: dict[str, bytes] = {}
_METHODS: dict[bytes, str] = {}
_ASGI = {"version": "3.0", "spec_version": "2.4"}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


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


class _Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _BodyStream:
    """A request body on its way to an ASGI app while it still arrives: chunks in, `next` out.

    An upload to an ASGI webview (hundreds of MiB, say) reaches the app chunk by chunk, never whole
    in memory: reading from the client pauses while more than HIGH_WATER bytes wait for the app."""

    HIGH_WATER = 1 << 20

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self.chunks: collections.deque[bytes] = collections.deque()
        self.waiting = 0  # bytes given and not yet taken
        self.complete = False
        self.abandoned = False  # the exchange ended first: the rest of the body is read and dropped
        self.gone = False  # the client went before the body was all in
        self.arrived = asyncio.Event()

    def feed(self, chunk: bytes) -> None:
        if self.abandoned:
            return
        self.chunks.append(chunk)
        self.waiting += len(chunk)
        self.arrived.set()
        if self.waiting > self.HIGH_WATER:
            self.connection.pause_reading_for_body()

    def finish(self) -> None:
        self.complete = True
        self.arrived.set()

    def disconnect(self) -> None:
        self.gone = True
        self.arrived.set()

    async def next(self) -> tuple[bytes, bool] | None:
        """The next part of the body and whether more follows; None once the client has gone."""
        while not self.chunks and not self.complete:
            if self.gone:
                return None
            self.arrived.clear()
            await self.arrived.wait()
        chunk = b"".join(self.chunks)
        self.chunks.clear()
        self.waiting = 0
        self.connection.resume_reading_for_body()
        return chunk, not self.complete

    def abandon(self) -> None:
        self.abandoned = True
        self.chunks.clear()
        self.waiting = 0
        self.connection.resume_reading_for_body()


class _Request:
    __slots__ = ("method", "target", "headers", "body", "keep_alive", "http_version", "stream")

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        version: str,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http_version = version
        self.stream: _BodyStream | None = None  # set: the body is streamed to an ASGI app as it comes


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: WrapperServer) -> None:
        self.server = server
        self.app = server.app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.client: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.busy = False
        self.pipeline: collections.deque[_Request] = collections.deque()
        self.reading_paused = False
        self.streaming: _BodyStream | None = None  # the body of the request under way, streamed
        self.body_paused = False  # reading paused until the ASGI app takes what waits
        self.writing_paused: asyncio.Event | None = None
        self.lost: asyncio.Event | None = None
        self.closed = False
        self.websocket: Any = None
        self.last_active = 0.0
        self.eof = False
        self.lingering = False  # refused: what still arrives is dropped until the close

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client = _address(transport.get_extra_info("peername"))
        self.sockname = _address(transport.get_extra_info("sockname"))
        self.last_active = time.monotonic()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.websocket is not None:
            self.websocket.feed_eof()
        if self.streaming is not None:
            self.streaming.disconnect()
        if self.lost is not None:
            self.lost.set()
        if self.writing_paused is not None:
            self.writing_paused.set()

    def pause_writing(self) -> None:
        self.writing_paused = asyncio.Event()

    def resume_writing(self) -> None:
        if self.writing_paused is not None:
            self.writing_paused.set()
            self.writing_paused = None

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self.websocket is not None:
            self.websocket.feed_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :] if upgrade.args else b"")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, _Rejected):
                self._refuse(cause.status, cause.message)
            else:
                log.exception("error parsing a request")
                self._refuse(400, "malformed HTTP request")
        except httptools.HttpParserError:
            self._refuse(400, "malformed HTTP request")

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets the answer: keep the connection
        # open for writing and close it once the requests read so far are answered.
        self.eof = True
        if self.lingering:
            return None  # the refused client has sent all it had: close now
        if self.busy:
            return True
        return None  # nothing in flight: close now

    # --- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.body_size = 0
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD_BYTES:
            raise _Rejected(431, f"request head larger than {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD_BYTES:
            raise _Rejected(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        limit = self.server.max_body_bytes
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _Rejected(413, f"request body larger than {limit} bytes")
            if name == b"expect" and value.lower() == b"100-continue" and not self.parser.should_upgrade():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.app.webview_asgi and not self.busy and not self.parser.should_upgrade():
            # An ASGI app may read its request body as it comes: start the exchange now. (A pipelined
            # request, arriving while another is answered, is buffered and answered in its turn.)
            request = self._request(b"")
            request.stream = self.streaming = _BodyStream(self)
            self._start(request)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.server.max_body_bytes:
            raise _Rejected(413, f"request body larger than {self.server.max_body_bytes} bytes")
        if self.streaming is not None:
            self.streaming.feed(body)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade():
            return  # answered by _upgrade()
        if self.streaming is not None:  # started at its headers; its body is all in now
            self.streaming.finish()
            self.streaming = None
            return
        request = self._request(self.body[0] if len(self.body) == 1 else b"".join(self.body))
        if self.busy:
            self.pipeline.append(request)
            if not self.reading_paused:  # a pipelining client: read no more until we catch up
                self.reading_paused = True
                self.transport.pause_reading()
        else:
            self._start(request)

    def _request(self, body: bytes) -> _Request:
        raw_method = self.parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS.setdefault(raw_method, raw_method.decode("latin-1"))
        return _Request(
            method, self.url, self.headers, body, self.parser.should_keep_alive(), self.parser.get_http_version()
        )

    def pause_reading_for_body(self) -> None:
        if not self.body_paused and not self.closed:
            self.body_paused = True
            self.transport.pause_reading()

    def resume_reading_for_body(self) -> None:
        if self.body_paused and not self.closed:
            self.body_paused = False
            if not self.reading_paused:
                self.transport.resume_reading()

    # --- answering ------------------------------------------------------------------------------
    def _scope(self, request: _Request, kind: str = "http") -> dict[str, Any]:
        target = request.target
        if target[:1] != b"/":  # absolute-form (a proxy's request line): only the path counts
            parsed = httptools.parse_url(target)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        else:
            raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        return {
            "type": kind,
            "asgi": _ASGI,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": "http" if kind == "http" else "ws",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": self.client,
            "server": self.sockname,
        }

    def _start(self, request: _Request) -> None:
        self.busy = True
        scope = self._scope(request)
        if self.app.webview_asgi:
            self.server.loop.create_task(self._answer_asgi(scope, request))
        else:
            self.server.loop.create_task(self._answer(scope, request))

    async def _answer(self, scope: dict[str, Any], request: _Request) -> None:
        try:
            response = await self.app.respond(scope, body=request.body)
        except Exception:  # the server keeps serving whatever happens
            log.exception("error answering %s %s", request.method, scope["path"])
            response = Response(500, b'{"error": "internal server error"}')
        assert response is not None  # no `send` given: respond() always returns the answer
        if not self.closed:
            self._write(response, request)
        self._finish(request.keep_alive)

    def _write(self, response: Response, request: _Request) -> None:
        content_type = _CONTENT_TYPES.get(response.content_type)
        if content_type is None:
            content_type = _CONTENT_TYPES.setdefault(response.content_type, response.content_type.encode())
        body = response.body
        parts = [
            _status_line(response.status),
            b"content-type: ",
            content_type,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n",
            self.server.clock.date(),
        ]
        for name, value in response.headers:
            parts += (name, b": ", value, b"\r\n")
        if not request.keep_alive or self.server.stopping:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if request.method != "HEAD":
            parts.append(body)
        self.transport.write(b"".join(parts))

    def _finish(self, keep_alive: bool) -> None:
        self.last_active = time.monotonic()
        if self.closed:
            return
        if not keep_alive or self.server.stopping:
            self.transport.close()
            self.closed = True
            return
        self.busy = False
        if self.pipeline:
            self._start(self.pipeline.popleft())
        elif self.eof:
            self.transport.close()
            self.closed = True
        elif self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    async def _answer_asgi(self, scope: dict[str, Any], request: _Request) -> None:
        """The full ASGI exchange, for jobs whose webview is an ASGI app (it may stream its answer)."""
        state = {"body_given": False, "started": False, "finished": False, "chunked": False, "head": False}
        keep_alive = request.keep_alive

        async def receive() -> dict[str, Any]:
            stream = request.stream
            if stream is not None and not state["body_given"]:
                part = await stream.next()
                if part is None:
                    return {"type": "http.disconnect"}
                body, more = part
                state["body_given"] = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if not state["body_given"]:
                state["body_given"] = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            if self.lost is None:
                self.lost = asyncio.Event()
            if not self.closed:
                await self.lost.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal keep_alive
            if self.closed:
                raise ConnectionResetError("the client has gone")
            if message["type"] == "http.response.start":
                if state["started"]:
                    raise RuntimeError("http.response.start sent twice")
                state["started"] = True
                status = int(message["status"])
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
                names = {name for name, _ in headers}
                bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
                state["head"] = bodiless
                parts = [_status_line(status), self.server.clock.date()]
                for name, value in headers:
                    parts += (name, b": ", value, b"\r\n")
                if b"content-length" not in names and not bodiless:
                    state["chunked"] = True
                    parts.append(b"transfer-encoding: chunked\r\n")
                if request.stream is not None and not request.stream.complete:
                    keep_alive = False  # answering before the body is all in: see the end of the exchange
                if not keep_alive or self.server.stopping:
                    keep_alive = False
                    parts.append(b"connection: close\r\n")
                parts.append(b"\r\n")
                self.transport.write(b"".join(parts))
            elif message["type"] == "http.response.body":
                if not state["started"] or state["finished"]:
                    raise RuntimeError("http.response.body outside a response")
                body = bytes(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if not state["head"]:
                    if state["chunked"]:
                        if body:
                            self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
                        if not more:
                            self.transport.write(b"0\r\n\r\n")
                    elif body:
                        self.transport.write(body)
                if not more:
                    state["finished"] = True
                if self.writing_paused is not None:
                    await self.writing_paused.wait()

        try:
            await self.app(scope, receive, send)
        except Exception:  # the server keeps serving
            log.exception("error answering %s %s", request.method, scope["path"])
            if not state["started"] and not self.closed:
                self._write(Response(500, b'{"error": "internal server error"}'), request)
                state["started"] = state["finished"] = True
        if not state["started"] and not self.closed:
            self._write(Response(500, b'{"error": "the application sent no answer"}'), request)
        elif not state["finished"]:
            keep_alive = False  # an answer cut short: the client must not read the next one from it
        if request.stream is not None and not request.stream.complete:
            # answered before its body was all in: the rest is dropped, and the connection closed
            # after this answer (the next request cannot be told apart from the unread body)
            request.stream.abandon()
            keep_alive = False
        self._finish(keep_alive)

    def _refuse(self, status: int, message: str) -> None:
        if self.closed:
            return
        body = b'{"error": "%s"}' % message.encode()
        self.transport.write(
            _status_line(status)
            + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.closed = True
        self._linger()

    def _linger(self) -> None:
        """Half-close after the refusal and drop what the client still sends, then close (LINGER_SECONDS)."""
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.lingering = True
        if self.reading_paused or self.body_paused:
            self.reading_paused = self.body_paused = False
            self.transport.resume_reading()
        self.server.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _upgrade(self, rest: bytes) -> None:
        """A WebSocket handshake: checked here, then run by gunicorn's WebSocket protocol over this connection."""
        headers = dict(self.headers)
        if headers.get(b"upgrade", b"").lower() != b"websocket":
            self._refuse(400, "only WebSocket upgrades are supported")
            return
        if headers.get(b"sec-websocket-version", b"").strip() != b"13":
            self.transport.write(
                b"HTTP/1.1 426 Upgrade Required\r\nsec-websocket-version: 13\r\ncontent-length: 0\r\n"
                b"connection: close\r\n\r\n"
            )
            self.transport.close()
            self.closed = True
            return
        try:
            key_ok = len(base64.b64decode(headers.get(b"sec-websocket-key", b"").strip(), validate=True)) == 16
        except (binascii.Error, ValueError):
            key_ok = False
        if not key_ok:
            self._refuse(400, "invalid Sec-WebSocket-Key")
            return
        from gunicorn.asgi.websocket import WebSocketProtocol  # only jobs with an ASGI webview get here

        request = _Request("GET", self.url, self.headers, b"", False, self.parser.get_http_version())
        scope = self._scope(request, kind="websocket")
        del scope["method"]
        protocol = headers.get(b"sec-websocket-protocol", b"").decode("latin-1")
        scope["subprotocols"] = [p.strip() for p in protocol.split(",") if p.strip()]
        self.busy = True
        self.websocket = WebSocketProtocol(self.transport, scope, self.app, log)
        if rest:
            self.websocket.feed_data(rest)
        task = self.server.loop.create_task(self.websocket.run())
        task.add_done_callback(lambda _task: self.transport.close())

    def close_if_idle(self, now: float, keepalive: float) -> None:
        if not self.busy and not self.closed and now - self.last_active > keepalive:
            self.transport.close()
            self.closed = True


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


class WrapperServer:
    def __init__(
        self,
        app: JobApp,
        port: int,
        workers: int = 1,
        keepalive: float = 75,
        graceful_timeout: float = 30,
        max_body_bytes: int = 256 * 1024**2,
        host: str = "0.0.0.0",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.workers = max(1, workers)
        self.keepalive = keepalive
        self.graceful_timeout = graceful_timeout
        self.max_body_bytes = max_body_bytes
        self.connections: set[HttpConnection] = set()
        self.clock = _Clock()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set in _serve()

    def listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT: in this process, or in `workers` forked ones."""
        sock = self.listen()
        log.info("listening at http://%s:%d (%d worker%s)", self.host, self.port, self.workers, "s"[: self.workers > 1])
        if self.workers == 1:
            self.serve(sock)
        else:
            self._supervise(sock)

    def serve(self, sock: socket.socket) -> None:
        try:
            import uvloop
        except ImportError:  # the wrapper's image has it; a bare checkout may not
            asyncio.run(self._serve(sock))
        else:
            uvloop.run(self._serve(sock))

    async def _serve(self, sock: socket.socket, ready: asyncio.Event | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self.loop.add_signal_handler(signum, stop.set)
            except (RuntimeError, ValueError):  # not the main thread (tests)
                pass
        self.app.start_loading()
        server = await self.loop.create_server(lambda: HttpConnection(self), sock=sock, backlog=2048)
        sweeper = self.loop.create_task(self._sweep())
        self.stop_event = stop
        if ready is not None:
            ready.set()
        await stop.wait()
        await self._drain(server)
        sweeper.cancel()
        self.app.shutdown()

    async def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than `keepalive` (one timer for all)."""
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.close_if_idle(now, self.keepalive)

    async def _drain(self, server: asyncio.AbstractServer) -> None:
        """Graceful stop: accept nothing new, let calls in flight finish, close the rest."""
        self.stopping = True
        server.close()
        deadline = time.monotonic() + self.graceful_timeout
        while True:
            for connection in list(self.connections):
                if connection.lingering:
                    connection.transport.close()  # a refused client: stopping need not wait for it
                elif not connection.busy:
                    connection.close_if_idle(float("inf"), 0)
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.transport.abort()

    def _supervise(self, sock: socket.socket) -> None:
        """JOB_WORKERS > 1: forked processes accept on the shared socket; one that dies is replaced."""
        children: dict[int, float] = {}
        stopping = False

        def spawn() -> None:
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    self.serve(sock)
                except BaseException:  # a worker reports and exits; the parent replaces it
                    log.exception("worker failed")
                    code = 1
                finally:
                    os._exit(code)
            children[pid] = time.monotonic()

        def stop(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True
            for pid in list(children):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for _ in range(self.workers):
            spawn()
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            born = children.pop(pid, None)
            if born is None or stopping:
                continue
            log.error("worker %d exited (status %d); starting another", pid, status)
            if time.monotonic() - born < 1:
                time.sleep(1)  # a worker dying at once would otherwise be restarted in a busy loop
            spawn()
