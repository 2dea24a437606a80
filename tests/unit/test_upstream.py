"""The gateway's HTTP/1.1 client to jobs (racetrackd/gateway/upstream.py), against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from racetrackd.gateway import upstream
from racetrackd.gateway.upstream import ConnectionBroken, ConnectionRefused, UpstreamPool, UpstreamResponse
from tests.unit.gateway_helpers import Handler, Request, ServerConnection, UpstreamServer, echo, free_port, reply

T = TypeVar("T")


@pytest.fixture
def serve() -> Iterator[Callable[..., UpstreamServer]]:
    servers: list[UpstreamServer] = []

    def start(handler: Handler = echo) -> UpstreamServer:
        server = UpstreamServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def run(scenario: Callable[[UpstreamPool], Awaitable[T]]) -> T:
    """Run `scenario(pool)` on a fresh event loop, closing the pool afterwards."""

    async def main() -> T:
        pool = UpstreamPool()
        try:
            async with asyncio.timeout(5):  # a hang fails the test instead of blocking the suite
                return await scenario(pool)
        finally:
            pool.close()

    return asyncio.run(main())


async def read_all(response: UpstreamResponse) -> bytes:
    data = response.buffered_body()
    if data is None:
        data = b"".join([chunk async for chunk in response.body()])
    response.release()
    return data


def host(server: UpstreamServer) -> list[tuple[bytes, bytes]]:
    return [(b"host", server.address.encode())]


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


def digest(connection: ServerConnection, request: Request) -> None:
    """Answers with what arrived: framing headers, length and sha256 of the body."""
    answer = {
        "content-length": request.header("content-length"),
        "transfer-encoding": request.header("transfer-encoding"),
        "length": len(request.body),
        "sha256": hashlib.sha256(request.body).hexdigest(),
    }
    connection.send(reply(200, json.dumps(answer).encode()))


# --- keep-alive ----------------------------------------------------------------------------------


def test_sequential_requests_reuse_one_connection(serve: Callable[..., UpstreamServer]) -> None:
    server = serve()

    async def scenario(pool: UpstreamPool) -> list[bytes]:
        bodies = []
        for path in (b"/one", b"/two", b"/three"):
            response = await pool.request(server.address, "GET", path, host(server))
            assert response.status == 200
            bodies.append(await read_all(response))
        return bodies

    bodies = run(scenario)

    assert [json.loads(body)["target"] for body in bodies] == ["/one", "/two", "/three"]
    assert server.accepts == 1


def test_a_pooled_connection_the_job_closed_is_retried_on_a_new_one_for_a_bytes_body(
    serve: Callable[..., UpstreamServer],
) -> None:
    close_now, closed = threading.Event(), threading.Event()

    def answer_once_then_hang_up(connection: ServerConnection, request: Request) -> bool | None:
        echo(connection, request)
        if request.target == "/first":
            close_now.wait(2)
            connection.close()  # as a job does when its keep-alive runs out
            closed.set()
            return False
        return None

    server = serve(answer_once_then_hang_up)

    async def scenario(pool: UpstreamPool) -> tuple[int, bytes]:
        await read_all(await pool.request(server.address, "GET", b"/first", host(server)))
        close_now.set()
        assert closed.wait(2)  # blocks the loop: the pool has not noticed the close yet
        response = await pool.request(server.address, "PUT", b"/second", host(server), b"payload")
        return response.status, await read_all(response)

    status, body = run(scenario)

    assert status == 200
    assert json.loads(body)["body"] == "payload"
    assert server.accepts == 2
    assert [r.target for r in server.requests] == ["/first", "/second"]  # sent once, on the new connection


def test_a_post_on_a_pooled_connection_the_job_closed_is_not_sent_twice(serve: Callable[..., UpstreamServer]) -> None:
    # The job may have died while working on it: a POST must not run twice.
    close_now, closed = threading.Event(), threading.Event()

    def answer_once_then_hang_up(connection: ServerConnection, request: Request) -> bool | None:
        echo(connection, request)
        if request.target == "/first":
            close_now.wait(2)
            connection.close()
            closed.set()
            return False
        return None

    server = serve(answer_once_then_hang_up)

    async def scenario(pool: UpstreamPool) -> None:
        await read_all(await pool.request(server.address, "GET", b"/first", host(server)))
        close_now.set()
        assert closed.wait(2)  # blocks the loop: the pool has not noticed the close yet
        await pool.request(server.address, "POST", b"/second", host(server), b"payload")

    with pytest.raises(ConnectionBroken):
        run(scenario)
    assert server.accepts == 1


def test_a_pooled_connection_the_job_closed_is_not_retried_for_a_streamed_body(
    serve: Callable[..., UpstreamServer],
) -> None:
    close_now, closed = threading.Event(), threading.Event()

    def answer_once_then_hang_up(connection: ServerConnection, request: Request) -> bool:
        echo(connection, request)
        close_now.wait(2)
        connection.close()
        closed.set()
        return False

    server = serve(answer_once_then_hang_up)

    async def scenario(pool: UpstreamPool) -> None:
        await read_all(await pool.request(server.address, "GET", b"/first", host(server)))
        close_now.set()
        assert closed.wait(2)
        with pytest.raises(ConnectionBroken):  # the stream is consumed: it cannot be sent again
            await pool.request(server.address, "POST", b"/second", host(server), stream(b"a", b"b"))

    run(scenario)

    assert server.accepts == 1


def test_an_idle_connection_the_job_closed_is_dropped_and_a_new_one_opened(
    serve: Callable[..., UpstreamServer],
) -> None:
    def echo_then_close(connection: ServerConnection, request: Request) -> bool:
        echo(connection, request)
        return False

    server = serve(echo_then_close)

    async def scenario(pool: UpstreamPool) -> list[int]:
        statuses = []
        for _ in range(2):
            response = await pool.request(server.address, "GET", b"/", host(server))
            statuses.append(response.status)
            await read_all(response)
            await asyncio.sleep(0.05)  # the loop sees the close
        return statuses

    assert run(scenario) == [200, 200]
    assert server.accepts == 2


def test_a_response_saying_connection_close_is_not_pooled(serve: Callable[..., UpstreamServer]) -> None:
    def close_after(connection: ServerConnection, request: Request) -> bool:
        connection.send(reply(200, b"bye", [("Connection", "close")]))
        return False

    server = serve(close_after)

    async def scenario(pool: UpstreamPool) -> list[bytes]:
        return [await read_all(await pool.request(server.address, "GET", b"/", host(server))) for _ in range(2)]

    assert run(scenario) == [b"bye", b"bye"]
    assert server.accepts == 2


def test_a_connection_idle_too_long_is_not_reused(
    serve: Callable[..., UpstreamServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    monkeypatch.setattr(upstream, "MAX_IDLE_SECONDS", 0.0)

    async def scenario(pool: UpstreamPool) -> None:
        for _ in range(2):
            await read_all(await pool.request(server.address, "GET", b"/", host(server)))
            await asyncio.sleep(0.01)

    run(scenario)

    assert server.accepts == 2


def test_an_answer_not_read_in_full_does_not_go_back_to_the_pool(serve: Callable[..., UpstreamServer]) -> None:
    def big_then_echo(connection: ServerConnection, request: Request) -> None:
        if request.target == "/big":
            connection.send(reply(200, b"x" * 2_000_000))
        else:
            echo(connection, request)

    server = serve(big_then_echo)

    async def scenario(pool: UpstreamPool) -> str:
        response = await pool.request(server.address, "GET", b"/big", host(server))
        async for _ in response.body():
            break  # the caller went away after the first piece
        response.release()
        second = await pool.request(server.address, "GET", b"/small", host(server))
        return str(json.loads(await read_all(second))["target"])

    assert run(scenario) == "/small"
    assert server.accepts == 2


# --- response framing ----------------------------------------------------------------------------


def test_a_content_length_answer_arrives_whole_with_its_headers(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(
        lambda connection, request: connection.send(
            reply(201, b"made it", [("X-Job", "yes"), ("Content-Type", "text/plain")], reason="Created")
        )
    )

    async def scenario(pool: UpstreamPool) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        response = await pool.request(server.address, "GET", b"/", host(server))
        return response.status, response.headers, await read_all(response)

    status, headers, body = run(scenario)

    assert status == 201
    assert (b"x-job", b"yes") in headers  # names lower-cased
    assert (b"content-type", b"text/plain") in headers
    assert body == b"made it"


def test_a_chunked_answer_is_streamed_and_the_connection_reused(serve: Callable[..., UpstreamServer]) -> None:
    def chunked(connection: ServerConnection, request: Request) -> None:
        connection.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"hello", b" chunked", b" world"):
            connection.send(b"%x\r\n%b\r\n" % (len(piece), piece))
            time.sleep(0.01)
        connection.send(b"0\r\n\r\n")

    server = serve(chunked)

    async def scenario(pool: UpstreamPool) -> list[bytes]:
        return [await read_all(await pool.request(server.address, "GET", b"/", host(server))) for _ in range(2)]

    assert run(scenario) == [b"hello chunked world"] * 2
    assert server.accepts == 1


def test_a_head_answer_with_a_content_length_and_no_body_ends_at_once_and_keeps_the_connection(
    serve: Callable[..., UpstreamServer],
) -> None:
    def head_or_echo(connection: ServerConnection, request: Request) -> None:
        if request.method == "HEAD":
            connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n")
        else:
            echo(connection, request)

    server = serve(head_or_echo)

    async def scenario(pool: UpstreamPool) -> tuple[list[tuple[bytes, bytes]], bytes, str]:
        head = await pool.request(server.address, "HEAD", b"/file", host(server))
        async with asyncio.timeout(1):
            body = await read_all(head)
        after = await pool.request(server.address, "GET", b"/after", host(server))
        return head.headers, body, str(json.loads(await read_all(after))["target"])

    headers, body, after = run(scenario)

    assert (b"content-length", b"1234") in headers
    assert body == b""
    assert after == "/after"
    assert server.accepts == 1


def test_two_head_calls_in_a_row_on_one_connection(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(
        lambda connection, request: connection.send(
            b"HTTP/1.1 204 No Content\r\nX-N: 1\r\n\r\n"
            if request.method == "GET"
            else b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        )
    )

    async def scenario(pool: UpstreamPool) -> list[int]:
        statuses = []
        for method in ("HEAD", "HEAD", "GET"):
            response = await pool.request(server.address, method, b"/", host(server))
            async with asyncio.timeout(1):
                assert await read_all(response) == b""
            statuses.append(response.status)
        return statuses

    assert run(scenario) == [200, 200, 204]
    assert server.accepts == 1


@pytest.mark.parametrize("pause", [False, True], ids=["same-packet", "separate-packets"])
def test_interim_1xx_answers_are_skipped(serve: Callable[..., UpstreamServer], pause: bool) -> None:
    def continue_then_answer(connection: ServerConnection, request: Request) -> None:
        connection.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if pause:
            time.sleep(0.05)
        connection.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        if pause:
            time.sleep(0.05)
        connection.send(reply(201, b"created", [("X-Final", "1")]))

    server = serve(continue_then_answer)

    async def scenario(pool: UpstreamPool) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        answers = []
        for _ in range(2):
            response = await pool.request(server.address, "POST", b"/", host(server), b"{}")
            answers.append((response.status, response.headers, await read_all(response)))
        return answers

    answers = run(scenario)

    for status, headers, body in answers:
        assert status == 201
        assert (b"x-final", b"1") in headers
        assert not any(name == b"link" for name, _ in headers)  # the 103's headers are not the answer's
        assert body == b"created"
    assert server.accepts == 1


# --- request bodies ------------------------------------------------------------------------------


def test_a_bytes_body_gets_a_content_length_and_an_empty_post_says_zero(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(digest)

    async def scenario(pool: UpstreamPool) -> list[dict[str, object]]:
        return [
            json.loads(await read_all(await pool.request(server.address, method, b"/", host(server), body)))
            for method, body in (("POST", b"abc"), ("POST", b""), ("GET", b""))
        ]

    with_body, empty_post, get = run(scenario)

    assert with_body["content-length"] == "3" and with_body["length"] == 3
    assert empty_post["content-length"] == "0"
    assert get["content-length"] is None and get["transfer-encoding"] is None


def test_a_streamed_body_of_known_length_arrives_intact(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(digest)
    parts = [bytes([i]) * (1000 + i) for i in range(20)]
    whole = b"".join(parts)

    async def scenario(pool: UpstreamPool) -> dict[str, object]:
        response = await pool.request(server.address, "PUT", b"/upload", host(server), stream(*parts), len(whole))
        return dict(json.loads(await read_all(response)))

    got = run(scenario)

    assert got == {
        "content-length": str(len(whole)),
        "transfer-encoding": None,
        "length": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
    }


def test_a_streamed_body_of_unknown_length_is_sent_chunked_and_arrives_intact(
    serve: Callable[..., UpstreamServer],
) -> None:
    server = serve(digest)
    parts = [b"first", b"", b"second", b"x" * 100_000, b"", b"last"]  # empty pieces must not end the body
    whole = b"".join(parts)

    async def scenario(pool: UpstreamPool) -> list[dict[str, object]]:
        answers = []
        for _ in range(2):  # and the connection is fit for another call afterwards
            response = await pool.request(server.address, "POST", b"/upload", host(server), stream(*parts))
            answers.append(dict(json.loads(await read_all(response))))
        return answers

    answers = run(scenario)

    for got in answers:
        assert got == {
            "content-length": None,
            "transfer-encoding": "chunked",
            "length": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest(),
        }
    assert server.accepts == 1


def test_a_large_streamed_upload_passes_through_write_flow_control(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(digest)
    parts = [bytes([i % 251]) * 65536 for i in range(128)]  # 8 MiB, more than the socket buffers hold
    whole = b"".join(parts)

    async def scenario(pool: UpstreamPool) -> dict[str, object]:
        response = await pool.request(server.address, "POST", b"/upload", host(server), stream(*parts), len(whole))
        return dict(json.loads(await read_all(response)))

    got = run(scenario)

    assert got["length"] == len(whole) and got["sha256"] == hashlib.sha256(whole).hexdigest()


# --- large answers and back-pressure -------------------------------------------------------------


def test_a_large_answer_is_read_incrementally_and_the_job_waits_for_a_slow_reader(
    serve: Callable[..., UpstreamServer],
) -> None:
    piece = 256 * 1024
    count = 128  # 32 MiB: more than the kernel buffers on both sides can take while nothing reads
    all_sent = threading.Event()

    def large(connection: ServerConnection, request: Request) -> None:
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # only the reader may buffer
        connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (piece * count))
        for i in range(count):
            connection.send(bytes([i % 256]) * piece)
        all_sent.set()

    server = serve(large)

    async def scenario(pool: UpstreamPool) -> tuple[bool, int, int, str]:
        response = await pool.request(server.address, "GET", b"/large", host(server))
        await asyncio.sleep(0.3)  # the caller is slow: the loop runs but nobody reads the body
        sent_while_paused = all_sent.is_set()
        assert response.buffered_body() is None  # not complete
        chunks = 0
        size = 0
        sha = hashlib.sha256()
        async for chunk in response.body():
            chunks += 1
            size += len(chunk)
            sha.update(chunk)
        response.release()
        return sent_while_paused, chunks, size, sha.hexdigest()

    sent_while_paused, chunks, size, sha = run(scenario)

    expected = hashlib.sha256(b"".join(bytes([i % 256]) * piece for i in range(count))).hexdigest()
    assert not sent_while_paused  # the pool stopped reading, so the job could not send it all
    assert size == piece * count and sha == expected
    assert chunks > 10
    assert all_sent.wait(2)


# --- failures ------------------------------------------------------------------------------------


def test_nothing_listening_is_connection_refused() -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario(pool: UpstreamPool) -> None:
        with pytest.raises(ConnectionRefused, match="refused"):
            await pool.request(address, "GET", b"/", [(b"host", address.encode())])

    run(scenario)


def test_a_job_closing_mid_body_raises_connection_broken_from_the_body(serve: Callable[..., UpstreamServer]) -> None:
    def cut_short(connection: ServerConnection, request: Request) -> bool:
        connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        time.sleep(0.05)
        return False  # closes the connection

    server = serve(cut_short)

    async def scenario(pool: UpstreamPool) -> tuple[int, bytes]:
        response = await pool.request(server.address, "GET", b"/", host(server))
        received = b""
        with pytest.raises(ConnectionBroken):
            async for chunk in response.body():
                received += chunk
        response.close()
        return response.status, received

    status, received = run(scenario)

    assert status == 200
    assert received == b"0123456789"


def test_a_job_closing_mid_chunked_body_raises_connection_broken(serve: Callable[..., UpstreamServer]) -> None:
    def cut_short(connection: ServerConnection, request: Request) -> bool:
        connection.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.05)
        return False

    server = serve(cut_short)

    async def scenario(pool: UpstreamPool) -> None:
        response = await pool.request(server.address, "GET", b"/", host(server))
        with pytest.raises(ConnectionBroken):
            async for _ in response.body():
                pass
        response.close()

    run(scenario)


def test_a_job_closing_before_answering_is_connection_broken(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(lambda connection, request: False)

    async def scenario(pool: UpstreamPool) -> None:
        with pytest.raises(ConnectionBroken):
            await pool.request(server.address, "POST", b"/", host(server), b"{}")

    run(scenario)

    assert server.accepts == 1  # a fresh connection is not retried: the job may have seen the call


def test_a_malformed_answer_is_connection_broken(serve: Callable[..., UpstreamServer]) -> None:
    server = serve(lambda connection, request: connection.send(b"NOT HTTP AT ALL\r\n\r\n"))

    async def scenario(pool: UpstreamPool) -> None:
        with pytest.raises(ConnectionBroken, match="malformed"):
            await pool.request(server.address, "GET", b"/", host(server))

    run(scenario)


def _hang_and_report_eof(eof: threading.Event) -> Callable[[ServerConnection], None]:
    def wait(connection: ServerConnection) -> None:
        connection.sock.settimeout(0.5)
        try:
            if connection.sock.recv(1) == b"":
                eof.set()  # the pool closed its side
        except TimeoutError:
            pass

    return wait


def test_a_call_cancelled_while_waiting_closes_its_connection(serve: Callable[..., UpstreamServer]) -> None:
    eof = threading.Event()
    wait_for_eof = _hang_and_report_eof(eof)
    server = serve(lambda connection, request: (wait_for_eof(connection), False)[1])

    async def scenario(pool: UpstreamPool) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the gateway's call_timeout, or the caller gone
                await pool.request(server.address, "PUT", b"/slow", host(server), b"x")
        await asyncio.sleep(0.05)

    run(scenario)

    assert eof.wait(1), "the job still holds a connection nobody will read"


def test_a_call_cancelled_while_waiting_on_the_retried_connection_closes_it(
    serve: Callable[..., UpstreamServer],
) -> None:
    close_now, closed, eof = threading.Event(), threading.Event(), threading.Event()
    wait_for_eof = _hang_and_report_eof(eof)

    def stale_then_hang(connection: ServerConnection, request: Request) -> bool:
        if request.target == "/first":
            echo(connection, request)
            close_now.wait(2)
            connection.close()
            closed.set()
        else:
            wait_for_eof(connection)
        return False

    server = serve(stale_then_hang)

    async def scenario(pool: UpstreamPool) -> None:
        await read_all(await pool.request(server.address, "GET", b"/first", host(server)))
        close_now.set()
        assert closed.wait(2)  # the pooled connection is stale; the next call is retried on a new one
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.request(server.address, "PUT", b"/slow", host(server), b"x")
        await asyncio.sleep(0.05)

    run(scenario)

    assert server.accepts == 2
    assert eof.wait(0.5), "the retried connection was left open after the call was cancelled"


def test_an_answer_delimited_by_the_connection_closing_is_complete(serve: Callable[..., UpstreamServer]) -> None:
    def close_delimited(connection: ServerConnection, request: Request) -> bool:
        connection.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, until close")
        return False

    server = serve(close_delimited)

    async def scenario(pool: UpstreamPool) -> bytes:
        response = await pool.request(server.address, "GET", b"/", host(server))
        return b"".join([chunk async for chunk in response.body()])

    assert run(scenario) == b"hello, until close"


def test_an_answer_delimited_by_the_connection_closing_is_broken_when_the_job_resets_it(
    serve: Callable[..., UpstreamServer],
) -> None:
    def reset(connection: ServerConnection, request: Request) -> bool:
        connection.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial")
        time.sleep(0.05)
        connection.reset()  # not an orderly close: the answer is not complete
        return False

    server = serve(reset)

    async def scenario(pool: UpstreamPool) -> None:
        with pytest.raises(ConnectionBroken):
            response = await pool.request(server.address, "GET", b"/", host(server))
            async for _ in response.body():
                pass

    run(scenario)
