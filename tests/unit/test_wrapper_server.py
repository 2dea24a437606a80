"""The python3 wrapper's own HTTP server (racetrack_job_wrapper.server) over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import importlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.fakes import write_job

ADDER = '''
import threading
import time


class AdderEntrypoint:
    def perform(self, a: int, b: int = 2, sleep: float = 0) -> int:
        """Add two numbers."""
        time.sleep(sleep)
        return a + b

    def auxiliary_endpoints(self):
        return {"/thread": lambda: threading.current_thread().name}
'''

ASYNC_ADDER = """
import asyncio
import threading


class AsyncEntrypoint:
    async def perform(self, a: int, b: int) -> dict:
        await asyncio.sleep(0.01)
        return {"sum": a + b, "thread": threading.current_thread().name}
"""

ASGI_WEBVIEW = """
class WebviewEntrypoint:
    def perform(self) -> int:
        return 1

    def webview_app(self, base_url):
        async def app(scope, receive, send):
            if scope["type"] == "websocket":
                assert (await receive())["type"] == "websocket.connect"
                await send({"type": "websocket.accept"})
                message = await receive()
                await send({"type": "websocket.send", "text": "echo: " + message["text"]})
                await send({"type": "websocket.close", "code": 1000})
                return
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for part in (b"one ", b"two ", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        return app
"""

ASGI_UPLOAD = """
import hashlib, json

class UploadEntrypoint:
    def perform(self) -> int:
        return 1

    def webview_app(self, base_url):
        async def app(scope, receive, send):
            digest, size, messages = hashlib.sha256(), 0, 0
            if not scope["path"].endswith("/early"):  # /early answers without reading the body
                while True:
                    message = await receive()
                    digest.update(message.get("body", b""))
                    size += len(message.get("body", b""))
                    messages += 1
                    if not message.get("more_body"):
                        break
            body = json.dumps({"bytes": size, "sha256": digest.hexdigest(), "messages": messages}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
        return app
"""


class RunningServer:
    def __init__(self, server: Any, thread: threading.Thread, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.thread = thread
        self.loop = loop
        self.port = server.port

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop_event.set)
        self.thread.join(timeout=30)


@pytest.fixture
def wrapper_server(wrapper_app: ModuleType) -> ModuleType:
    return importlib.import_module("racetrack_job_wrapper.server")


@pytest.fixture
def serve(
    wrapper_app: ModuleType, wrapper_server: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., RunningServer]]:
    """Write a job, start the wrapper's server for it on a free port in a thread; stopped afterwards."""
    running: list[RunningServer] = []

    def start(files: dict[str, str], app_options: Any = None, **options: Any) -> RunningServer:
        write_job(tmp_path, files)
        monkeypatch.chdir(tmp_path)
        app = wrapper_app.JobApp("entrypoint.py", None, app_options)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = wrapper_server.WrapperServer(app, port, host="127.0.0.1", **options)
        sock = server.listen()
        loop = asyncio.new_event_loop()
        ready = asyncio.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server._serve(sock, ready))
            loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not (ready.is_set() and app.conventions is not None or app.init_error):
            assert time.monotonic() < deadline, "the wrapper's server did not start"
            time.sleep(0.01)
        assert app.init_error is None
        handle = RunningServer(server, thread, loop)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if handle.thread.is_alive():
            handle.stop()


def read_responses(sock: socket.socket, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """`count` HTTP responses with a content-length or chunked body, read off a raw socket."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers: {buffer!r}"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    buffer += sock.recv(65536)
                size_line, buffer = buffer.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(buffer) < size + 2:
                    buffer += sock.recv(65536)
                body, buffer = body + buffer[:size], buffer[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                buffer += sock.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
        answers.append((status, headers, body))
    return answers


PERFORM = b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


def perform_request(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return PERFORM % (len(body), body)


def test_perform_answers_with_tracing_id_and_keeps_the_connection(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER})
    connection = running.connection()
    for a in (40, 1):
        connection.request(
            "POST", "/api/v1/perform", body=json.dumps({"a": a}), headers={"X-Request-Tracing-Id": f"trace-{a}"}
        )
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (200, a + 2)
        assert response.getheader("content-type") == "application/json"
        assert response.getheader("x-request-tracing-id") == f"trace-{a}"
        assert response.getheader("date")
    connection.request("POST", "/pub/job/adder/latest/api/v1/perform", body=json.dumps({"a": 1, "b": 1}))
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"2")
    generated = response.getheader("x-request-tracing-id")
    assert generated is not None and len(generated) == 36  # uuid4's form when the caller sent none
    connection.close()


def test_error_shapes_and_probes_go_through_the_server(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER})
    connection = running.connection()
    cases = [
        ("POST", "/api/v1/perform", "{not json", 400, "request body is not valid JSON"),
        ("POST", "/api/v1/perform", '{"b": 1}', 400, "failed to call a function"),
        ("GET", "/api/v1/perform", None, 405, "method GET not allowed here; use POST"),
        ("GET", "/nowhere", None, 404, "no endpoint /nowhere"),
    ]
    for method, path, body, status, message in cases:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        assert response.status == status
        assert message in json.loads(response.read())["error"]
    connection.request("GET", "/ready")
    assert json.loads(connection.getresponse().read()) == {"ready": True}
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    assert 'endpoint_requests_started{endpoint="/api/v1/perform"} 3' in metrics
    connection.request("HEAD", "/health")
    response = connection.getresponse()
    assert response.status == 200 and int(response.getheader("content-length")) > 0
    assert response.read() == b""


def test_sync_job_code_runs_in_a_job_thread_and_async_perform_on_the_loop(
    serve: Callable[..., RunningServer],
) -> None:
    running = serve({"entrypoint.py": ADDER})
    connection = running.connection()
    connection.request("POST", "/api/v1/thread", body="{}")
    assert json.loads(connection.getresponse().read()).startswith("job_")
    running.stop()

    running = serve({"entrypoint.py": ASYNC_ADDER})
    connection = running.connection()
    connection.request("POST", "/api/v1/perform", body=json.dumps({"a": 40, "b": 2}))
    response = connection.getresponse()
    assert response.status == 200
    answer = json.loads(response.read())
    assert answer["sum"] == 42 and not answer["thread"].startswith("job_")


def test_a_call_past_call_timeout_is_504_and_the_next_call_is_served(
    serve: Callable[..., RunningServer], wrapper_app: ModuleType
) -> None:
    running = serve({"entrypoint.py": ADDER}, app_options=wrapper_app.WrapperOptions(threads=2, call_timeout=0.3))
    connection = running.connection()
    started = time.monotonic()
    connection.request("POST", "/api/v1/perform", body=json.dumps({"a": 1, "sleep": 2}))
    response = connection.getresponse()
    assert response.status == 504
    assert json.loads(response.read()) == {"error": "the job did not answer within its call_timeout of 0.3 s"}
    assert time.monotonic() - started < 1.5
    connection.request("POST", "/api/v1/perform", body=json.dumps({"a": 40}))
    assert connection.getresponse().read() == b"42"  # the other thread serves it meanwhile


def test_pipelined_requests_are_answered_in_order(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER})
    sock = running.raw()
    # The first call is the slow one: answers must still come back in the order asked.
    sock.sendall(perform_request({"a": 1, "sleep": 0.2}) + perform_request({"a": 2}) + perform_request({"a": 3}))
    answers = read_responses(sock, 3)
    assert [(status, body) for status, _, body in answers] == [
        ("HTTP/1.1 200 OK", b"3"),
        ("HTTP/1.1 200 OK", b"4"),
        ("HTTP/1.1 200 OK", b"5"),
    ]
    sock.close()


def test_chunked_request_bodies_and_expect_continue(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER})
    sock = running.raw()
    body = b'{"a": 40, "b": 2}'
    sock.sendall(
        b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (5, body[:5])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 5, body[5:])
    )
    assert read_responses(sock, 1)[0][2] == b"42"
    sock.sendall(b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 17\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(body)
    assert read_responses(sock, 1)[0][2] == b"42"
    sock.close()


def test_limits_and_malformed_requests_are_refused(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER}, max_body_bytes=1000)
    cases = [
        (PERFORM % (5000, b""), "413", "request body larger than 1000 bytes"),
        (b"GET /live HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "431", "request head larger than"),
        (b"NOT HTTP AT ALL\r\n\r\n", "400", "malformed HTTP request"),
    ]
    for request, status, message in cases:
        sock = running.raw()
        sock.sendall(request)
        (line, headers, body) = read_responses(sock, 1)[0]
        assert line.split()[1] == status and message in json.loads(body)["error"]
        assert headers["connection"] == "close"
        sock.close()
    # ... and the server goes on serving
    connection = running.connection()
    connection.request("POST", "/api/v1/perform", body='{"a": 1}')
    assert connection.getresponse().read() == b"3"


def test_a_body_over_the_limit_is_refused_with_413_while_the_client_still_sends_it(
    serve: Callable[..., RunningServer],
) -> None:
    """A client (racetrackd's gateway) that streams a large body without waiting for an early
    answer still reads the 413: the server drops the rest instead of resetting the connection,
    which would destroy the answer ("connection broken" for the caller)."""
    running = serve({"entrypoint.py": ADDER}, max_body_bytes=1000)
    for framing in (b"Content-Length: %d\r\n" % (8 * 1024**2), b"Transfer-Encoding: chunked\r\n"):
        sock = running.raw()
        sock.sendall(b"POST /api/v1/perform HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n")
        chunk = b"x" * 65536
        time.sleep(0.2)  # the server has read the head (and, chunked, waits for the body)
        for _ in range(128):  # 8 MiB, sent whatever the server answered meanwhile
            sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk) if b"chunked" in framing else chunk)
        (line, headers, body) = read_responses(sock, 1)[0]
        assert line.split()[1] == "413", line
        assert json.loads(body) == {"error": "request body larger than 1000 bytes"}
        assert headers["connection"] == "close"
        sock.close()


def test_http_10_and_connection_close_end_the_connection(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER})
    for request in (b"GET /live HTTP/1.0\r\n\r\n", b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        sock = running.raw()
        sock.sendall(request)
        status, headers, _ = read_responses(sock, 1)[0]
        assert status.endswith("200 OK") and headers["connection"] == "close"
        assert sock.recv(10) == b""  # closed by the server
        sock.close()


def test_a_client_that_half_closes_after_its_request_gets_the_answer(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER})
    sock = running.raw()
    sock.sendall(perform_request({"a": 40, "sleep": 0.2}))
    sock.shutdown(socket.SHUT_WR)
    assert read_responses(sock, 1)[0][2] == b"42"
    assert sock.recv(10) == b""  # and then the server closes
    sock.close()


def test_idle_keep_alive_connections_are_closed(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER}, keepalive=0.5)
    sock = running.raw()
    sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_responses(sock, 1)[0][0].endswith("200 OK")
    sock.settimeout(5)
    assert sock.recv(10) == b""  # closed within the sweep after 0.5 s idle
    sock.close()


def test_stop_lets_calls_in_flight_finish_and_closes_idle_connections(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ADDER}, graceful_timeout=10)
    idle = running.raw()
    idle.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
    read_responses(idle, 1)
    busy = running.raw()
    busy.sendall(perform_request({"a": 40, "sleep": 0.5}))
    time.sleep(0.1)
    running.loop.call_soon_threadsafe(running.server.stop_event.set)
    status, headers, body = read_responses(busy, 1)[0]
    assert (status, body, headers["connection"]) == ("HTTP/1.1 200 OK", b"42", "close")
    assert idle.recv(10) == b""
    running.thread.join(timeout=10)
    assert not running.thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()


def test_an_asgi_webview_streams_its_answer_and_speaks_websocket(serve: Callable[..., RunningServer]) -> None:
    running = serve({"entrypoint.py": ASGI_WEBVIEW})
    sock = running.raw()
    sock.sendall(b"GET /api/v1/webview/page HTTP/1.1\r\nHost: x\r\n\r\n" + perform_request({}))
    (status, headers, body), (_, _, performed) = read_responses(sock, 2)
    assert (status, headers["transfer-encoding"], body) == ("HTTP/1.1 200 OK", "chunked", b"one two three")
    assert performed == b"1"  # the same connection goes on after a streamed answer
    sock.close()

    key = base64.b64encode(os.urandom(16))
    sock = running.raw()
    sock.sendall(
        b"GET /api/v1/webview/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert head.startswith(b"HTTP/1.1 101") and accept in head
    mask = os.urandom(4)
    text = b"hello"
    sock.sendall(bytes([0x81, 0x80 | len(text)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(text)))
    frame = sock.recv(2)
    payload = sock.recv(frame[1] & 0x7F)
    assert (frame[0], payload) == (0x81, b"echo: hello")
    sock.close()

    sock = running.raw()
    sock.sendall(
        b"GET /api/v1/webview/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    status, headers, _ = read_responses(sock, 1)[0]
    assert status.split()[1] == "426" and headers["sec-websocket-version"] == "13"
    sock.close()


def test_an_asgi_webview_reads_an_upload_as_it_arrives_not_whole(serve: Callable[..., RunningServer]) -> None:
    # An upload of hundreds of MiB must not sit whole in the job's memory before its app sees it.
    running = serve({"entrypoint.py": ASGI_UPLOAD})
    sock = running.raw()
    sock.sendall(b"POST /api/v1/webview/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = hashlib.sha256()
    for _ in range(5):
        part = os.urandom(64 * 1024)
        sent.update(part)
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.05)  # separate arrivals: the app is reading meanwhile
    sock.sendall(b"0\r\n\r\n" + perform_request({}))
    (status, _, body), (_, _, performed) = read_responses(sock, 2)
    sock.close()

    got = json.loads(body)
    assert status == "HTTP/1.1 200 OK"
    assert (got["bytes"], got["sha256"]) == (5 * 64 * 1024, sent.hexdigest())
    assert got["messages"] > 1, "the app got the body in one piece: it was buffered, not streamed"
    assert performed == b"1"  # the connection goes on after a streamed request


def test_an_asgi_answer_before_the_body_is_all_in_closes_that_connection_only(
    serve: Callable[..., RunningServer],
) -> None:
    running = serve({"entrypoint.py": ASGI_UPLOAD})
    sock = running.raw()
    sock.sendall(b"POST /api/v1/webview/early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
    status, headers, _ = read_responses(sock, 1)[0]
    assert status == "HTTP/1.1 200 OK" and headers.get("connection") == "close"
    sock.close()

    connection = running.connection()  # the server serves on
    connection.request("POST", "/api/v1/perform", body=b"{}", headers={"Content-Type": "application/json"})
    assert connection.getresponse().read() == b"1"
