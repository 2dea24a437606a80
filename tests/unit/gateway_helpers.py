"""Helpers for the gateway's unit tests: a tiny HTTP/1.1 job on 127.0.0.1, an ASGI client that keeps
one event loop for a whole test (the gateway's connection pool belongs to its loop), and Job rows."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from racetrackd import db
from tests.unit.asgi_client import AsgiResponse

# --- a job's HTTP server ------------------------------------------------------------------------


class Request:
    """One request as the job's server read it off the socket."""

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers  # names lower-cased, in the order sent
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()


class ServerConnection:
    """One accepted connection: read requests, write raw bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._file = sock.makefile("rb")

    def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection."""
        line = self._file.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            line = self._file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        request = Request(method, target, headers, b"")
        if request.chunked:
            parts = []
            while True:
                size = int(self._file.readline().split(b";")[0], 16)
                if size == 0:
                    self._file.readline()  # the blank line after the last chunk (no trailers)
                    break
                parts.append(self._read_exactly(size))
                self._file.readline()
            request.body = b"".join(parts)
        elif request.header("content-length"):
            request.body = self._read_exactly(int(request.header("content-length") or 0))
        return request

    def _read_exactly(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise ConnectionError("the client closed the connection mid-body")
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reset(self) -> None:
        """Abort the connection: the client gets a reset (RST), not an orderly close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._file.close()
        self.sock.close()

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._file.close()
        self.sock.close()


# Returns False to close the connection after this request.
Handler = Callable[[ServerConnection, Request], "bool | None"]


def reply(status: int = 200, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), reason: str = "OK") -> bytes:
    """A whole response with a Content-Length."""
    head = [
        f"HTTP/1.1 {status} {reason}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def echo(connection: ServerConnection, request: Request) -> None:
    """The default job: answers 200 with a JSON description of the request it got."""
    described = {
        "method": request.method,
        "target": request.target,
        "headers": request.headers,
        "body": request.body.decode("latin-1"),
    }
    connection.send(reply(200, json.dumps(described).encode(), [("Content-Type", "application/json")]))


class UpstreamServer:
    """An HTTP/1.1 server on 127.0.0.1 (a free port), one thread per connection; counts accepts."""

    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.accepts = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()  # handlers that wait should wait on this
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.02)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._connections: list[ServerConnection] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True, name=f"upstream-{self.port}")
        self._accepter.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(10)  # a safety net: no test waits this long
            self.accepts += 1
            connection = ServerConnection(sock)
            self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: ServerConnection) -> None:
        try:
            while not self.stopping.is_set():
                request = connection.read_request()
                if request is None:
                    return
                self.requests.append(request)
                if self.handler(connection, request) is False:
                    return
        except OSError:
            pass  # the client (or close()) hung up
        except Exception as exc:  # noqa: BLE001 (reported by close(), not lost in a thread)
            self.errors.append(exc)
        finally:
            connection.close()

    def close(self) -> None:
        self.stopping.set()
        self._accepter.join(2)
        self._listener.close()
        for connection in list(self._connections):
            connection.close()
        for thread in self._threads:
            thread.join(2)
        if self.errors:
            raise self.errors[0]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- an ASGI client on one event loop ------------------------------------------------------------


class Response(AsgiResponse):
    """AsgiResponse plus what the gateway tests look at: repeated headers and the body's pieces."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> None:
        super().__init__(status, headers, b"".join(chunks))
        self.raw_headers = headers
        self.chunks = chunks

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v.decode("latin-1") for k, v in self.raw_headers if k.decode("latin-1").lower() == name.lower()]


