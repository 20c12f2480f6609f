"""A lean HTTP/1.1 client for the processor's downloads and the notifier's callbacks.

Why not aiohttp's client here: issue 4's throughput gate puts seven processes on two cores,
and a profile of the pipeline showed aiohttp's per-request machinery (URL objects, request and
response objects, timers, a StreamReader and a coroutine hop per body chunk) as the largest
cost of both the processor and the notifier, ~0.25 ms of CPU per exchange. This client is
one ``asyncio.Protocol`` per connection with llhttp (``httptools``) parsing the response and
the body handed to a synchronous sink from ``data_received``: no task, no queue and no
buffer copy per chunk.

What it does (all a download or a callback needs, RFC 9112 framing by llhttp):
- keep-alive pools per origin (and proxy), idle connections closed after ``keepalive``;
  a request that meets a connection the server just closed is retried once on a new one
  when no response byte came back (as Go's transport does for idempotent requests and
  requests it can replay: every request here has a bytes body);
- timeouts: connect (per address), read (longest silence while a response is awaited or
  streamed), and a deadline for the whole exchange, all watched by one timer per
  connection;
- ``Content-Encoding`` gzip/deflate decoded incrementally, bounded per step (so a small
  compressed body cannot inflate in one go); a corrupt or truncated stream is an error;
- TLS with certificate verification, plain HTTP proxies (absolute-form requests) and
  ``CONNECT`` tunnels for https through a proxy, Basic auth from URL userinfo;
- an optional resolver guard, so the SSRF check sees the addresses actually dialled.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Mapping
from typing import NamedTuple, cast
from urllib.parse import quote, unquote, urlsplit

import httptools

from pazari import __version__
from pazari.downloader.decoding import DECODE_STEP
from pazari.downloader.decoding import decoder as _decoder
from pazari.downloader.transport import (
    ConnectError,
    DeadlineExceeded,
    HTTPClientError,
    InvalidRequest,
    ReadTimeout,
    Resolver,
    ResponseError,
    Sink,
    TLSError,
)

__all__ = ["DECODE_STEP", "ConnectError", "DeadlineExceeded", "HTTPClientError", "InvalidRequest",
           "ReadTimeout", "Resolver", "ResponseError", "Sink", "TLSError"]

USER_AGENT = f"pazari-downloader/{__version__}"
_NEVER = float("inf")
ACCEPT_ENCODING = "gzip, deflate"
PENDING_LIMIT = 256 * 1024  # body bytes kept before stream() is called; then reading pauses
MAX_HEAD = 64 * 1024  # a CONNECT answer's head larger than this is refused
# A response head (informational ones included) larger than this is refused, as Go's
# Transport does with its default MaxResponseHeaderBytes: llhttp itself sets no bound, and
# a server streaming header fields would otherwise grow the headers dict without end.
MAX_RESPONSE_HEAD = 10 << 20
# RFC 9110 §5.6.2 token characters, for header names.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# What may stay unescaped in a request-target (RFC 3986 pchar, "/" and "?" plus "%", so
# an already escaped URL is sent as given; Go's URL.RequestURI does the same).
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


class Target(NamedTuple):
    """A parsed ``http(s)`` URL: where to connect and what to send."""

    scheme: str
    host: str  # without brackets; IDNA-encoded
    port: int
    authority: str  # the Host header: host[:port], brackets kept
    request_target: str  # origin-form: path?query
    auth: str | None  # "user:password" from the URL's userinfo
    url: str

    @property
    def absolute(self) -> str:
        """The absolute-form request-target (RFC 9112 §3.2.2), for a plain proxy."""
        return f"{self.scheme}://{self.authority}{self.request_target}"


# The common URL, parsed without urlsplit and quote (a third of the processor's request
# cost): http(s), a registered name of plain ASCII, an optional port, a path and query of
# characters that stay unescaped anyway. Anything else takes the general path below.
_PLAIN_URL = re.compile(
    r"(https?)://([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    r"(/[A-Za-z0-9/%:@!$&'()*+,;=.\-_~]*)?(\?[A-Za-z0-9/%:@!$&'()*+,;=.\-_~?]*)?")


def parse_url(url: str) -> Target:
    m = _PLAIN_URL.fullmatch(url)
    if m is not None:
        scheme, host, port_text, path, query = m.groups()
        default = 443 if scheme == "https" else 80
        port = default if port_text is None else int(port_text)
        if port <= 65535:
            host = host.lower()  # as urlsplit's hostname
            authority = host if port_text is None or port == default else f"{host}:{port}"
            # An empty query ("?" alone) is dropped, as urlsplit does.
            target = (path or "/") + (query if query and query != "?" else "")
            return Target(scheme, host, port, authority, target, None, url)
    return _parse_url(url)


def _parse_url(url: str) -> Target:
    # Go's url.Parse refuses ASCII control characters; urlsplit would silently drop tab, CR
    # and LF and keep the others (a NUL in the host went out in the Host header).
    if any(c < " " or c == "\x7f" for c in url):
        raise InvalidRequest("net/url: invalid control character in URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest(f'unsupported protocol scheme "{parts.scheme}"')
    default = 443 if scheme == "https" else 80
    try:
        host = parts.hostname or ""
        port = default if parts.port is None else parts.port  # ":0" is port 0, not 80
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if not host:
        raise InvalidRequest("no Host in request URL")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidRequest(f"invalid host {host!r}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    authority = shown if parts.port in (None, default) else f"{shown}:{port}"
    path = quote(parts.path, safe=_SAFE_PATH) or "/"
    if parts.query:
        path += "?" + quote(parts.query, safe=_SAFE_QUERY)
    auth = None
    if parts.username is not None:
        auth = unquote(parts.username) + ":" + unquote(parts.password or "")
    return Target(scheme, host, port, authority, path, auth, url)


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _check_header(name: str, value: str) -> None:
    if not name or not all(c in _TOKEN for c in name.encode("utf-8", "replace")):
        raise InvalidRequest(f'net/http: invalid header field name "{name}"')
    if "\r" in value or "\n" in value or "\x00" in value:
        raise InvalidRequest(f'net/http: invalid header field value for "{name}"')


class Response:
    """A response whose head has arrived; the body is read with :meth:`read` or
    :meth:`stream`, and :meth:`release` gives the connection back (or closes it)."""

    __slots__ = ("_client", "_conn", "headers", "reason", "status")

    def __init__(self, client: Client, conn: _Connection) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.reason = conn.reason
        self.headers = conn.headers  # lower-case name -> first value

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None or not raw.isdigit():
            return None
        return int(raw)

    async def stream(self, sink: Sink) -> None:
        """Hand every body chunk (decoded) to ``sink`` as it arrives; return at the end of
        the body. An exception raised by ``sink`` ends the exchange and is raised here."""
        conn = self._conn
        assert conn is not None, "the body was already read"
        encoding = self.headers.get("content-encoding", "").strip().lower()
        # Only what ACCEPT_ENCODING asked for; anything else is passed as sent.
        decoder = _decoder(encoding, sink) if encoding in ("gzip", "x-gzip", "deflate") else None
        try:
            await conn.body(decoder.feed if decoder is not None else sink)
        except asyncio.CancelledError:
            # A body left half-read (the caller's timeout): the connection is of no further
            # use, close it now rather than when the read timeout fires or release() runs.
            conn.abort()
            raise
        if decoder is not None:
            decoder.finish()

    async def read(self) -> bytes:
        parts: list[bytes] = []
        await self.stream(parts.append)
        return b"".join(parts)

    def release(self) -> None:
        """Done with this response: a completely read keep-alive response returns its
        connection to the pool; anything else closes it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn)


