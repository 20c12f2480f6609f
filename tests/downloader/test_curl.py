"""The libcurl transport (pazari.downloader.curl) against real servers on loopback, in the
test's loop: the behaviours the HTTP/1.1 client's tests pinned that still apply (gzip
members, deadlines, backpressure), decoding bombs with a loop-lag probe, slow and flooding
heads, and the SSRF guard where libcurl dials."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest

from pazari.downloader import curl, fetch
from pazari.downloader.ssrf import ForbiddenAddress, parse_networks
from pazari.downloader.transport import (
    ConnectError,
    DeadlineExceeded,
    InvalidRequest,
    ReadTimeout,
    ResponseError,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A raw TCP server on 127.0.0.1 whose connections ``handler`` answers."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        writer.close()

    port = free_port()
    server = await asyncio.start_server(guarded, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task() and "guarded" in repr(t.get_coro()):
                t.cancel()
        await server.wait_closed()


def answer(body: bytes, encoding: str = "", extra: bytes = b"") -> Handler:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    if encoding:
        head += b"Content-Encoding: " + encoding.encode() + b"\r\n"

    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(head + extra + b"\r\n" + body)
        await w.drain()
        await asyncio.sleep(0.5)

    return handle


async def get(client: curl.Client, url: str, deadline: float | None = None) -> bytes:
    resp = await client.request("GET", url, deadline=deadline)
    try:
        return await resp.read()
    finally:
        resp.release()


@pytest.fixture
async def client() -> AsyncIterator[curl.Client]:
    c = curl.Client(connect_timeout=2, read_timeout=2)
    yield c
    await c.close()


# ------------------------------------------------------------------------ decoding
DECODED = [
    ("gzip-one-member", gzip.compress(b"a" * 5000), "gzip", b"a" * 5000),
    # RFC 1952 §2.2: members back to back are one body (Go reads them all; libcurl's own
    # decoder refuses them, which is why decoding is ours).
    ("gzip-three-members", gzip.compress(b"one ") + gzip.compress(b"two ")
     + gzip.compress(b"three"), "gzip", b"one two three"),
    ("deflate-zlib", zlib.compress(b"z" * 999), "deflate", b"z" * 999),
    ("deflate-raw", zlib.compress(b"r" * 999)[2:-4], "deflate", b"r" * 999),
    ("brotli", brotli.compress(b"b" * 70000), "br", b"b" * 70000),
    ("identity", b"plain", "", b"plain"),
]


@pytest.mark.parametrize(("body", "encoding", "decoded"), [d[1:] for d in DECODED],
                         ids=[d[0] for d in DECODED])
async def test_bodies_are_decoded(client: curl.Client, body: bytes, encoding: str,
                                  decoded: bytes) -> None:
    async with serving(answer(body, encoding)) as url:
        assert await get(client, url + "/x") == decoded


@pytest.mark.parametrize(("body", "encoding"), [
    (gzip.compress(b"x" * 1000)[:-6], "gzip"),
    (b"not gzip at all", "gzip"),
    (brotli.compress(b"y" * 1000)[:-3], "br"),
    # After a member Go's multistream gzip.Reader reads the next member's header: bytes
    # that are not one are gzip.ErrHeader (or io.ErrUnexpectedEOF when fewer than a
    # header), never ignored (the HTTP/1.1 client's tests pinned this, commit ab81ed7).
    (gzip.compress(b"x" * 1000) + b"trailing garbage", "gzip"),
    (gzip.compress(b"x" * 1000) + b"\x1f", "gzip"),
], ids=["gzip-truncated", "gzip-garbage", "brotli-truncated", "gzip-trailing-garbage",
        "gzip-trailing-byte"])
async def test_broken_encodings_are_errors(client: curl.Client, body: bytes, encoding: str
                                           ) -> None:
    async with serving(answer(body, encoding)) as url:
        with pytest.raises(ResponseError, match="invalid compressed body"):
            await get(client, url + "/x")


class LoopLag:
    """The loop's longest stall between two wake-ups of a 2 ms sleep, as the CPU time the
    loop's thread spent in between (``worst``), and as wall time (``worst_wall``). The CPU
    measure is what code on the loop costs; wall time also counts the OS running other
    processes (5 test runs share 2 cores), so it is reported, not gated."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_wall = 0.0
        self.task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.002)
            self.worst = max(self.worst, time.thread_time() - cpu)
            self.worst_wall = max(self.worst_wall, loop.time() - start - 0.002)

    def __enter__(self) -> LoopLag:
        self.task = asyncio.get_running_loop().create_task(self._probe())
        return self

    def __exit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()


