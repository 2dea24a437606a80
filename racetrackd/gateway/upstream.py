"""HTTP/1.1 from the gateway to jobs: pooled keep-alive connections, bodies streamed both ways.

Purpose-built rather than a general client (aiohttp kept 34% of direct throughput, this 44%+,
see docs/benchmarks.md): the gateway only ever talks plain HTTP/1.1 to addresses it knows, so
what remains is framing, pooling and flow control. Parsing is httptools (llhttp, Node's parser).

One `_Connection` carries one exchange at a time. Response bytes are buffered up to
`READ_HIGH_WATER`, then the socket stops being read until the gateway has passed them on, so a
slow caller slows the job down instead of filling the daemon's memory.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator
from typing import cast

import httptools

from racetrackd.errors import UpstreamError

Headers = list[tuple[bytes, bytes]]

READ_HIGH_WATER = 256 * 1024
# A live job accepts in well under a millisecond; a stopped container's IP gives no answer at all
# (the kernel waits ~3 s for ARP), so a caller learns the job is down after this long.
CONNECT_TIMEOUT = 2.0
# Jobs' servers close idle connections after their own keep-alive (75 s for the python3 wrapper);
# dropping ours sooner avoids sending on a connection the job is closing.
MAX_IDLE_SECONDS = 30.0
MAX_IDLE_PER_ADDRESS = 64
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # these say `content-length: 0` when empty


class ConnectionRefused(UpstreamError):
    """Nothing listens at the job's address (it is starting, stopped or gone)."""


class ConnectionBroken(UpstreamError):
    """The job closed or reset the connection before answering in full (it may have died)."""


