"""The limit for the python3 wrapper: a bare uvloop + httptools HTTP/1.1 server doing the addition.

    python bare_server.py [PORT]

It parses the same JSON body the wrapper does and answers JSON, with keep-alive, and nothing more
(no routing, no metrics, no logs, no thread pool): what one Python process on one CPU can answer
at best. bench/wrapper.py runs it in the wrapper's own base image, side by side with the wrapper.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httptools
import uvloop


class AdditionProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.body: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        payload = json.loads(b"".join(self.body))
        self.body = []
        answer = json.dumps(payload["a"] + payload["b"]).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        if not self.parser.should_keep_alive():
            self.transport.close()


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(AdditionProtocol, "0.0.0.0", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7000))
