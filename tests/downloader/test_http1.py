"""http1.Client against real servers on 127.0.0.1: requests as they go on the wire, response
framing, keep-alive, decoding and streaming (timeouts, errors, TLS, proxies and the DNS cache
are in test_http1_edge.py). Raw ``asyncio.start_server`` servers where the bytes must be
exact or wrong; aiohttp where a normal server is the point."""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import gzip
import json
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop
from aiohttp import web

from pazari.downloader import http1

# Both loops via an event_loop_policy override (deprecated in pytest-asyncio 1.x, which
# wants a pytest_asyncio_loop_factories hook in the root conftest.py: not ours to edit).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Overriding the .event_loop_policy. fixture:pytest.PytestDeprecationWarning")
BOUND = 5.0  # seconds: the most any single step here may take


# -- servers -------------------------------------------------------------------------------
@dataclass
class Request:
    line: str
    headers: dict[str, str]  # lower-case name -> value
    body: bytes
    conn: int  # which accepted connection (1-based) carried it


async def read_request(reader: asyncio.StreamReader, conn: int) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    line, *fields = head[:-4].decode("utf-8", "surrogateescape").split("\r\n")
    headers: dict[str, str] = {}
    for entry in fields:
        name, _, value = entry.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(line, headers, body, conn)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer", int],
                   Awaitable[None]]


class RawServer:
    """``asyncio.start_server`` on 127.0.0.1 running ``handler`` per connection; counts
    connections, records requests and signals ``hangup`` when a client closes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[Request] = []
        self.hangup = asyncio.Event()
        self.release = asyncio.Event()  # handlers that stall wait on this
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def next_request(self, reader: asyncio.StreamReader, conn: int) -> Request:
        req = await read_request(reader, conn)
        self.requests.append(req)
        return req

    async def until_hangup(self, reader: asyncio.StreamReader, conn: int) -> None:
        """The client's next move on a connection the handler is done with: a hang-up sets
        ``hangup``; a request instead is recorded (a test comparing ``requests``' conns
        sees the reuse) and the connection closed."""
        try:
            await self.next_request(reader, conn)
        except asyncio.IncompleteReadError:
            self.hangup.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer, self, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hangup.set()
        except asyncio.CancelledError:
            pass  # stop(): a cancelled handler task would be reported by asyncio's streams
        finally:
            writer.close()

    async def stop(self) -> None:
        self.release.set()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def answering(*responses: bytes, close: bool = False) -> Handler:
    """Each request on a connection gets the next response (the last one repeats); with
    ``close`` the server hangs up after each response. Reading on sees the client's EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     srv: RawServer, conn: int) -> None:
        n = 0
        while True:
            await srv.next_request(reader, conn)
            writer.write(responses[min(n, len(responses) - 1)])
            await writer.drain()
            n += 1
            if close:
                return

    return handle