class _Connection(asyncio.Protocol):
    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[None] | None = None
        self._interim = False
        self._head_only = False
        self._close_delimited = False
        self.status = 0
        self.headers: Headers = []
        self.keep_alive = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._received_any = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small writes go out now

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionBroken("the job switched protocols on a plain HTTP call"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionBroken(f"the job sent a malformed response ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._close_delimited and self.status and not self._complete and exc is None:
            self.keep_alive = False
            self._finish()
        elif self._head is not None and not self._complete:
            self._fail(ConnectionBroken("connection broken (the job closed it; it may have died)"))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._interim = 100 <= status < 200  # "100 Continue" and friends precede the real answer
        if self._interim:
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        # No length and not chunked: the body ends when the job closes the connection (RFC 9112 6.3).
        self._close_delimited = (
            not self._head_only
            and status not in (204, 304)
            and not any(
                name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower())
                for name, value in self.headers
            )
        )
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        if self._head_only:
            # A HEAD response announces a length but carries no body; llhttp cannot be told, so a
            # fresh parser takes the next response and this one ends here.
            self._parser = httptools.HttpResponseParser(self)
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake_reader()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish()

    # the exchange
    async def exchange(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes],
        content_length: int | None,
    ) -> None:
        """Send the request; return once the response head has arrived (status, headers set)."""
        assert self.transport is not None
        self._head = asyncio.get_running_loop().create_future()
        self._head_only = method == "HEAD"
        self._complete = False
        self._received_any = False
        self._chunks.clear()
        self._buffered = 0
        self._error = None
        self.status = 0
        self._close_delimited = False
        if not isinstance(body, bytes):
            framing = (
                b"content-length: %d\r\n" % content_length
                if content_length is not None
                else b"transfer-encoding: chunked\r\n"
            )
        elif body or method in BODY_METHODS:
            framing = b"content-length: %d\r\n" % len(body)
        else:
            framing = b""
        head = b"".join(
            [
                method.encode("ascii"),
                b" ",
                target,
                b" HTTP/1.1\r\n",
                *(name + b": " + value + b"\r\n" for name, value in headers),
                framing,
                b"\r\n",
            ]
        )
        if isinstance(body, bytes):
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            await self._send_stream(body, chunked=content_length is None)
        await self._head

    async def _send_stream(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        assert self.transport is not None
        async for chunk in body:
            if self.closed or (self._head is not None and self._head.done()):
                break  # the job answered (or hung up) before reading everything: stop sending
            if chunk:
                self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if self._writable is not None:
                await self._writable
        else:
            if chunked and not self.closed:
                self.transport.write(b"0\r\n\r\n")
            return
        self.keep_alive = False  # the rest of the request body is still unread by the job

    async def body(self) -> AsyncIterator[bytes]:
        """The response body as it arrives; raises ConnectionBroken when it stops short."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reading_paused and self._buffered <= READ_HIGH_WATER // 2 and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                yield chunk
            if self._complete:
                return
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def take_buffered(self) -> bytes | None:
        """The whole body when it has already arrived (the common small answer), else None."""
        if not self._complete:
            return None
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def received_any(self) -> bool:
        return self._received_any

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        self._complete = True
        self._wake_reader()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self.keep_alive = False
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        self._wake_reader()
        if self.transport is not None:
            self.transport.close()

    def _wake_reader(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)


class UpstreamResponse:
    """A job's answer: status and headers now, the body to be read (then `release`d)."""

    def __init__(self, pool: UpstreamPool, connection: _Connection) -> None:
        self._pool = pool
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        self._released = False

    def buffered_body(self) -> bytes | None:
        return self._connection.take_buffered()

    def body(self) -> AsyncIterator[bytes]:
        return self._connection.body()

    def release(self) -> None:
        """Give the connection back for the next call (only when this answer was read in full)."""
        if not self._released:
            self._released = True
            self._pool.release(self._connection)

    def close(self) -> None:
        """Drop the connection (the answer was not read in full)."""
        if not self._released:
            self._released = True
            self._connection.close()


class UpstreamPool:
    """Keep-alive connections per job address, shared by every call this process forwards."""

    def __init__(self) -> None:
        self._idle: dict[str, list[_Connection]] = {}

    async def request(
        self,
        address: str,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] = b"",
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send one request to `address` (host:port); raises UpstreamError subclasses when it fails."""
        connection = await self._acquire(address)
        try:
            await connection.exchange(method, target, headers, body, content_length)
        except ConnectionBroken:
            connection.close()
            # A pooled connection the job closed while idle fails before any answer. The job may
            # also have died while working on the request, so only a method that may run twice
            # is sent once more (as Go's and browsers' HTTP clients do).
            if not (
                connection.reused
                and not connection.received_any
                and isinstance(body, bytes)
                and method in IDEMPOTENT_METHODS
            ):
                raise
            connection = await self._connect(address)
            try:
                await connection.exchange(method, target, headers, body, content_length)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()  # cancelled (timeout, caller gone) or failed mid-request
            raise
        return UpstreamResponse(self, connection)

    def release(self, connection: _Connection) -> None:
        if connection.closed or not connection.keep_alive or not connection.complete:
            connection.close()
            return
        idle = self._idle.setdefault(connection.address, [])
        if len(idle) >= MAX_IDLE_PER_ADDRESS:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _acquire(self, address: str) -> _Connection:
        idle = self._idle.get(address)
        oldest_allowed = time.monotonic() - MAX_IDLE_SECONDS
        while idle:
            connection = idle.pop()  # the most recently used: the likeliest to be alive
            if connection.closed or connection.idle_since < oldest_allowed:
                connection.close()
                continue
            connection.reused = True
            return connection
        return await self._connect(address)

    async def _connect(self, address: str) -> _Connection:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, protocol = await loop.create_connection(lambda: _Connection(address), host.strip("[]"), int(port))
        except TimeoutError as exc:
            raise ConnectionRefused(f"connecting to the job at {address} timed out") from exc
        except ConnectionRefusedError as exc:
            raise ConnectionRefused("connection refused (the job may be starting or has died)") from exc
        except OSError as exc:
            raise ConnectionRefused(f"cannot connect to the job at {address}: {exc.strerror or exc}") from exc
        return protocol
