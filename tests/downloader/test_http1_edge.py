"""http1.Client at the edges, against real servers on 127.0.0.1: keep-alive pooling,
timeouts and cancellation, connection errors and the SSRF guard, TLS, plain and CONNECT
proxies, and the DNS cache. Servers and fixtures come from test_http1.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pazari.downloader import http1
from pazari.downloader.ssrf import ForbiddenAddress, guarded
from tests.support.ports import free_port

from . import test_http1 as base
from .test_http1 import BOUND, RawServer, answering, fetch, new_client, ok

# The shared fixtures (pytest finds them by name in this module's namespace).
raw = base.raw
client = base.client
apps = base.apps
loop_errors = base.loop_errors
event_loop_policy = base.event_loop_policy

pytestmark = base.pytestmark  # both loops (see test_http1.py)

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


# -- keep-alive ------------------------------------------------------------------------------
async def test_sequential_requests_share_one_connection(client: http1.Client,
                                                        apps: base.Serve) -> None:
    peers: list[int] = []

    async def peer(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        return web.Response(body=await request.read() or b"get")

    url = await apps([web.route("*", "/{tail:.*}", peer)])
    for i in range(5):
        method, body = ("POST", f"b{i}".encode()) if i % 2 else ("GET", None)
        _, data = await fetch(client, f"{url}/{i}", method, body=body)
        assert data == (body or b"get")
    assert len(peers) == 5 and len(set(peers)) == 1


def partial_then_stall(head: bytes) -> base.Handler:
    """First connection: ``head`` (and part of a body), then nothing until release or EOF;
    later connections answer normally."""

    async def handle(reader: Reader, writer: Writer,
                     srv: RawServer, conn: int) -> None:
        if conn > 1:
            await answering(ok())(reader, writer, srv, conn)
            return
        await srv.next_request(reader, conn)
        writer.write(head)
        await writer.drain()
        await srv.until_hangup(reader, conn)

    return handle


@pytest.mark.parametrize("read_first", [False, True], ids=["unread", "partly-read"])
async def test_released_unfinished_body_closes_connection(client: http1.Client, raw: Any,
                                                          read_first: bool) -> None:
    srv = await raw(partial_then_stall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"p" * 100))
    async with asyncio.timeout(BOUND):
        resp = await client.request("GET", srv.url)
        if read_first:
            got = asyncio.Event()
            task = asyncio.ensure_future(resp.stream(lambda _c: got.set()))
            await got.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        resp.release()
        await srv.hangup.wait()  # the client closed it
        _, data = await fetch(client, srv.url)
    assert data == b"ok" and [r.conn for r in srv.requests] == [1, 2]


async def test_bytes_after_response_spoil_connection(client: http1.Client, raw: Any) -> None:
    # The garbage comes in the same segment as the response, and as a later segment.
    srv = await raw(answering(ok(b"one") + b"GARBAGE", ok(b"two")))
    _, first = await fetch(client, srv.url)
    _, second = await fetch(client, srv.url)
    assert (first, second, srv.connections) == (b"one", b"one", 2)

    async def late_garbage(reader: Reader, writer: Writer,
                           srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(ok(b"late"))
        await asyncio.wait_for(srv.release.wait(), BOUND)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nunasked")
        await writer.drain()
        await srv.until_hangup(reader, conn)

    late = await raw(late_garbage)
    _, data = await fetch(client, late.url)
    assert data == b"late"
    late.release.set()
    await asyncio.wait_for(late.hangup.wait(), BOUND)  # the client dropped it at once
    _, data = await fetch(client, late.url)
    assert [r.conn for r in late.requests] == [1, 2]


@pytest.mark.parametrize("answers_before_closing", [1, 0],
                         ids=["closed-while-idle", "closed-on-next-request"])
async def test_server_closing_idle_connection_is_retried(client: http1.Client, raw: Any,
                                                         answers_before_closing: int) -> None:
    """A keep-alive connection the server drops (at once, or when the next request comes
    in, with no answer) costs nothing: the request goes out again on a new connection."""

    async def handle(reader: Reader, writer: Writer,
                     srv: RawServer, conn: int) -> None:
        req = await srv.next_request(reader, conn)
        if conn == 1:
            writer.write(ok(b"first", "Keep-Alive: timeout=1"))
            await writer.drain()
            if answers_before_closing == 0:
                await srv.next_request(reader, conn)  # read and drop the next request
            return  # the handler's close: FIN
        writer.write(ok(req.line.encode()))
        await writer.drain()

    srv = await raw(handle)
    _, data = await fetch(client, srv.url + "/a")
    assert data == b"first"
    if answers_before_closing:
        # Wait until the client has seen the FIN, so the pool knows the connection is gone.
        async with asyncio.timeout(BOUND):
            while not all(c.closed for idle in client._idle.values() for c in idle):
                await asyncio.sleep(0.01)
    resp, data = await fetch(client, srv.url + "/b", "POST", body=b"replayed")
    assert (resp.status, data) == (200, b"POST /b HTTP/1.1")
    assert srv.connections == 2
    assert [r.body for r in srv.requests if r.line.startswith("POST")][-1] == b"replayed"


async def test_idle_connections_expire_after_keepalive(raw: Any) -> None:
    async def handle(reader: Reader, writer: Writer,
                     srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(ok())
        await writer.drain()
        await srv.until_hangup(reader, conn)  # closed by the client's sweep

    srv = await raw(handle)
    c = new_client(keepalive=0.2)
    try:
        await fetch(c, srv.url)
        await asyncio.wait_for(srv.hangup.wait(), BOUND)
        srv.hangup.clear()
        await fetch(c, srv.url)
        assert [r.conn for r in srv.requests] == [1, 2]
    finally:
        await c.close()


async def test_expired_idle_connection_is_not_taken(raw: Any) -> None:
    srv = await raw(answering(ok()))
    c = new_client(keepalive=0.2)
    try:
        await fetch(c, srv.url)
        # Older than keepalive but not yet swept (the sweep runs later): never used.
        [conn] = c._idle[("http", "127.0.0.1", str(srv.port), "")]
        conn.idle_since -= 1.0
        await fetch(c, srv.url)
        assert srv.connections == 2 and conn.closed
    finally:
        await c.close()


async def test_idle_pool_is_bounded_per_origin(raw: Any) -> None:
    arrived, closed = asyncio.Event(), asyncio.Event()
    counts = {"in": 0, "closed": 0}

    async def handle(reader: Reader, writer: Writer, srv: RawServer, conn: int) -> None:
        try:
            while True:
                await srv.next_request(reader, conn)
                counts["in"] += 1
                if counts["in"] == 3:
                    arrived.set()
                await asyncio.wait_for(arrived.wait(), BOUND)  # three connections at once
                writer.write(ok())
                await writer.drain()
        except asyncio.IncompleteReadError:
            counts["closed"] += 1
            if counts["closed"] == 2:
                closed.set()

    srv = await raw(handle)
    c = new_client(max_idle_per_origin=1)
    try:
        await asyncio.gather(*(fetch(c, srv.url) for _ in range(3)))
        await asyncio.wait_for(closed.wait(), BOUND)  # two of three did not fit the pool
        await fetch(c, srv.url)  # the one kept serves the next request
        assert srv.connections == 3 and counts["closed"] == 2
    finally:
        await c.close()


async def test_close_closes_idle_connections(client: http1.Client, raw: Any) -> None:
    async def handle(reader: Reader, writer: Writer,
                     srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(ok())
        await writer.drain()
        await srv.until_hangup(reader, conn)

    srv = await raw(handle)
    await fetch(client, srv.url)
    assert not srv.hangup.is_set()
    await client.close()
    await asyncio.wait_for(srv.hangup.wait(), BOUND)




# -- timeouts and cancellation ---------------------------------------------------------------
async def test_connect_timeout() -> None:
    """A listener whose accept queue is full drops further SYNs: the dial hangs until the
    connect timeout (works on 127.0.0.1 with Linux's default tcp_abort_on_overflow=0)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    c = new_client(connect_timeout=0.3)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
        start = time.monotonic()
        try:
            resp = await asyncio.wait_for(c.request("GET", f"http://127.0.0.1:{port}/"), BOUND)
        except http1.ConnectError as exc:
            assert str(exc) == f"dial tcp 127.0.0.1:{port}: i/o timeout"
        else:
            resp.release()
            pytest.skip("the kernel accepted past a full backlog: no way to stall a dial")
        assert 0.25 <= time.monotonic() - start < 2
    finally:
        await c.close()
        for s in fillers:
            s.close()
        listener.close()


def stalling(head: bytes) -> base.Handler:
    """Read the request, send ``head`` (maybe empty), then say nothing until release."""

    async def handle(reader: Reader, writer: Writer, srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(head)
        await writer.drain()
        await srv.until_hangup(reader, conn)

    return handle


@pytest.mark.parametrize(("head", "at_head"), [
    (b"", True),
    (b"HTTP/1.1 200 OK\r\nContent-", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome", False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n", False),
], ids=["before-head", "mid-head", "mid-body", "between-chunks"])
async def test_read_timeout(raw: Any, head: bytes, at_head: bool) -> None:
    srv = await raw(stalling(head))
    c = new_client(read_timeout=0.3)
    start = time.monotonic()
    try:
        async with asyncio.timeout(BOUND):
            with pytest.raises(http1.ReadTimeout, match=r"within the read timeout \(0.3s\)"):
                resp = await c.request("GET", srv.url)
                try:
                    assert not at_head, "the head should not have completed"
                    await resp.read()
                finally:
                    resp.release()
            await srv.hangup.wait()  # and the connection was closed
    finally:
        await c.close()
    assert 0.25 <= time.monotonic() - start < 2


async def test_read_timeout_is_per_silence_not_total(raw: Any) -> None:
    async def trickle(reader: Reader, writer: Writer, srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":
            await asyncio.sleep(0.1)  # the pace is what is tested: 0.6 s in all, > 0.35 s
            writer.write(bytes([byte]))
            await writer.drain()

    srv = await raw(trickle)
    c = new_client(read_timeout=0.35)
    try:
        _, data = await fetch(c, srv.url)
    finally:
        await c.close()
    assert data == b"abcdef"


@pytest.mark.parametrize(("head", "release_first"), [
    (b"", True), (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome", False),
], ids=["during-request", "during-stream", "during-stream-never-released"])
async def test_cancellation_closes_connection(client: http1.Client, raw: Any, head: bytes,
                                              release_first: bool) -> None:
    """The caller's deadline (asyncio.timeout) cancels the exchange: the connection is
    closed at once and nothing is left pending (loop_errors checks asyncio's reports)."""
    srv = await raw(stalling(head))
    resp: http1.Response | None = None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            resp = await client.request("GET", srv.url)
            await resp.stream(lambda _chunk: None)
    if resp is not None and release_first:
        resp.release()
    await asyncio.wait_for(srv.hangup.wait(), BOUND)
    if resp is not None:
        resp.release()
    assert not client._idle


# -- connection errors -----------------------------------------------------------------------
async def test_refused(client: http1.Client) -> None:
    port = free_port()
    with pytest.raises(http1.ConnectError) as info:
        await asyncio.wait_for(client.request("GET", f"http://127.0.0.1:{port}/"), BOUND)
    assert str(info.value) == f"dial tcp 127.0.0.1:{port}: connect: connection refused"


@pytest.mark.parametrize(("addresses", "works", "message"), [
    (["127.0.0.2", "127.0.0.1"], True, ""),
    (["127.0.0.2", "127.0.0.3"], False, "dial tcp 127.0.0.3:{port}: connect: connection refused"),
    ([], False, "dial tcp: lookup svc.test: no addresses"),
], ids=["falls-back", "all-refused-last-error", "none"])
async def test_addresses_tried_in_order(raw: Any, addresses: list[str], works: bool,
                                        message: str) -> None:
    srv = await raw(answering(ok(b"second address")))  # listens on 127.0.0.1 only
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return addresses

    c = new_client(resolver=resolver)
    try:
        if works:
            _, data = await fetch(c, f"http://svc.test:{srv.port}/")
            assert data == b"second address"
        else:
            with pytest.raises(http1.ConnectError) as info:
                await fetch(c, f"http://svc.test:{srv.port}/")
            assert str(info.value) == message.format(port=srv.port)
    finally:
        await c.close()
    assert asked == [("svc.test", srv.port)]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["literal", "name"])
async def test_ssrf_guard_refuses_before_dialling(raw: Any, host: str) -> None:
    srv = await raw(answering(ok()))
    c = new_client(resolver=guarded(http1.default_resolver))
    try:
        with pytest.raises(ForbiddenAddress, match="private, loopback or link-local"):
            await fetch(c, f"http://{host}:{srv.port}/")
    finally:
        await c.close()
    assert srv.connections == 0


# -- TLS -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is missing: apt-get install -y openssl")
        pytest.skip("openssl is missing (apt-get install -y openssl)")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "c.pem", tmp / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=30)
    yield cert, key


@pytest.fixture
async def tls_url(apps: base.Serve, certificate: tuple[Path, Path]) -> str:
    """An aiohttp HTTPS server with a self-signed certificate for 127.0.0.1; it answers
    with the Proxy-Authorization header it got (none must leak through a tunnel)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)

    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="secret " + request.headers.get("Proxy-Authorization", "-"))

    return await apps([web.get("/", secret)], ssl_context=ctx) + "/"


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.mark.parametrize(("trust", "host", "match"), [
    (False, "127.0.0.1", "certificate verify failed"),
    (True, "localhost", "certificate verify failed"),
    (True, "127.0.0.1", ""),
], ids=["untrusted", "name-mismatch", "trusted"])
async def test_tls(tls_url: str, certificate: tuple[Path, Path], trust: bool, host: str,
                   match: str) -> None:
    url = tls_url.replace("127.0.0.1", host)
    c = new_client(ssl_context=trusting(certificate) if trust else None,
                     resolver=lambda _h, _p: _loopback())
    try:
        if match:
            with pytest.raises(http1.TLSError, match=match):
                await fetch(c, url)
            return
        for _ in range(2):
            resp, data = await fetch(c, url)
            assert (resp.status, data) == (200, b"secret -")
    finally:
        await c.close()


async def _loopback() -> list[str]:
    return ["127.0.0.1"]


# -- proxies ---------------------------------------------------------------------------------
def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(("url", "line", "host", "auth"), [
    ("http://example.test/p?q=1", "GET http://example.test/p?q=1 HTTP/1.1", "example.test",
     None),
    ("http://Example.test:80/", "GET http://example.test/ HTTP/1.1", "example.test", None),
    ("http://example.test:8080/a b", "GET http://example.test:8080/a%20b HTTP/1.1",
     "example.test:8080", None),
    ("http://[::1]/x", "GET http://[::1]/x HTTP/1.1", "[::1]", None),
    ("http://[::1]:81/x", "GET http://[::1]:81/x HTTP/1.1", "[::1]:81", None),
    ("http://u:p@example.test/", "GET http://example.test/ HTTP/1.1", "example.test",
     basic("u:p")),
], ids=["origin", "default-port-dropped", "port-kept", "ipv6", "ipv6-port", "userinfo"])
@pytest.mark.parametrize("proxy_auth", ["", "pu:pp"], ids=["no-proxy-auth", "proxy-auth"])
async def test_plain_proxy(raw: Any, url: str, line: str, host: str, auth: str | None,
                           proxy_auth: str) -> None:
    """A plain proxy gets the absolute-form target (RFC 9112 §3.2.2); only the proxy's
    address is resolved and dialled."""
    proxy = await raw(answering(ok(b"via proxy")))
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(f"{host}:{port}")
        return ["127.0.0.1"]

    c = new_client(resolver=resolver)
    userinfo = proxy_auth + "@" if proxy_auth else ""
    try:
        _, data = await fetch(c, url, proxy=f"http://{userinfo}127.0.0.1:{proxy.port}")
    finally:
        await c.close()
    [req] = proxy.requests
    assert (data, req.line, req.headers["host"]) == (b"via proxy", line, host)
    assert req.headers.get("authorization") == auth
    assert req.headers.get("proxy-authorization") == (basic(proxy_auth) if proxy_auth
                                                      else None)
    assert resolved == [f"127.0.0.1:{proxy.port}"]


def connect_proxy(answer: bytes | None) -> base.Handler:
    """A CONNECT proxy: records the CONNECT request, then either answers ``answer`` and
    hangs up, or (None) answers 200 and pipes bytes both ways to the requested address."""

    async def handle(reader: Reader, writer: Writer, srv: RawServer, conn: int) -> None:
        req = await srv.next_request(reader, conn)
        if answer is not None:
            writer.write(answer)
            await writer.drain()
            return
        host, _, port = req.line.split(" ")[1].rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: Reader, dst: Writer) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)

    return handle


@pytest.mark.parametrize(("answer", "trust", "error", "match"), [
    (None, True, None, ""),
    (None, False, http1.TLSError, "certificate verify failed"),
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", True, http1.ConnectError,
     "^proxyconnect: HTTP/1.1 403 Forbidden$"),
    (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", True, http1.ConnectError,
     "^proxyconnect: HTTP/1.1 407 Proxy Authentication Required$"),
    (b"", True, http1.ConnectError, "proxy closed the connection"),
], ids=["tunnel", "tunnel-untrusted", "refused-403", "refused-407", "closed"])
async def test_connect_proxy(raw: Any, tls_url: str, certificate: tuple[Path, Path],
                             answer: bytes | None, trust: bool,
                             error: type[Exception] | None, match: str) -> None:
    proxy = await raw(connect_proxy(answer))
    c = new_client(ssl_context=trusting(certificate) if trust else None)
    via = f"http://pu:pp@127.0.0.1:{proxy.port}"
    try:
        if error is None:
            for _ in range(2):  # the second one goes through the pooled tunnel
                resp, data = await fetch(c, tls_url, proxy=via)
                assert (resp.status, data) == (200, b"secret -")
            assert proxy.connections == 1
        else:
            with pytest.raises(error, match=match):
                await fetch(c, tls_url, proxy=via)
    finally:
        await c.close()
    tls_port = tls_url.rsplit(":", 1)[1].rstrip("/")
    req = proxy.requests[0]
    assert req.line == f"CONNECT 127.0.0.1:{tls_port} HTTP/1.1"
    assert req.headers["host"] == f"127.0.0.1:{tls_port}"
    assert req.headers["proxy-authorization"] == basic("pu:pp")


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_https_proxy(apps: base.Serve, certificate: tuple[Path, Path],
                           tls_url: str, scheme: str) -> None:
    """A proxy reached over TLS: fine for http targets (absolute-form inside the TLS
    session); for https targets it would need TLS in TLS, refused up front."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)

    async def proxied(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.method} {request.raw_path} {request.host}")

    proxy = await apps([web.route("*", "/{tail:.*}", proxied)], ssl_context=ctx)
    c = new_client(ssl_context=trusting(certificate))
    try:
        if scheme == "http":
            _, data = await fetch(c, "http://example.test/p?q=1", proxy=proxy)
            assert data == b"GET http://example.test/p?q=1 example.test"
        else:
            with pytest.raises(http1.ConnectError, match="https proxies are not supported"):
                await fetch(c, tls_url, proxy=proxy)
    finally:
        await c.close()


# -- DNS cache -------------------------------------------------------------------------------
@pytest.mark.parametrize(("ttl", "calls"), [(30.0, 1), (0.0, 3)], ids=["within-ttl", "no-ttl"])
async def test_dns_cache(raw: Any, ttl: float, calls: int) -> None:
    srv = await raw(answering(ok(b"fresh", "Connection: close"), close=True))
    asked: list[tuple[str, int]] = []

    async def counting(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    c = new_client(resolver=http1.caching(counting, ttl=ttl))
    try:
        for _ in range(3):
            _, data = await fetch(c, f"http://svc.test:{srv.port}/")
            assert data == b"fresh"
    finally:
        await c.close()
    assert srv.connections == 3  # every request dialled: the resolver was asked each time
    assert asked == [("svc.test", srv.port)] * calls


async def test_dns_cache_keys_and_bound() -> None:
    asked: list[tuple[str, int]] = []

    async def counting(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [f"10.0.0.{len(asked)}"]

    cached = http1.caching(counting, ttl=30.0, size=2)
    assert await cached("a.test", 80) == ["10.0.0.1"]
    assert await cached("a.test", 80) == ["10.0.0.1"]
    assert await cached("a.test", 443) == ["10.0.0.2"]  # the port is part of the key
    assert await cached("b.test", 80) == ["10.0.0.3"]  # full: the cache starts over
    assert await cached("a.test", 80) == ["10.0.0.4"]
    assert len(asked) == 4


async def test_dns_cache_shares_one_lookup_between_concurrent_misses() -> None:
    asked: list[str] = []
    both_asked, answer = asyncio.Event(), asyncio.Event()

    async def slow(host: str, port: int) -> list[str]:
        asked.append(host)
        if len(asked) == 2:
            both_asked.set()
        await answer.wait()
        if host == "gone.test":
            raise http1.ConnectError(f"dial tcp: lookup {host}: no such host")
        return ["127.0.0.1"]

    cached = http1.caching(slow, ttl=30.0)
    async with asyncio.timeout(BOUND):
        waiters = [asyncio.ensure_future(cached(h, 80)) for h in ["a.test"] * 4
                   + ["gone.test"] * 3]
        impatient = asyncio.ensure_future(cached("a.test", 80))
        await both_asked.wait()
        impatient.cancel()  # one caller's deadline: the others still get the answer
        answer.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
    assert asked == ["a.test", "gone.test"]
    assert results[:4] == [["127.0.0.1"]] * 4
    assert all(isinstance(r, http1.ConnectError) for r in results[4:])
    assert impatient.cancelled()
    assert await cached("a.test", 80) == ["127.0.0.1"]
    with pytest.raises(http1.ConnectError):  # a failure is not cached: asked again
        await cached("gone.test", 80)
    assert asked == ["a.test", "gone.test", "gone.test"]