def ok(body: bytes = b"ok", *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def make(handler: Handler) -> RawServer:
        srv = await RawServer(handler).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


Serve = Callable[..., Awaitable[str]]


@functools.cache
def system_tls() -> ssl.SSLContext:
    """What the client builds when given no context, built once (loading the system CAs
    costs ~80 ms per client)."""
    return ssl.create_default_context()


def new_client(**kw: Any) -> http1.Client:
    kw.setdefault("ssl_context", system_tls())  # an explicit None tests the default
    return http1.Client(**kw)


@pytest.fixture
async def apps() -> AsyncIterator[Serve]:
    """Start aiohttp apps (``serve(routes, host=..., ssl_context=...)`` -> base URL)."""
    runners: list[web.AppRunner] = []

    async def serve(routes: list[web.RouteDef], host: str = "127.0.0.1",
                    ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, host, 0, ssl_context=ssl_context).start()
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if ssl_context is not None else "http"
        return f"{scheme}://{shown}:{runner.addresses[0][1]}"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[http1.Client]:
    c = new_client(connect_timeout=2.0, read_timeout=BOUND)
    yield c
    await c.close()


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on uvloop, which the daemons run (runtime.service.run), and on asyncio's
    own loop: the two report a reset, a refused dial or a lost TLS session differently."""
    policy: asyncio.AbstractEventLoopPolicy = (
        uvloop.EventLoopPolicy() if request.param == "uvloop"
        else asyncio.DefaultEventLoopPolicy())
    return policy


@pytest.fixture(autouse=True)
async def loop_errors(event_loop_policy: asyncio.AbstractEventLoopPolicy
                      ) -> AsyncIterator[list[dict[str, Any]]]:
    """Anything asyncio reports (a future exception never retrieved, a task destroyed while
    pending) fails the test: the client must leave nothing behind."""
    loop = asyncio.get_running_loop()
    # The policy took effect: a silent fallback to one loop would hide half the coverage.
    assert isinstance(loop, uvloop.Loop) == isinstance(event_loop_policy,
                                                       uvloop.EventLoopPolicy)
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    yield seen
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert not seen, [ctx.get("message") for ctx in seen]


async def fetch(client: http1.Client, url: str, method: str = "GET", **kw: Any
                ) -> tuple[http1.Response, bytes]:
    async with asyncio.timeout(BOUND):
        resp = await client.request(method, url, **kw)
        try:
            return resp, await resp.read()
        finally:
            resp.release()


# -- requests on the wire ------------------------------------------------------------------
@pytest.mark.parametrize(("method", "body", "length"), [
    ("GET", None, None), ("POST", b'{"a":1}', "7"), ("POST", b"", "0"), ("PUT", b"x" * 70_000,
                                                                         "70000"),
], ids=["get", "post", "post-empty", "put-large"])
async def test_method_and_body(client: http1.Client, apps: Serve, method: str,
                               body: bytes | None, length: str | None) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "body": (await request.read())
                                  .decode(), "length": request.headers.get("Content-Length")})

    url = await apps([web.route("*", "/echo", echo)])
    resp, data = await fetch(client, url + "/echo", method, body=body)
    assert resp.status == 200 and resp.reason == "OK"
    assert json.loads(data) == {"method": method, "body": (body or b"").decode(),
                                "length": length}


@pytest.mark.parametrize(("path", "target"), [
    ("", "/"),
    ("/plain/file.txt", "/plain/file.txt"),
    ("/a b/c d", "/a%20b/c%20d"),
    ("/caf\u00e9/\u65e5\u672c", "/caf%C3%A9/%E6%97%A5%E6%9C%AC"),
    ("/keep%2Fslash/%41", "/keep%2Fslash/%41"),
    ("/p;v=1/@:!$&'()*+,=-._~", "/p;v=1/@:!$&'()*+,=-._~"),
    ("/q?x=1&y=a b", "/q?x=1&y=a%20b"),
    ("/q?u=%2F&n=\u00e9&s=a/b?c", "/q?u=%2F&n=%C3%A9&s=a/b?c"),
    ("/q?a=\"<>\"", "/q?a=%22%3C%3E%22"),
    ("/frag?x=1#section", "/frag?x=1"),
], ids=["empty", "plain", "spaces", "non-ascii", "escaped-kept", "sub-delims", "query",
        "query-mixed", "query-quotes", "fragment-dropped"])
async def test_request_target(client: http1.Client, raw: Any, path: str, target: str) -> None:
    srv = await raw(answering(ok()))
    await fetch(client, srv.url + path)
    assert srv.requests[0].line == f"GET {target} HTTP/1.1"


@pytest.mark.parametrize(("kw", "given", "expected"), [
    ({}, {}, {"user-agent": http1.USER_AGENT, "accept": "*/*",
              "accept-encoding": "gzip, deflate"}),
    ({}, {"User-Agent": "probe/1", "accept": "text/html"},
     {"user-agent": "probe/1", "accept": "text/html", "accept-encoding": "gzip, deflate"}),
    ({}, {"Accept-Encoding": "identity", "X-Trace": "t-1"},
     {"accept-encoding": "identity", "x-trace": "t-1"}),
    ({"accept_encoding": "", "user_agent": "cb/2"}, {},
     {"user-agent": "cb/2", "accept-encoding": None}),
    # Framing is the client's: Host, Content-Length, Transfer-Encoding and Connection given
    # by a caller are dropped (as Go's transport ignores them).
    ({}, {"Host": "evil.test", "Content-Length": "99", "Transfer-Encoding": "chunked",
          "Connection": "close"},
     {"host": "<self>", "content-length": None, "transfer-encoding": None,
      "connection": None}),
], ids=["defaults", "override-ua-accept", "override-encoding", "client-settings", "framing"])
async def test_headers(raw: Any, kw: dict[str, str], given: dict[str, str],
                       expected: dict[str, str | None]) -> None:
    srv = await raw(answering(ok()))
    c = new_client(**kw)
    try:
        await fetch(c, srv.url + "/h", headers=given)
    finally:
        await c.close()
    sent = srv.requests[0].headers
    for name, value in expected.items():
        want = f"127.0.0.1:{srv.port}" if value == "<self>" else value
        assert sent.get(name) == want, name


@pytest.mark.parametrize(("userinfo", "given", "credentials"), [
    ("user:secret@", {}, "user:secret"),
    ("user@", {}, "user:"),
    ("us%3Aer:p%40ss%20w@", {}, "us:er:p@ss w"),
    ("user:secret@", {"Authorization": "Bearer t"}, None),
], ids=["user-password", "user-only", "escaped", "explicit-header-wins"])
async def test_basic_auth_from_userinfo(client: http1.Client, raw: Any, userinfo: str,
                                        given: dict[str, str], credentials: str | None
                                        ) -> None:
    srv = await raw(answering(ok()))
    await fetch(client, f"http://{userinfo}127.0.0.1:{srv.port}/", headers=given)
    sent = srv.requests[0].headers["authorization"]
    if credentials is None:
        assert sent == "Bearer t"
    else:
        assert sent == "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(("url_suffix", "headers", "match"), [
    ("/", {"X-A": "v\r\nInjected: 1"}, "invalid header field value"),
    ("/", {"X-A": "v\nInjected: 1"}, "invalid header field value"),
    ("/", {"X-A": "v\x00"}, "invalid header field value"),
    ("/", {"Bad Name": "v"}, "invalid header field name"),
    ("/", {"Bad:Name": "v"}, "invalid header field name"),
    ("/", {"": "v"}, "invalid header field name"),
    ("/", {"N\u00e4me": "v"}, "invalid header field name"),
], ids=["crlf-value", "lf-value", "nul-value", "space-name", "colon-name", "empty-name",
        "non-ascii-name"])
async def test_header_injection_refused(client: http1.Client, raw: Any, url_suffix: str,
                                        headers: dict[str, str], match: str) -> None:
    srv = await raw(answering(ok()))
    with pytest.raises(http1.InvalidRequest, match=match):
        await client.request("GET", srv.url + url_suffix, headers)
    assert srv.connections == 0  # refused before anything was dialled or sent


@pytest.mark.parametrize(("url", "match"), [
    ("ftp://127.0.0.1/x", 'unsupported protocol scheme "ftp"'),
    ("http:///path", "no Host in request URL"),
    ("http://127.0.0.1:99999/", "out of range"),
    ("http://127.0.0.1:port/", "Port could not be cast"),
    ("http://exa\x00mple.test/", "invalid control character in URL"),
    ("http://example.test/a\x7fb", "invalid control character in URL"),
    ("http://example.test/a\rb", "invalid control character in URL"),
], ids=["scheme", "no-host", "port-range", "port-text", "nul-in-host", "del-in-path",
        "cr-in-path"])
async def test_invalid_url_refused(client: http1.Client, url: str, match: str) -> None:
    with pytest.raises(http1.InvalidRequest, match=match):
        await client.request("GET", url)


@pytest.mark.parametrize(("url", "host", "port"), [
    ("http://Example.TEST/", "example.test", 80),
    ("http://example.test:80/", "example.test", 80),
    ("https://example.test:443/", "example.test", 443),
    ("http://example.test:8080/", "example.test:8080", 8080),
    ("https://example.test:80/", "example.test:80", 80),
    ("http://[::1]/", "[::1]", 80),
    ("http://[::1]:8080/", "[::1]:8080", 8080),
    ("http://b\u00fccher.test/", "xn--bcher-kva.test", 80),
    ("http://127.0.0.1:0/", "127.0.0.1:0", 0),
], ids=["default-http", "explicit-default-http", "explicit-default-https", "other-port",
        "https-on-80", "ipv6-default", "ipv6-port", "idna", "port-zero"])
def test_target_authority(url: str, host: str, port: int) -> None:
    # What the Host header and the dial use; the wire form is checked through a proxy in
    # test_http1_edge.py (a real listener cannot sit on port 80 here).
    target = http1.parse_url(url)
    assert (target.authority, target.port) == (host, port)


async def test_ipv6_literal(client: http1.Client, apps: Serve) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback (::1) on this machine")
    seen: list[str] = []

    async def host(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(text="v6")

    url = await apps([web.get("/", host)], host="::1")
    resp, data = await fetch(client, url + "/")
    assert (resp.status, data, seen) == (200, b"v6", [url.removeprefix("http://")])


# -- response framing ----------------------------------------------------------------------
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: abc\r\nX-N: 1\r\n\r\n")


@pytest.mark.parametrize(("response", "close", "status", "body", "reused"), [
    (ok(b"length-delimited"), False, 200, b"length-delimited", True),
    (CHUNKED, False, 200, b"hello world", True),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", True, 200,
     b"until the end", False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b"", True),
    (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", False, 304, b"", True),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 100"), False, 200, b"after 100", True),
    (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
     b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 103"), False, 200, b"after 103", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\n1.0k",
     False, 200, b"1.0k", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n1.0c", False, 200, b"1.0c", False),
    (ok(b"bye", "Connection: close"), False, 200, b"bye", False),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", False, 404, b"nope", True),
    (b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", False, 200, b"", True),
], ids=["content-length", "chunked-trailers", "until-close", "204", "304", "100-continue",
        "103-and-100", "http10-keepalive", "http10-close", "connection-close", "404",
        "empty-reason"])
async def test_framing(client: http1.Client, raw: Any, response: bytes, close: bool,
                       status: int, body: bytes, reused: bool) -> None:
    srv = await raw(answering(response, close=close))
    for _ in range(2):
        resp, data = await fetch(client, srv.url + "/f")
        assert (resp.status, data) == (status, body)
    assert srv.connections == (1 if reused else 2)
    assert len(srv.requests) == 2


async def test_head_fields(client: http1.Client, raw: Any) -> None:
    srv = await raw(answering(b"HTTP/1.1 201 Created Here\r\nX-Dup: first\r\nx-dup: second\r\n"
                              b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 2"
                              b"\r\n\r\nhi"))
    resp, data = await fetch(client, srv.url)
    assert (resp.status, resp.reason, resp.content_length, data) == (201, "Created Here", 2,
                                                                     b"hi")
    assert resp.headers["x-dup"] == "first"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


def hangs_up_with(response: bytes, reset: bool, wait: bool) -> Handler:
    """Answer ``response``, then (once ``release`` is set, with ``wait``) close or reset."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(response)
        await writer.drain()
        if wait:
            await asyncio.wait_for(srv.release.wait(), BOUND)
        if reset:  # SO_LINGER 0: close() sends RST instead of FIN
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort() if reset else writer.close()

    return handle


@pytest.mark.parametrize(("response", "reset", "at_head", "match"), [
    (b"HTTP/1.1 OK\r\n\r\n", False, True, "malformed HTTP response"),
    (b"HTTX/1.1 200 OK\r\n\r\n", False, True, "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", False, True, "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", False, True, "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n", False, True, "unexpected EOF"),
    (b"", False, True, "unexpected EOF"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
     False, True, "unexpected protocol upgrade"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", False, False, "unexpected EOF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", False, False,
     "unexpected EOF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, False,
     "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", True, False, "connection lost"),
    (b"HTTP/1.1 200 OK\r\n\r\nuntil close, then a reset", True, False, "connection lost"),
], ids=["no-status-code", "bad-protocol", "bad-length", "bad-header", "eof-in-head",
        "eof-no-answer", "unasked-upgrade", "short-body", "eof-in-chunks", "bad-chunk-size",
        "reset-mid-body", "reset-until-close"])
async def test_broken_response(client: http1.Client, raw: Any, response: bytes, reset: bool,
                               at_head: bool, match: str) -> None:
    srv = await raw(hangs_up_with(response, reset, wait=not at_head))
    async with asyncio.timeout(BOUND):
        if at_head:
            with pytest.raises(http1.ResponseError, match=match):
                await client.request("GET", srv.url)
            return
        resp = await client.request("GET", srv.url)
        srv.release.set()  # the head is in: now end the connection mid-body
        try:
            with pytest.raises(http1.ResponseError, match=match):
                await resp.read()
        finally:
            resp.release()


# -- decoding --------------------------------------------------------------------------------
TEXT = b"The quick brown fox jumps over the lazy dog. " * 200


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def chunked(data: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                   for i in range(0, len(data), size))
    return out + b"0\r\n\r\n"


@pytest.mark.parametrize(("encoding", "encoded", "split", "expected"), [
    ("gzip", gzip.compress(TEXT), 0, TEXT),
    ("x-gzip", gzip.compress(TEXT), 0, TEXT),
    ("GZip ", gzip.compress(TEXT), 0, TEXT),
    ("deflate", zlib.compress(TEXT), 0, TEXT),
    ("deflate", deflate_raw(TEXT), 0, TEXT),
    ("gzip", gzip.compress(TEXT), 1, TEXT),
    ("deflate", zlib.compress(TEXT), 1, TEXT),
    ("deflate", deflate_raw(TEXT), 1, TEXT),
    ("br", b"\x1b\x03brotli-bytes", 0, b"\x1b\x03brotli-bytes"),
    ("identity", b"as is", 0, b"as is"),
    ("gzip", b"", 0, b""),
    ("gzip", gzip.compress(TEXT) + gzip.compress(b"second member"), 0, TEXT + b"second member"),
    ("gzip", gzip.compress(TEXT) + gzip.compress(b"second member"), 3,
     TEXT + b"second member"),
], ids=["gzip", "x-gzip", "case-space", "deflate-zlib", "deflate-raw", "gzip-1-byte-chunks",
        "zlib-1-byte-chunks", "raw-deflate-1-byte-chunks", "unknown-passed-raw", "identity",
        "gzip-empty", "gzip-two-members", "gzip-two-members-3-byte-chunks"])
async def test_decoding(client: http1.Client, raw: Any, encoding: str, encoded: bytes,
                        split: int, expected: bytes) -> None:
    if split:
        body = chunked(encoded, split)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nTransfer-Encoding: chunked"
    else:
        body = encoded
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(body)}"
    srv = await raw(answering(head.encode() + b"\r\n\r\n" + body))
    _, data = await fetch(client, srv.url)
    assert data == expected


