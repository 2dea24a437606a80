"""The daemon's HTTP protocol for job calls (racetrackd.httpworker) over real sockets on 127.0.0.1.

A PubWorker (gunicorn's config and logger, no master) serves a small ASGI app from a thread's event
loop; clients are raw sockets, so the bytes on the wire are what is checked."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from racetrackd import httpworker
from racetrackd.httpworker import PubConnection, PubWorker

Scope = dict[str, Any]


class Recorder:
    """What the app saw, for the tests to read."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.messages: list[dict[str, Any]] = []
        self.sent_parts = 0
        self.cancelled = threading.Event()
        self.disconnected = threading.Event()


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Echo the body, and some special paths: /pub/stream streams, /pub/head answers with a length,
    /pub/wait-disconnect waits for the client to go, /pub/hang never answers, /pub/big streams 8 MiB."""
    recorder: Recorder = RECORDER
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        await send({"type": "websocket.close", "code": 1000})
        return
    recorder.scopes.append(scope)
    path = scope["path"]
    if path == "/pub/hang":
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            recorder.cancelled.set()
            raise
    body = b""
    while True:
        message = await receive()
        recorder.messages.append(message)
        if message["type"] == "http.disconnect":
            recorder.disconnected.set()
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/pub/wait-disconnect":
        message = await receive()
        if message["type"] == "http.disconnect":
            recorder.disconnected.set()
        return
    if path == "/pub/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/pub/big":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % (8 * 2**20))]}
        )
        for _ in range(8):
            await send({"type": "http.response.body", "body": b"x" * 2**20, "more_body": True})
            recorder.sent_parts += 1
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/pub/head":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})
        return
    answer = b"%s %s %s" % (scope["method"].encode(), scope["raw_path"], body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-path", scope["raw_path"])]})
    await send({"type": "http.response.body", "body": answer})


RECORDER = Recorder()


@pytest.fixture
def server() -> Iterator[tuple[int, PubWorker, Recorder]]:
    global RECORDER
    RECORDER = Recorder()
    cfg = Config()
    worker = PubWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    worker.asgi = app
    loop = asyncio.new_event_loop()
    worker.loop = loop
    started = threading.Event()
    port: list[int] = []
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        server = await loop.create_server(lambda: PubConnection(worker), "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        stop.append(asyncio.Event())
        started.set()
        await stop[0].wait()
        server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(5)
    yield port[0], worker, RECORDER
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(5)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def read_response(
    sock: socket.socket, buffer: bytearray, head_only: bool = False
) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response off the socket: (status line, headers, body); `buffer` keeps what follows it."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if head_only:
        return status, headers, b""
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-body")
            buffer += chunk
        body = bytes(buffer[:length])
        buffer[:] = buffer[length:]
        return status, headers, body
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in buffer:
                buffer += sock.recv(65536)
            size_line, _, _ = bytes(buffer).partition(b"\r\n")
            size = int(size_line, 16)
            while len(buffer) < len(size_line) + 2 + size + 2:
                buffer += sock.recv(65536)
            body += bytes(buffer[len(size_line) + 2 : len(size_line) + 2 + size])
            buffer[:] = buffer[len(size_line) + 2 + size + 2 :]
            if size == 0:
                return status, headers, body
    body = bytes(buffer)
    while chunk := sock.recv(65536):
        body += chunk
    buffer.clear()
    return status, headers, body


def test_a_small_answer_goes_out_in_one_write_with_a_length(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /pub/job/x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
        time.sleep(0.2)  # the whole answer is in the socket at once: one recv takes it
        data = sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ncontent-length: 21" in head and b"transfer-encoding" not in head
    assert body == b"POST /pub/job/x hello"


def test_a_streamed_answer_is_chunked(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /pub/stream HTTP/1.1\r\nhost: a\r\n\r\n")
        status, headers, body = read_response(sock, bytearray())
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"one two three"


def test_pipelined_requests_are_answered_in_order(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    requests = b"".join(
        b"POST /pub/%d HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n%s" % (i, len(b"body%d" % i), b"body%d" % i)
        for i in range(5)
    )
    with connect(port) as sock:
        sock.sendall(requests + b"GET /pub/stream HTTP/1.1\r\nhost: a\r\n\r\n")
        buffer = bytearray()
        answers = [read_response(sock, buffer)[2] for _ in range(6)]
    assert answers == [b"POST /pub/%d body%d" % (i, i) for i in range(5)] + [b"one two three"]


def test_head_has_no_body(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"HEAD /pub/head HTTP/1.1\r\nhost: a\r\n\r\nGET /pub/next HTTP/1.1\r\nhost: a\r\n\r\n")
        buffer = bytearray()
        status, headers, _ = read_response(sock, buffer, head_only=True)
        assert headers[b"content-length"] == b"5"
        _, _, body = read_response(sock, buffer)  # straight after the head: no "hello" in between
    assert body == b"GET /pub/next "


def test_a_chunked_request_body_reaches_the_app_whole(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /pub/c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.05)
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        _, _, body = read_response(sock, bytearray())
    assert body == b"POST /pub/c hello world"


def test_expect_100_continue_is_answered_when_the_app_reads(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /pub/e HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        _, _, body = read_response(sock, bytearray())
    assert body == b"POST /pub/e abc"


def test_a_client_that_goes_is_told_to_the_app(server: tuple[int, PubWorker, Recorder]) -> None:
    port, worker, recorder = server
    sock = connect(port)
    sock.sendall(b"GET /pub/wait-disconnect HTTP/1.1\r\nhost: a\r\n\r\n")
    time.sleep(0.1)
    assert worker.nr_conns == 1
    sock.close()
    assert recorder.disconnected.wait(2)
    deadline = time.monotonic() + 2
    while worker.nr_conns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.nr_conns == 0


def test_an_app_that_never_notices_its_client_went_is_cancelled(
    server: tuple[int, PubWorker, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _, recorder = server
    monkeypatch.setattr(httpworker, "DISCONNECT_GRACE_SECONDS", 0.1)
    sock = connect(port)
    sock.sendall(b"GET /pub/hang HTTP/1.1\r\nhost: a\r\n\r\n")
    time.sleep(0.1)
    sock.close()
    assert recorder.cancelled.wait(2)  # what it held (an upstream connection) is freed


def test_a_slow_client_holds_the_app_back(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, recorder = server
    with connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /pub/big HTTP/1.1\r\nhost: a\r\n\r\n")
        time.sleep(0.5)
        assert recorder.sent_parts < 8  # 8 MiB never sit in the daemon's memory for a client not reading
        _, headers, body = read_response(sock, bytearray())
    assert len(body) == 8 * 2**20 and recorder.sent_parts == 8


def test_too_many_headers_and_a_too_long_line_are_refused(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /pub/x HTTP/1.1\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(101)) + b"\r\n")
        status, _, _ = read_response(sock, bytearray())
    assert status.startswith(b"HTTP/1.1 431")
    with connect(port) as sock:
        sock.sendall(b"GET /pub/" + b"x" * 5000 + b" HTTP/1.1\r\nhost: a\r\n\r\n")
        status, _, _ = read_response(sock, bytearray())
    assert status.startswith(b"HTTP/1.1 414")


def test_http_1_0_gets_its_answer_and_the_close(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /pub/stream HTTP/1.0\r\n\r\n")
        status, headers, body = read_response(sock, bytearray())
    assert b"transfer-encoding" not in headers and headers[b"connection"] == b"close"
    assert body == b"one two three"


def test_a_connection_not_for_pub_is_served_by_gunicorn(server: tuple[int, PubWorker, Recorder]) -> None:
    port, worker, recorder = server
    with connect(port) as sock:
        sock.sendall(b"POST /api/x HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\nhi")
        _, headers, body = read_response(sock, bytearray())
        assert body == b"POST /api/x hi"
        assert not worker.connections  # not ours: gunicorn's ASGIProtocol counts it
        sock.sendall(b"GET /pub/later HTTP/1.1\r\nhost: a\r\n\r\n")  # the same connection stays gunicorn's
        _, _, body = read_response(sock, bytearray())
    assert body == b"GET /pub/later "
    assert "state" in recorder.scopes[0]


def test_a_later_request_not_for_pub_is_served_too(server: tuple[int, PubWorker, Recorder]) -> None:
    port, worker, recorder = server
    with connect(port) as sock:
        sock.sendall(b"GET /pub/first HTTP/1.1\r\nhost: a\r\n\r\nGET /dashboard/x?q=1 HTTP/1.1\r\nhost: a\r\n\r\n")
        buffer = bytearray()
        assert read_response(sock, buffer)[2] == b"GET /pub/first "
        assert read_response(sock, buffer)[2] == b"GET /dashboard/x "
    assert recorder.scopes[1]["query_string"] == b"q=1" and recorder.scopes[1]["path"] == "/dashboard/x"


def test_a_websocket_upgrade_is_handed_to_gunicorn(server: tuple[int, PubWorker, Recorder]) -> None:
    port, _, _ = server
    key = base64.b64encode(os.urandom(16))
    with connect(port) as sock:
        sock.sendall(b"GET /pub/first HTTP/1.1\r\nhost: a\r\n\r\n")
        buffer = bytearray()
        assert read_response(sock, buffer)[2] == b"GET /pub/first "
        sock.sendall(
            b"GET /pub/job/ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: %s\r\nsec-websocket-version: 13\r\n\r\n" % key
        )
        status, headers, _ = read_response(sock, buffer, head_only=True)
        assert status.startswith(b"HTTP/1.1 101")
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert headers[b"sec-websocket-accept"] == accept
        mask = os.urandom(4)
        payload = b"hi"
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while len(buffer) < 2:
            buffer += sock.recv(65536)
        length = buffer[1] & 0x7F
        while len(buffer) < 2 + length:
            buffer += sock.recv(65536)
    assert bytes(buffer[2 : 2 + length]) == b"echo: hi"


def test_idle_connections_close_on_a_graceful_stop_and_busy_ones_after_their_answer(
    server: tuple[int, PubWorker, Recorder],
) -> None:
    port, worker, _ = server
    idle = connect(port)
    idle.sendall(b"GET /pub/a HTTP/1.1\r\nhost: a\r\n\r\n")
    read_response(idle, bytearray())
    busy = connect(port)
    busy.sendall(b"POST /pub/b HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nab")
    time.sleep(0.1)
    worker.stopping = True
    worker.loop.call_soon_threadsafe(lambda: [c.close_if_idle(float("inf"), 0) for c in list(worker.connections)])
    assert idle.recv(10) == b""  # closed
    busy.sendall(b"cd")
    _, headers, body = read_response(busy, bytearray())
    assert body == b"POST /pub/b abcd" and headers[b"connection"] == b"close"
    assert busy.recv(10) == b""
    idle.close()
    busy.close()