class LoopClient:
    """Calls an ASGI app as an HTTP server would, every call on the same event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan: (
            tuple[asyncio.Queue[dict[str, Any]], asyncio.Queue[dict[str, Any]], asyncio.Task[None]] | None
        ) = None

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def get(self, path: str, headers: Any = None) -> Response:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, body: bytes = b"", headers: Any = None) -> Response:
        return self.request("POST", path, body, headers)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Any = None,
        *,
        chunks: list[bytes] | None = None,
        client: tuple[str, int] = ("10.1.2.3", 50000),
        raw_path: bytes | None = None,
    ) -> Response:
        return self.run(self.call(method, path, body, headers, chunks=chunks, client=client, raw_path=raw_path))

    async def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Any = None,
        *,
        chunks: list[bytes] | None = None,
        client: tuple[str, int] = ("10.1.2.3", 50000),
        raw_path: bytes | None = None,
    ) -> Response:
        """`chunks`: send the body in these pieces (more_body) instead of one message; `raw_path`: the
        path bytes as sent, when they are not `path` (the server's decoded `path` is derived from them
        as gunicorn does)."""
        url = urlsplit(path)
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        names = {name.lower() for name, _ in pairs}
        if chunks is None and (body or method in ("POST", "PUT", "PATCH")) and "content-length" not in names:
            pairs.append(("content-length", str(len(body))))
        if "host" not in names:
            pairs.insert(0, ("host", "racetrack.test:7102"))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(url.path) if raw_path is None else unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            "raw_path": url.path.encode() if raw_path is None else raw_path,
            "query_string": url.query.encode(),
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs],
            "client": client,
            "server": ("127.0.0.1", 7102),
        }
        pieces = list(chunks) if chunks is not None else [body]
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if pieces:
                piece = pieces.pop(0)
                return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
            await done.wait()
            return {"type": "http.disconnect"}

        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        received: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                received.append(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        try:
            await self.app(scope, receive, send)
        finally:
            done.set()
        return Response(status, response_headers, received)

    def startup(self) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def start() -> asyncio.Task[None]:
            task = asyncio.ensure_future(
                self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
            )
            await inbox.put({"type": "lifespan.startup"})
            assert (await outbox.get())["type"] == "lifespan.startup.complete"
            return task

        task = self.run(start())
        self._lifespan = (inbox, outbox, task)

    def shutdown(self) -> None:
        if self._lifespan is None:
            return
        inbox, outbox, task = self._lifespan
        self._lifespan = None

        async def stop() -> None:
            await inbox.put({"type": "lifespan.shutdown"})
            assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
            await task

        self.run(stop())

    def close(self) -> None:
        """Shut the app down (a lifespan shutdown closes the gateway's pool, started or not), end the loop."""
        if self._lifespan is None:
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            task = self.loop.create_task(
                self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
            )
            self._lifespan = (inbox, outbox, task)
        self.shutdown()
        self.run(self.loop.shutdown_default_executor())
        self.loop.close()


# --- registry rows --------------------------------------------------------------------------------


def add_job(
    name: str = "adder",
    version: str = "1.0.0",
    status: str = db.JobStatus.RUNNING,
    addresses: Iterable[str] = (),
    call_timeout: int | None = None,
    serving: str | None = None,
) -> db.Job:
    """A Job row whose replicas listen at `addresses` (host:port); `serving`: jobtypes.Serving JSON."""
    addresses = list(addresses)
    return db.Job.create(
        name=name,
        version=version,
        status=status,
        manifest_yaml=f"name: {name}\nversion: {version}\n",
        job_type_version="python3:1.0.0",
        image_name=f"racetrackd/job-{name}:{version}",
        container_name=f"job-{name}-v-{version.replace('.', '-')}",
        internal_name=addresses[0] if addresses else "",
        replica_addresses=addresses,
        deployment_timestamp=1_700_000_000,
        call_timeout=call_timeout,
        serving=serving,
    )


# --- factories behind each test module's fixtures --------------------------------------------------


class Servers:
    """Starts UpstreamServers; `close` stops them all (and reports a handler's exception)."""

    def __init__(self) -> None:
        self._made: list[UpstreamServer] = []

    def __call__(self, handler: Handler = echo) -> UpstreamServer:
        server = UpstreamServer(handler)
        self._made.append(server)
        return server

    def close(self) -> None:
        for server in self._made:
            server.close()


class Daemons:
    """`create_asgi_app` over a FakeRuntime behind a LoopClient; `settings` are the last daemon's."""

    def __init__(self, make_settings: Callable[..., Any], runtime: Any) -> None:
        self._make_settings = make_settings
        self._runtime = runtime
        self._clients: list[LoopClient] = []
        self.settings: Any = None
        self.accounts: Any = None  # the last daemon's, for tests that make users, tokens and grants

    def __call__(self, **extra: str) -> LoopClient:
        from racetrackd.asgi import create_asgi_app

        self.settings = self._make_settings(**extra)
        app = create_asgi_app(self.settings, self._runtime)
        self.accounts = app.gateway.authenticator.accounts
        client = LoopClient(app)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if not db.database.is_closed():
            db.database.close()