async def test_aiohttp_compressed_response(client: http1.Client, apps: Serve) -> None:
    async def compressed(request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=TEXT)
        resp.enable_compression(web.ContentCoding(request.match_info["coding"]))
        return resp

    url = await apps([web.get("/{coding}", compressed)])
    for coding in ("gzip", "deflate"):
        resp, data = await fetch(client, f"{url}/{coding}")
        assert resp.headers["content-encoding"] == coding and data == TEXT


async def test_gzip_bomb_is_decoded_in_bounded_steps(client: http1.Client, raw: Any) -> None:
    size = 50 * 1024 * 1024
    bomb = gzip.compress(bytes(size), 9)
    assert len(bomb) < 100_000
    srv = await raw(answering(ok(bomb, "Content-Encoding: gzip")))
    largest = total = 0

    def sink(chunk: bytes) -> None:
        nonlocal largest, total
        largest = max(largest, len(chunk))
        total += len(chunk)

    async with asyncio.timeout(BOUND * 2):
        resp = await client.request("GET", srv.url)
        try:
            await resp.stream(sink)
        finally:
            resp.release()
    assert total == size
    assert 0 < largest <= http1.DECODE_STEP


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", b"\x1f\x8b\x08\x00garbage-not-deflate"),
    ("gzip", b"not gzip at all"),
    ("gzip", gzip.compress(TEXT)[:-30]),
    ("gzip", gzip.compress(TEXT)[:-4]),
    ("deflate", zlib.compress(TEXT)[:40]),
    ("deflate", deflate_raw(TEXT)[:40]),
    ("deflate", b"\x78\x9c\xff\xff\xff\xff"),
    ("gzip", gzip.compress(TEXT) + b"trailing garbage"),
    ("gzip", gzip.compress(TEXT) + gzip.compress(TEXT)[:-6]),
], ids=["bad-deflate-data", "no-gzip-magic", "truncated-gzip", "gzip-no-trailer",
        "truncated-zlib", "truncated-raw-deflate", "bad-zlib-data", "gzip-trailing-garbage",
        "gzip-truncated-second-member"])
