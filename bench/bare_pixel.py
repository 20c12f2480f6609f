"""The bare pixel server, the peer of scratchd's pixel path (issue 17): a uvloop protocol
on httptools that answers every request with the 43-byte GIF and nothing else. No event,
no spool, no tenant: what answering a pixel costs in Python at the least.

``python -m bench.bare_pixel PORT``
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

from pazari.scratchd.app import GIF

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nCache-Control: no-store\r\n"
            b"Content-Length: %d\r\n\r\n" % len(GIF)) + GIF


class Pixel:
    """One connection: pipelined requests answered in one write per read."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
            return
        if self.pending:
            self.transport.write(RESPONSE * self.pending)
            self.pending = 0

    def on_message_complete(self) -> None:
        self.pending += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None

    def eof_received(self) -> None:
        pass


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Pixel, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
