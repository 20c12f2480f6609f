"""http1's fast paths: the regex URL parser against the general (urlsplit) one, and the
per-exchange deadline watched by the connection's timer (no asyncio.timeout per request)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from pazari.downloader import http1

URLS = [
    "http://127.0.0.1:8080/f/1-2", "http://Example.COM/a/b?x=1&y=2", "https://h/", "http://h",
    "http://h:80/x", "https://h:443/x", "https://h:80/x", "http://h:0/", "http://h:08080/p",
    "http://h/p?", "http://h/p??x", "http://h/?", "http://h?q", "http://h/%41%zz",
    "http://h:99999/", "http://h:65535/", "http://h/a b", "http://h/#f", "http://u:p@h/x",
    "http://[::1]:8/x", "ftp://h/x", "http://h/é", "HTTP://h/x", "http://h.example.:81/~u/x;p=1",
    "http://h/a'b(c)*d+e,f;g=h:i@j!k$l&m", "http://h_1/x", "http://h/\x01", "http://:80/",
]


def _outcome(parse: object, url: str) -> object:
    try:
        return parse(url)  # type: ignore[operator]
    except http1.HTTPClientError as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("url", URLS)
def test_fast_parser_agrees_with_the_general_one(url: str) -> None:
    assert _outcome(http1.parse_url, url) == _outcome(http1._parse_url, url)


class Slow:
    """A server that answers the head after ``head_delay`` and then drips the body."""

    def __init__(self, head_delay: float, body_delay: float) -> None:
        self.head_delay = head_delay
        self.body_delay = body_delay
        self.server: asyncio.Server | None = None
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(self.head_delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
                await writer.drain()
                await asyncio.sleep(self.body_delay)
                writer.write(b"cd")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def slow_server(request: pytest.FixtureRequest) -> AsyncIterator[Slow]:
    head_delay, body_delay = request.param
    slow = Slow(head_delay, body_delay)
    slow.server = await asyncio.start_server(slow.serve, "127.0.0.1", 0)
    slow.url = f"http://127.0.0.1:{slow.server.sockets[0].getsockname()[1]}/x"
    yield slow
    slow.server.close()
    await slow.server.wait_closed()


DEADLINES = [
    # (head delay, body delay, deadline in s, expected outcome)
    ("in-time", 0.0, 0.0, 2.0, b"abcd"),
    ("late-head", 5.0, 0.0, 0.3, "DeadlineExceeded"),
    ("late-body", 0.0, 5.0, 0.3, "DeadlineExceeded"),
]


@pytest.mark.parametrize(("slow_server", "deadline", "expected"),
                         [((c[1], c[2]), c[3], c[4]) for c in DEADLINES],
                         ids=[c[0] for c in DEADLINES], indirect=["slow_server"])
async def test_deadline_bounds_the_exchange(slow_server: Slow, deadline: float,
                                            expected: object) -> None:
    client = http1.Client(read_timeout=30)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        resp = await client.request("GET", slow_server.url,
                                    deadline=loop.time() + deadline)
        try:
            outcome: object = await resp.read()
        finally:
            resp.release()
    except http1.HTTPClientError as exc:
        outcome = type(exc).__name__
    finally:
        await client.close()
    assert outcome == expected
    assert time.monotonic() - started < deadline + 1.0


async def test_deadline_bounds_connecting() -> None:
    """A deadline already past when a new connection is needed: refused at once."""
    client = http1.Client()
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(http1.DeadlineExceeded):
            await client.request("GET", "http://127.0.0.1:9/x", deadline=loop.time() - 1)
    finally:
        await client.close()


async def test_body_waits_in_the_socket_until_streamed() -> None:
    """Between the head and stream(), at most PENDING_LIMIT of the body is kept: the rest
    stays in the socket (the server cannot finish writing), then arrives intact."""
    size = 64 << 20  # far more than the loopback socket buffers hold
    chunk = bytes(range(256)) * 4096
    sent = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        sent.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/big"
    client = http1.Client(read_timeout=30)
    got = 0
    try:
        resp = await client.request("GET", url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await sent.wait()  # the client is not reading: the server must block

        def sink(data: bytes) -> None:
            nonlocal got
            got += len(data)

        await resp.stream(sink)
        resp.release()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert got == size
    assert sent.is_set()