async def test_corrupt_compressed_body(client: http1.Client, raw: Any, encoding: str,
                                       body: bytes) -> None:
    srv = await raw(answering(ok(body, f"Content-Encoding: {encoding}")))
    async with asyncio.timeout(BOUND):
        resp = await client.request("GET", srv.url)
        try:
            with pytest.raises(http1.ResponseError, match="invalid compressed body"):
                await resp.read()
        finally:
            resp.release()


# -- streaming -------------------------------------------------------------------------------
async def test_stream_sees_chunks_as_they_arrive(client: http1.Client, raw: Any) -> None:
    first_seen = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        # Only goes on once the client's sink had the first part: a client that buffered
        # the body would deadlock here (and the test time out).
        await asyncio.wait_for(first_seen.wait(), BOUND)
        writer.write(b"4\r\nrest\r\n0\r\n\r\n")
        await writer.drain()

    srv = await raw(handle)
    parts: list[bytes] = []

    def sink(chunk: bytes) -> None:
        parts.append(chunk)
        first_seen.set()

    async with asyncio.timeout(BOUND * 2):
        resp = await client.request("GET", srv.url)
        try:
            await resp.stream(sink)
        finally:
            resp.release()
    assert parts == [b"first", b"rest"]


class SinkFull(Exception):
    pass