def _gzip_bomb(decoded_gib: int) -> bytes:
    member = gzip.compress(b"\0" * (1 << 20), 9)  # 1 MiB of zeros in ~1 KiB
    return member * (decoded_gib << 10)


BOMBS = [("gzip-2GiB", "gzip", _gzip_bomb(2)),
         ("brotli-256MiB", "br", brotli.compress(b"\0" * (256 << 20), quality=1))]


@pytest.mark.parametrize(("encoding", "bomb"), [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
async def test_decoding_bomb_is_cut_without_stalling_the_loop(encoding: str, bomb: bytes
                                                              ) -> None:
    """The sink's size limit (the processor's max_file_size) cuts the bomb; decoding runs
    in bounded steps, so the loop never stalls long and another download finishes
    meanwhile."""
    limit = 64 << 20
    c = curl.Client(connect_timeout=2, read_timeout=5)
    try:
        async with serving(answer(bomb, encoding)) as bomb_url, \
                serving(answer(b"small")) as small_url:
            seen = 0

            def sink(chunk: bytes) -> None:
                nonlocal seen
                seen += len(chunk)
                if seen > limit:
                    raise ValueError("file exceeds the maximum size")

            async def bomb_job() -> None:
                resp = await c.request("GET", bomb_url + "/bomb")
                try:
                    await resp.stream(sink)
                finally:
                    resp.release()

            with LoopLag() as lag:
                bombing = asyncio.ensure_future(bomb_job())
                small = await get(c, small_url + "/s")
                with pytest.raises(ValueError, match="maximum size"):
                    await bombing
    finally:
        await c.close()
    assert small == b"small"
    assert limit < seen <= limit + (1 << 20)
    assert lag.worst <= 0.05, (f"the loop stalled {lag.worst * 1000:.1f} ms of CPU "
                               f"({lag.worst_wall * 1000:.1f} ms wall)")


# ------------------------------------------------------------------- time bounds
async def _drip(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(200):
        w.write(b"x")
        await w.drain()
        await asyncio.sleep(0.1)


async def _slow_head(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx":
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(0.5)


async def _silent(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def test_deadline_bounds_a_dripping_body(client: curl.Client) -> None:
    loop = asyncio.get_running_loop()
    async with serving(_drip) as url:
        started = loop.time()
        with pytest.raises(DeadlineExceeded):
            await get(client, url + "/", deadline=loop.time() + 1.0)
        assert loop.time() - started < 5


@pytest.mark.parametrize("handler", [_slow_head, _silent], ids=["slowloris-head", "silent"])
async def test_read_timeout_ends_slow_heads(handler: Handler) -> None:
    c = curl.Client(connect_timeout=2, read_timeout=1)
    loop = asyncio.get_running_loop()
    try:
        async with serving(handler) as url:
            started = loop.time()
            with pytest.raises(ReadTimeout):
                await get(c, url + "/")
            assert loop.time() - started < 8
    finally:
        await c.close()


async def test_informational_flood_is_refused(client: curl.Client) -> None:
    """Endless 1xx heads: the head limits cover them all (libcurl's 5,000 header lines, our
    10 MiB as Go's MaxResponseHeaderBytes), not one head at a time."""

    async def flood(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(200_000):
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            await w.drain()

    async with serving(flood) as url:
        with pytest.raises(ResponseError, match="headers"):
            await get(client, url + "/")


async def test_connect_timeout_ends_an_unanswered_dial() -> None:
    """A listener whose accept queue is full (backlog 0, never accepting) drops further
    SYNs, so a dial to it gets no answer, as a blackholed address would: the connect
    timeout (CONNECTTIMEOUT_MS), not the read timeout nor a refusal, ends it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        # Connect until one dial stays unanswered: the queue is full from then on.
        for _ in range(64):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            _, writable, _ = select.select([], [filler], [], 0.5)
            if not writable:
                break
        else:
            pytest.fail("the listener's accept queue never filled")
        c = curl.Client(connect_timeout=1, read_timeout=10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(ConnectError, match="timed out"):
                await get(c, f"http://127.0.0.1:{port}/")
        finally:
            await c.close()
        assert 0.9 <= loop.time() - started < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------- backpressure
async def test_unread_body_pauses_the_transfer(client: curl.Client) -> None:
    """A body nobody streams yet is kept up to PENDING_LIMIT, then the transfer pauses; it
    resumes, complete, once stream() is called."""
    size = 8 << 20
    async with serving(answer(b"q" * size)) as url:
        resp = await client.request("GET", url + "/")
        try:
            await asyncio.sleep(0.5)
            transfer = resp._transfer
            assert transfer is not None
            assert transfer.pending_size <= curl.PENDING_LIMIT + (64 << 10)
            assert transfer.paused
            got = 0

            def count(chunk: bytes) -> None:
                nonlocal got
                got += len(chunk)

            await resp.stream(count)
        finally:
            resp.release()
    assert got == size


async def test_connections_are_reused(client: curl.Client) -> None:
    connections = 0

    async def keepalive(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            await reader.readuntil(b"\r\n\r\n")

    async with serving(keepalive) as url:
        for _ in range(5):
            assert await get(client, url + "/") == b"ok"
    assert connections == 1


# A file server in its own process (its socket writes must not count as the loop thread's):
# every connection gets a body of argv[1] bytes ("gzip" in argv[2]: compressed, a bomb).
BIG_BODY_SERVER = r"""
import gzip, socket, sys
size, coded = int(sys.argv[1]), sys.argv[2] == "gzip"
chunk = b"w" * 65536
body = gzip.compress(chunk * (size // 65536), 1) if coded else None
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
print(ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    c.recv(65536)
    length = len(body) if coded else size
    extra = b"Content-Encoding: gzip\r\n" if coded else b""
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
              % (length, extra))
    if coded:
        c.sendall(body)
    else:
        for _ in range(size // 65536):
            c.sendall(chunk)
    c.close()
"""


def _thread_wchar(tid: int) -> int:
    """Bytes the thread ``tid`` of this process passed to write(2) and friends."""
    for line in Path(f"/proc/self/task/{tid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


@pytest.mark.parametrize("coding", ["identity", "gzip"])
async def test_streamed_body_is_written_off_the_loop(tmp_path: Path, coding: str) -> None:
    """A streamed body's file writes run in a worker thread (issue 11): the loop thread's
    write(2) bytes stay a fraction of the body; the file is whole; the queue for the writer
    stays bounded (the transfer pauses instead)."""
    size = 32 << 20
    server = subprocess.Popen([sys.executable, "-c", BIG_BODY_SERVER, str(size), coding],
                              stdout=subprocess.PIPE)
    c = curl.Client(connect_timeout=2, read_timeout=10, allowed_networks=None)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        limits = fetch.Limits(timeout=60, job_timeout=0, max_size=1 << 30, max_redirects=3,
                              allow_private=True)
        loop_tid = threading.get_native_id()
        before = _thread_wchar(loop_tid)
        target = tmp_path / "body"
        result = await fetch.fetch(c, f"http://127.0.0.1:{port}/big", {}, "", limits,
                                   str(target), lambda _head: None, lambda _code: None)
        on_loop = _thread_wchar(loop_tid) - before
        os.close(result.fd)
    finally:
        await c.close()
        server.kill()
        server.wait(10)
    assert result.size == size and target.stat().st_size == size
    assert on_loop < size // 16, f"{on_loop} of {size} bytes written on the loop thread"


# ---------------------------------------------------------------------------- guard
async def test_guard_refuses_where_libcurl_dials() -> None:
    async with serving(answer(b"secret")) as url:
        refused = curl.Client(connect_timeout=2, read_timeout=2, allowed_networks=())
        allowed = curl.Client(connect_timeout=2, read_timeout=2,
                              allowed_networks=parse_networks(["127.0.0.0/8"]))
        try:
            with pytest.raises(ForbiddenAddress, match=r"refusing to connect to 127\.0\.0\.1"):
                await get(refused, url + "/")
            # A name that resolves inward is refused at the dial too.
            with pytest.raises(ForbiddenAddress):
                await get(refused, url.replace("127.0.0.1", "localhost") + "/")
            assert await get(allowed, url + "/") == b"secret"
        finally:
            await refused.close()
            await allowed.close()


@pytest.mark.parametrize("proxy", ["http://127.0.0.3:9", "127.0.0.3:9"])
async def test_guard_names_the_proxy_it_refuses(proxy: str) -> None:
    """Through a proxy libcurl dials only the proxy: the refusal names the proxy's host,
    not the target's (which nobody dialled)."""
    refused = curl.Client(connect_timeout=2, read_timeout=2, allowed_networks=())
    try:
        with pytest.raises(ForbiddenAddress,
                           match=r"refusing to connect to 127\.0\.0\.3 \(127\.0\.0\.3\)"):
            resp = await refused.request("GET", "http://example.invalid/", proxy=proxy)
            resp.release()
    finally:
        await refused.close()


@pytest.mark.parametrize(("url", "error"), [
    ("ftp://127.0.0.1/x", 'unsupported protocol scheme "ftp"'),
    ("file:///etc/passwd", 'unsupported protocol scheme "file"'),
    ("http://127.0.0.1/\x00", "invalid control character"),
    ("http:///nohost", "no Host"),
    ("http://[::1/x", "Invalid IPv6 URL"),
])
async def test_unusable_urls_are_refused(client: curl.Client, url: str, error: str) -> None:
    with pytest.raises(InvalidRequest, match=error.replace("(", r"\(")):
        await get(client, url)


def test_international_hosts_use_uts46() -> None:
    """UTS #46 non-transitional, as browsers: ß stays (it was "fass.de" with IDNA 2003)."""
    assert curl._normalize_url("http://faß.de:81/p?q") == "http://xn--fa-hia.de:81/p?q"
    assert curl._normalize_url("https://u:p@bücher.example/") == (
        "https://u:p@xn--bcher-kva.example/")


# ----------------------------------------------------------------------------- proxies
async def test_https_through_a_connect_proxy(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An https URL through an HTTP proxy: a CONNECT tunnel, TLS to the origin inside it
    (verified against the trust store), the proxy's own answer not taken for the
    response's head; the proxy's address passes the dial guard as a dial."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=origin", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def origin(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            await w.drain()
        w.close()

    origin_port = free_port()
    origin_server = await asyncio.start_server(origin, "127.0.0.1", origin_port, ssl=ctx)
    tunnels: list[bytes] = []

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def proxy(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        tunnels.append(head.split(b"\r\n", 1)[0])
        host, port = head.split(b" ", 2)[1].decode().rsplit(":", 1)
        up_r, up_w = await asyncio.open_connection(host, int(port))
        w.write(b"HTTP/1.1 200 Connection established\r\nX-Proxy: 1\r\n\r\n")
        await w.drain()
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, w))

    proxy_port = free_port()
    proxy_server = await asyncio.start_server(proxy, "127.0.0.1", proxy_port)
    c = curl.Client(connect_timeout=2, read_timeout=5,
                    allowed_networks=parse_networks(["127.0.0.0/8"]))
    try:
        resp = await c.request("GET", f"https://127.0.0.1:{origin_port}/s",
                               proxy=f"http://127.0.0.1:{proxy_port}")
        try:
            body = await resp.read()
        finally:
            resp.release()
    finally:
        await c.close()
        proxy_server.close()
        origin_server.close()
    assert resp.status == 200 and "x-proxy" not in resp.headers
    assert body == b"secure"
    assert tunnels == [f"CONNECT 127.0.0.1:{origin_port} HTTP/1.1".encode()]