class _Connection(asyncio.Protocol):
    """One connection: at most one exchange at a time; llhttp's callbacks land here."""

    def __init__(self, client: Client, key: tuple[str, ...]) -> None:
        self.client = client
        self.key = key
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        # The exchange in progress.
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self._reason = b""
        self._informational = False
        self._head: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._paused = False  # reading paused until stream() takes the pending body
        self._complete = False
        self._until_close = False
        self._failed: BaseException | None = None
        self._got_bytes = False
        self._head_bytes = 0
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._deadline = _NEVER
        self._tunnel: asyncio.Future[bytes] | None = None
        self._tunnel_buf = b""

    # -- transport -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._tunnel is not None and not self._tunnel.done():
            self._tunnel.set_exception(ConnectError("proxy closed the connection"))
        if self._done is None or self._done.done():
            return
        if (exc is None and self._until_close and self._head is not None
                and self._head.done()):
            # A body delimited by the end of the connection (RFC 9112 §6.3); only a clean
            # close ends it: a reset loses data, and a truncated body is not a complete one.
            self._finish()
            return
        if exc is not None:
            self._fail(ResponseError(f"connection lost: {exc}"))
        else:
            self._fail(ResponseError("unexpected EOF"))

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel_data(data)
            return
        if self._done is None or self._done.done():
            # Nothing was asked: a server talking out of turn. The connection is unusable.
            self.abort()
            return
        self._last_data = self.loop.time()
        self._got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            pass  # a sink raised: _fail already recorded it
        except httptools.HttpParserError as exc:
            self._fail(ResponseError(f"malformed HTTP response: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(ResponseError("unexpected protocol upgrade"))
        head = self._head
        if head is not None and not head.done():
            # Everything so far belongs to the head (or to informational responses).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_RESPONSE_HEAD:
                self._fail(ResponseError("server response headers exceeded "
                                         f"{MAX_RESPONSE_HEAD} bytes; aborted"))

    # -- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:
            self.reusable = False  # bytes after the response: the connection is spoiled

    def on_status(self, status: bytes) -> None:
        if not self._complete:
            self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:
            return
        key = name.decode("latin-1").lower()
        if key not in self.headers:
            self.headers[key] = value.decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        status = self.parser.get_status_code()
        if status == 101:
            # Never asked for (no Upgrade header is sent; RFC 9110 §15.2.2: a server must
            # not switch unasked): what follows is another protocol, not this response's
            # body, and the connection must not go back to the pool.
            self._fail(ResponseError("unexpected protocol upgrade"))
            return
        if 100 <= status < 200:
            self._informational = True  # 100 Continue / 103 Early Hints: the real one follows
            return
        self.status = status
        self.reason = self._reason.decode("latin-1")
        headers = self.headers
        self._until_close = ("content-length" not in headers
                             and "chunked" not in headers.get("transfer-encoding", "").lower()
                             and status not in (204, 304))
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._failed is not None or self._complete:
            return
        sink = self._sink
        if sink is None:
            # Nobody reads yet (the caller is between the head and stream()): keep what
            # came, but stop reading past PENDING_LIMIT, so that a large body waits in the
            # socket, not in memory.
            self._pending.append(body)
            self._pending_size += len(body)
            if self._pending_size > PENDING_LIMIT and not self._paused:
                assert self.transport is not None
                self._paused = True
                self.transport.pause_reading()
            return
        try:
            sink(body)
        except BaseException as exc:
            self._fail(exc)
            raise  # stops llhttp (HttpParserCallbackError in data_received)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self._reason = b""
            self.headers = {}
            return
        if self._failed is not None or self._complete:
            return
        self.reusable = self.parser.should_keep_alive()
        self._finish()

    # -- exchange ------------------------------------------------------------------------
    def send(self, data: bytes, read_timeout: float, deadline: float = _NEVER
             ) -> asyncio.Future[None]:
        """Write a request; the returned future resolves when the response head is in.
        One timer per exchange watches both the read timeout and the deadline (cheaper
        than an asyncio.timeout around the exchange: no task cancellation machinery)."""
        assert self.transport is not None
        loop = self.loop
        self.status = 0
        self._reason = b""
        self.headers = {}
        self._informational = False
        self._head = loop.create_future()
        self._done = loop.create_future()
        self._sink = None
        self._pending = []
        self._pending_size = 0
        self._paused = False
        self._complete = self._until_close = self.reusable = self._got_bytes = False
        self._head_bytes = 0
        self._failed = None
        self._last_data = loop.time()
        self._read_timeout = read_timeout
        self._deadline = deadline
        first = min(self._last_data + read_timeout if read_timeout > 0 else _NEVER, deadline)
        if first < _NEVER:
            self._timer = loop.call_at(first, self._check_read)
        self.transport.write(data)
        return self._head

    async def body(self, sink: Sink) -> None:
        done = self._done
        assert done is not None
        if self._failed is None:
            pending, self._pending = self._pending, []
            self._pending_size = 0
            try:
                for chunk in pending:
                    sink(chunk)
            except BaseException as exc:
                # Raised here, not through _fail: when the whole response was buffered
                # before stream() the exchange is already complete and _fail would drop
                # it (a sink's size limit or write error went unnoticed).
                self.abort()
                self._fail(exc)
                raise
            self._sink = sink
            if self._paused and self.transport is not None and not self.closed:
                self._paused = False
                self.transport.resume_reading()
        await done

    def _finish(self) -> None:
        self._complete = True
        self._cancel_timer()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None or self._complete:
            return
        self._failed = exc
        self.reusable = False
        self._cancel_timer()
        for fut in (self._head, self._done):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                # Nobody may await it (a head that failed leaves the body unread): do not
                # let asyncio report it as never retrieved; an awaiter still gets it.
                fut.add_done_callback(_consume)
        self.abort()

    def _check_read(self) -> None:
        self._timer = None
        now = self.loop.time()
        if now >= self._deadline:
            self._fail(DeadlineExceeded("deadline exceeded"))
            return
        timeout = self._read_timeout
        if timeout > 0 and now - self._last_data >= timeout:
            self._fail(ReadTimeout(f"no data received within the read timeout ({timeout:g}s)"))
            return
        due = min(self._last_data + timeout if timeout > 0 else _NEVER, self._deadline)
        self._timer = self.loop.call_at(due, self._check_read)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    # -- CONNECT tunnel (RFC 9110 §9.3.6) -------------------------------------------------
    async def tunnel(self, authority: str, proxy_auth: str | None, timeout: float) -> None:
        assert self.transport is not None
        self._tunnel = self.loop.create_future()
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy_auth:
            head += f"Proxy-Authorization: {_basic(proxy_auth)}\r\n"
        self.transport.write((head + "\r\n").encode())
        try:
            async with asyncio.timeout(timeout):
                answer = await self._tunnel
        finally:
            self._tunnel = None
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        fields = status_line.split(" ", 2)
        if len(fields) < 2 or not fields[1].startswith("2"):
            raise ConnectError(f"proxyconnect: {status_line or 'empty answer'}")

    def _tunnel_data(self, data: bytes) -> None:
        assert self._tunnel is not None
        self._tunnel_buf += data
        end = self._tunnel_buf.find(b"\r\n\r\n")
        if end >= 0 and not self._tunnel.done():
            # The proxy sends nothing after its answer before we speak TLS.
            self._tunnel.set_result(self._tunnel_buf[:end])
        elif len(self._tunnel_buf) > MAX_HEAD and not self._tunnel.done():
            self._tunnel.set_exception(ConnectError("proxyconnect: answer too long"))


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


class Client:
    """Keep-alive pools and the request entry point (see the module docstring)."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 60.0,
                 keepalive: float = 30.0, max_idle_per_origin: int = 256,
                 resolver: Resolver | None = None, ssl_context: ssl.SSLContext | None = None,
                 user_agent: str = USER_AGENT, accept_encoding: str = ACCEPT_ENCODING) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.max_idle = max_idle_per_origin
        self.resolver = resolver or default_resolver
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.defaults = [("User-Agent", user_agent), ("Accept", "*/*")]
        if accept_encoding:
            self.defaults.append(("Accept-Encoding", accept_encoding))
        self._idle: dict[tuple[str, ...], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False

    async def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                      body: bytes | None = None, proxy: str = "",
                      deadline: float | None = None) -> Response:
        """Send the request; return once the response head is in (read the body from the
        :class:`Response`, then release it). ``deadline`` (the loop's clock) bounds the
        whole exchange, connect and body included: DeadlineExceeded when it passes."""
        target = parse_url(url)
        via = parse_url(proxy) if proxy else None
        head = self._head(method, target, via, headers or {}, body)
        key = (target.scheme, target.host, str(target.port), proxy)
        until = _NEVER if deadline is None else deadline
        for attempt in (0, 1):
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                if until < _NEVER:
                    try:
                        async with asyncio.timeout_at(until):
                            conn = await self._connect(key, target, via)
                    except TimeoutError:
                        raise DeadlineExceeded("deadline exceeded while connecting") from None
                else:
                    conn = await self._connect(key, target, via)
            try:
                await conn.send(head, self.read_timeout, until)
            except ResponseError:
                if reused and attempt == 0 and not conn.got_bytes:
                    continue  # a keep-alive connection the server had just closed
                raise
            except BaseException:
                conn.abort()
                raise
            return Response(self, conn)
        raise AssertionError("unreachable")

    def _head(self, method: str, target: Target, via: Target | None,
              headers: Mapping[str, str], body: bytes | None) -> bytes:
        plain_proxy = via is not None and target.scheme == "http"
        request_target = target.absolute if plain_proxy else target.request_target
        lines = [f"{method} {request_target} HTTP/1.1", f"Host: {target.authority}"]
        given = set()
        for name, value in headers.items():
            _check_header(name, value)
            low = name.lower()
            if low in ("host", "content-length", "transfer-encoding", "connection"):
                continue  # framing is ours (Go ignores these too)
            given.add(low)
            lines.append(f"{name}: {value}")
        for name, value in self.defaults:
            if name.lower() not in given:
                lines.append(f"{name}: {value}")
        if target.auth is not None and "authorization" not in given:
            lines.append(f"Authorization: {_basic(target.auth)}")
        if plain_proxy and via is not None and via.auth is not None:
            lines.append(f"Proxy-Authorization: {_basic(via.auth)}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        return data + body if body else data

    # -- pool ------------------------------------------------------------------------------
    def _take_idle(self, key: tuple[str, ...]) -> _Connection | None:
        idle = self._idle.get(key)
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.abort()
        return None

    def _release(self, conn: _Connection) -> None:
        if not (conn.complete and conn.reusable) or conn.closed or self._closing:
            conn.abort()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past the keep-alive time (or closed by the server)."""
        self._sweeper = None
        oldest = self.loop.time() - self.keepalive
        for key in list(self._idle):
            keep = []
            for conn in self._idle[key]:
                if conn.closed or conn.idle_since <= oldest:
                    conn.abort()
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = self.loop.call_later(self.keepalive / 2, self._sweep)

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

    # -- connecting ------------------------------------------------------------------------
    async def _connect(self, key: tuple[str, ...], target: Target,
                       via: Target | None) -> _Connection:
        dest = via or target
        addresses = await self.resolver(dest.host, dest.port)
        tls_now = dest.scheme == "https"
        if via is not None and via.scheme == "https" and target.scheme == "https":
            raise ConnectError("proxyconnect: https proxies are not supported for https URLs")
        last: BaseException | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, conn = await self.loop.create_connection(
                        lambda: _Connection(self, key), address, dest.port,
                        ssl=self.ssl_context if tls_now else None,
                        server_hostname=dest.host if tls_now else None)
            except ssl.SSLError as exc:
                raise TLSError(str(exc)) from None
            except TimeoutError:
                last = ConnectError(f"dial tcp {_hostport(address, dest.port)}: i/o timeout")
                continue
            except OSError as exc:
                # The errno's text: asyncio's own loop puts "Connect call failed (addr)" in
                # strerror where uvloop has the C library's "Connection refused".
                reason = (os.strerror(exc.errno) if exc.errno else exc.strerror) or str(exc)
                last = ConnectError(f"dial tcp {_hostport(address, dest.port)}: connect: "
                                    f"{reason.lower()}")
                continue
            if via is not None and target.scheme == "https":
                await self._start_tunnel(conn, target, via)
            return conn
        raise last or ConnectError(f"dial tcp: lookup {dest.host}: no addresses")

    async def _start_tunnel(self, conn: _Connection, target: Target, via: Target) -> None:
        try:
            await conn.tunnel(_hostport(target.host, target.port), via.auth,
                              self.read_timeout or 60.0)
            assert conn.transport is not None
            async with asyncio.timeout(self.connect_timeout):
                transport = await self.loop.start_tls(
                    conn.transport, conn, self.ssl_context, server_hostname=target.host)
        except ssl.SSLError as exc:
            conn.abort()
            raise TLSError(str(exc)) from None
        except TimeoutError:
            conn.abort()
            raise ConnectError("proxyconnect: timed out") from None
        except BaseException:
            conn.abort()
            raise
        if transport is None:
            raise ConnectError("proxyconnect: connection closed during the TLS handshake")
        conn.transport = transport


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def default_resolver(host: str, port: int) -> list[str]:
    """IP literals as they are; names through getaddrinfo (libuv's thread pool)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"dial tcp: lookup {host}: {exc.strerror or exc}") from None
    seen: dict[str, None] = {}
    for info in infos:
        seen[str(info[4][0])] = None
    return list(seen)


def caching(resolver: Resolver, ttl: float = 10.0, size: int = 10_000) -> Resolver:
    """``resolver`` with answers kept ``ttl`` seconds (aiohttp's ttl_dns_cache did this).
    Concurrent misses for one host share a single lookup (as aiohttp's do): a burst of jobs
    for a new host asks the resolver once, not once per job."""
    cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
    inflight: dict[tuple[str, int], asyncio.Task[list[str]]] = {}

    async def lookup(key: tuple[str, int]) -> list[str]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        addresses = await resolver(*key)
        if len(cache) >= size:
            cache.clear()
        cache[key] = (now + ttl, addresses)
        return addresses

    def settled(key: tuple[str, int], task: asyncio.Task[list[str]]) -> None:
        inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # every waiter may be gone: not "never retrieved"

    async def resolve(host: str, port: int) -> list[str]:
        key = (host, port)
        hit = cache.get(key)
        if hit is not None and hit[0] > asyncio.get_running_loop().time():
            return hit[1]
        task = inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(lookup(key))
            inflight[key] = task
            task.add_done_callback(lambda done: settled(key, done))
        # Shielded: one caller's deadline must not cancel the lookup the others wait on.
        return await asyncio.shield(task)

    return resolve


__all__ = ["Client", "ConnectError", "DeadlineExceeded", "HTTPClientError", "InvalidRequest",
           "ReadTimeout", "Response", "ResponseError", "TLSError", "Target", "caching",
           "default_resolver", "parse_url"]