@pytest.mark.parametrize(("length", "early"), [(100, True), (10_000, True), (10_000, False)],
                         ids=["whole-body-buffered", "buffered-chunk", "live-chunk"])
async def test_sink_exception_ends_exchange(client: http1.Client, raw: Any, length: int,
                                            early: bool) -> None:
    """The sink raising on a chunk that came with the head (delivered from the buffer, even
    when that was the whole body) or on one arriving while streaming: raised from stream(),
    connection closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length
        writer.write(head + b"x" * 100 if early else head)
        await writer.drain()
        if not early:
            await asyncio.wait_for(srv.release.wait(), BOUND)
            writer.write(b"y" * 100)
            await writer.drain()
        await srv.until_hangup(reader, conn)

    srv = await raw(handle)

    def sink(chunk: bytes) -> None:
        raise SinkFull(len(chunk))

    async with asyncio.timeout(BOUND):
        resp = await client.request("GET", srv.url)
        if not early:
            asyncio.get_running_loop().call_soon(srv.release.set)
        try:
            with pytest.raises(SinkFull):
                await resp.stream(sink)
        finally:
            resp.release()
        await srv.hangup.wait()


@pytest.mark.parametrize("unit", [
    b"X-F%d: " + b"v" * 200 + b"\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </%d.css>; rel=preload\r\n\r\n",
], ids=["header-fields", "informational-responses"])
async def test_endless_head_refused(client: http1.Client, raw: Any, unit: bytes) -> None:
    """A server that never ends the head is cut off past MAX_RESPONSE_HEAD (Go's Transport
    default), not buffered without bound; read timeouts never fire while it sends."""

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    srv: RawServer, conn: int) -> None:
        await srv.next_request(reader, conn)
        if b"%d: " in unit:
            writer.write(b"HTTP/1.1 200 OK\r\n")
        sent, n = 0, 0
        while sent <= 2 * http1.MAX_RESPONSE_HEAD:  # bounded: the client must stop first
            batch = b"".join(unit % (n + i) for i in range(200))
            n += 200
            writer.write(batch)
            await writer.drain()
            sent += len(batch)

    srv = await raw(flood)
    with pytest.raises(http1.ResponseError, match="headers exceeded 10485760 bytes"):
        await asyncio.wait_for(client.request("GET", srv.url), BOUND * 2)
    await asyncio.wait_for(srv.hangup.wait(), BOUND)
