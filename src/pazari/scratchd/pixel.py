"""The pixel fast path (issue 6: "drop to a raw uvloop protocol with an HTTP parser (httptools)
for the pixel path if measurement shows aiohttp is the limit" — it was: 0.49x a bare aiohttp
app, the request/response objects and one task per request dominating the profile).

One :class:`PixelProtocol` per connection owns the listener's connections. It frames each
request head itself (``\\r\\n\\r\\n``) and answers the common pixel request — ``GET /track``
without a body, for a tenant found by ``Host`` — from a pre-built response, parsing the head
with ``httptools.HttpRequestParser`` and encoding the event from the raw query bytes. Anything
else (another endpoint, a body, an unknown host, a parser error, a bare-LF head) hands the
connection, from the first byte of that request on, to aiohttp's low-level server, which
then serves it to the end: every endpoint, error answer and limit stays in one place
(``app.py``), and the pixel path only answers what it answers exactly like aiohttp would.

Responses leave in request order (pipelining-safe) with one ``transport.write`` per batch:
under ``ack: "spooled"`` a response waits for the spool's group-commit future of its cycle —
one future shared by every request of that cycle, one done-callback per cycle that releases
every connection waiting for it (``PixelServer.wait_commit``), no task and no future per
request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from aiohttp import web

from pazari.runtime.fastpath import FastPathProtocol, FastPathServer, Foreign
from pazari.scratchd.app import GIF
from pazari.scratchd.intake import Client, Dropped, Intake, Refused
from pazari.scratchd.tenants import Tenant, TenantRouter

_HEAD_END = b"\r\n\r\n"
_PREFIX = b"GET /track"
_PREFIX_LEN = len(_PREFIX)
_QMARK = 0x3F
_SPACE = 0x20
# The request headers the intake reads (intake.Client), by lower-case name → the canonical
# name it asks for; Host picks the tenant.
_WANTED = {
    b"host": "Host", b"user-agent": "User-Agent", b"referer": "Referer", b"cookie": "Cookie",
    b"dnt": "DNT", b"sec-gpc": "Sec-GPC", b"x-forwarded-for": "X-Forwarded-For",
    b"x-forwarded-proto": "X-Forwarded-Proto",
}
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
MAX_PENDING = 256  # pipelined responses waiting for a commit before reading pauses
# Slowloris (issue 12): a head not complete within ``header_timeout`` gets this and a close,
# as nginx's client_header_timeout answers 408 (RFC 9110 §15.5.9).
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                   b"Content-Length: 0\r\n\r\n")


class TimedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with ``header_timeout`` (issue 12, slowloris) for the
    connections the fast path handed over: the first bytes that arrive while it is idle (no
    request running, none queued) start a new head, and a parsed message ends it. aiohttp
    itself only closes a connection idle since its last response (keep-alive)."""

    __slots__ = ("head_since",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_since = 0.0

    def data_received(self, data: bytes) -> None:
        if not self.head_since and self._current_request is None and not self._messages:
            self.head_since = self._loop.time()
        super().data_received(data)
        if self._messages or self._current_request is not None:
            self.head_since = 0.0


class TimedServer(web.Server):
    """``web.Server`` whose connections are :class:`TimedRequestHandler`."""

    def __call__(self) -> TimedRequestHandler:
        return TimedRequestHandler(self, loop=self._loop, **self._kwargs)


class PixelServer(FastPathServer):
    """The listener's protocol factory and the shared response bytes (the connection set,
    the tick and the graceful stop are runtime.fastpath's)."""

    def __init__(self, router: TenantRouter, intake: Intake, fallback: TimedServer,
                 max_head: int, header_timeout: float) -> None:
        super().__init__(fallback)
        self.router = router
        self.intake = intake
        # An unfinished head longer than this goes to aiohttp, which answers 400/431.
        self.max_head = max_head
        self.header_timeout = header_timeout
        self.aiohttp = fallback
        self.head_ok = self.response_ok = b""
        # Connections with answers waiting for a spool commit, per commit: one done-callback
        # per commit, not one per connection (issue 17: each was a loop Handle and a call).
        self._waiters: dict[asyncio.Future[None], list[PixelProtocol]] = {}
        self.start_ticking()

    def refresh_date(self, date: str) -> None:
        """Once a second (the tick): the Date bytes, and the sweep of slow heads."""
        self._build_responses(date)
        late = self.now - self.header_timeout
        for conn in list(self.connections):
            if isinstance(conn, PixelProtocol) and 0.0 < conn.head_since < late:
                conn.close_slow_head()
        for handler in self.aiohttp.connections:
            if isinstance(handler, TimedRequestHandler) and 0.0 < handler.head_since < late:
                handler.head_since = 0.0
                if handler.transport is not None:
                    handler.transport.write(REQUEST_TIMEOUT)
                handler.force_close()
                if handler.transport is not None:
                    handler.transport.close()

    def __call__(self) -> PixelProtocol:
        return PixelProtocol(self)

    def wait_commit(self, commit: asyncio.Future[None], conn: PixelProtocol) -> None:
        """``conn`` has answers waiting for ``commit``: call its ``write_committed`` once done."""
        waiters = self._waiters.get(commit)
        if waiters is None:
            waiters = self._waiters[commit] = []
            commit.add_done_callback(self._release)
        waiters.append(conn)

    def _release(self, commit: asyncio.Future[None]) -> None:
        if not commit.cancelled():
            commit.exception()  # a failed fsync: the pixel answers anyway (the drop is counted)
        for conn in self._waiters.pop(commit, ()):
            try:
                conn.write_committed()
            except Exception as exc:  # one connection's failure must not strand the others
                self.loop.call_exception_handler({"message": "pixel answer failed",
                                                  "exception": exc, "protocol": conn})

    async def start(self, sock: Any) -> None:
        self._server = await self.loop.create_server(self, sock=sock, backlog=4096)

    def _build_responses(self, date: str) -> None:
        self.head_ok = (b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\n"
                        b"Cache-Control: no-store\r\nContent-Length: 43\r\nDate: "
                        + date.encode())
        self.response_ok = self.head_ok + b"\r\n\r\n" + GIF

    def response(self, set_cookie: str | None, keep_alive: bool, http10: bool) -> bytes:
        """The GIF answer; the common case (keep-alive HTTP/1.1, no cookie) is pre-built."""
        if set_cookie is None and keep_alive and not http10:
            return self.response_ok
        extra = b"" if set_cookie is None else b"\r\nSet-Cookie: " + set_cookie.encode()
        if not keep_alive:
            extra += b"\r\nConnection: close"
        elif http10:
            extra += b"\r\nConnection: keep-alive"
        return self.head_ok + extra + b"\r\n\r\n" + GIF


def _head(buf: bytes, pos: int, stop: int) -> bytes | memoryview:
    """``buf[pos:stop]`` without a copy (most reads hold exactly one head: no view then)."""
    return buf if pos == 0 and stop == len(buf) else memoryview(buf)[pos:stop]


class _LeanHead:
    """The second parser of a connection, for heads whose header lines are those of the
    client it knows: llhttp checks the head and says where the message ends and whether
    the connection stays open; there are no URL or header callbacks (PixelProtocol._known).
    """

    __slots__ = ("done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done = False
        self.keep_alive = True

    def on_message_complete(self) -> None:
        # llhttp clears its flags once the message is complete: ask now.
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True


class PixelProtocol(FastPathProtocol):
    """One connection on the fast path (see the module docstring)."""

    __slots__ = (
        "_buf", "_close_after", "_done", "_foreign", "_groups", "_headers", "_keep_alive",
        "_known", "_lean", "_parser", "_throttled", "_url", "_waiting", "head_since", "remote",
    )
    server: PixelServer

    def __init__(self, server: PixelServer) -> None:
        super().__init__(server)
        self.remote: str | None = None
        self._buf = b""
        self._parser = httptools.HttpRequestParser(self)
        self._headers: dict[str, str] = {}
        self._url = b""
        self._done = False
        self._keep_alive = True
        self._foreign = False
        # Responses waiting for a spool commit, in request order: [commit, [bytes, ...]].
        self._groups: list[tuple[asyncio.Future[None], list[bytes]]] = []
        self._waiting = 0  # responses in _groups
        self._throttled = False  # reading paused until the waiting responses are out
        self._close_after = False
        # (tenant, header lines, client) of the last request whose client is a pure function
        # of its header lines and peer (issue 17: identifying the client was Client.__init__,
        # cookie_value, valid_id and is_bot per request; keep-alive requests of one browser
        # repeat the same header lines byte for byte). While they repeat, the head goes to
        # a second parser without header callbacks (_LeanHead): llhttp still checks it.
        self._known: tuple[Tenant, bytes, Client] | None = None
        self._lean: _LeanHead | None = None
        # When the head now being read began (the connection's start for its first one);
        # 0.0 between requests, where the keep-alive timeout applies instead.
        self.head_since = server.now

    # -- connection ---------------------------------------------------------------------------

    def owes(self) -> bool:
        return bool(self._groups)

    def busy(self) -> bool:
        return bool(self._buf)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        super().connection_made(transport)

    def close_slow_head(self) -> None:
        """The head took longer than ``header_timeout``: 408 and close (once nothing else
        is owed: answers leave in order)."""
        transport = self.transport
        if transport is None or self.owes() or self._handover is not None:
            return
        self.head_since = 0.0
        self._close_after = True
        transport.write(REQUEST_TIMEOUT)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._groups.clear()

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        if self._handover is None and not self._close_after and not self._throttled:
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        canonical = _WANTED.get(key)
        if canonical is not None:
            headers = self._headers
            if canonical not in headers:  # the first one wins, as headers.get() does
                # aiohttp decodes header values the same way (utf-8, surrogateescape).
                headers[canonical] = value.decode("utf-8", "surrogateescape")
            elif canonical == "X-Forwarded-For":  # one list over several lines: join them
                headers[canonical] += ", " + value.decode("utf-8", "surrogateescape")
        elif key in _BODY_HEADERS and (key != b"content-length" or value.strip() != b"0"):
            self._foreign = True  # a GET with a body: aiohttp frames it

    def on_message_complete(self) -> None:
        # llhttp clears its flags once the message is complete: ask now, not after feed_data.
        self._keep_alive = self._parser.should_keep_alive()
        self._done = True

    # -- requests ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        server = self.server
        self.last_seen = server.now
        if self._handover is not None:
            self._handover += data  # reading is paused; whatever was in flight goes along
            return
        if self._close_after:
            return
        scan_from = len(self._buf) - 3 if len(self._buf) > 3 else 0
        buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        out: list[bytes] = []
        while True:
            end = buf.find(_HEAD_END, pos if pos > scan_from else scan_from)
            if end < 0:
                break
            stop = end + 4
            if not buf.startswith(_PREFIX, pos) or buf[pos + _PREFIX_LEN] not in (_QMARK,
                                                                                 _SPACE):
                self._flush(out)
                self._hand_over(buf[pos:])
                return
            try:
                self._answer(buf, pos, stop, out)
            except Foreign:
                self._flush(out)
                self._hand_over(buf[pos:])
                return
            pos = stop
            if self._close_after:
                break
        self._flush(out)
        if self._close_after:
            if not self._groups:
                assert self.transport is not None
                self.transport.close()
            return
        rest = buf[pos:]
        if rest and (len(rest) > server.max_head or b"\n\n" in rest):
            # Too long for a head (aiohttp answers 431/400), or bare-LF line ends.
            self._hand_over(rest)
            return
        if not rest:
            self.head_since = 0.0
        elif pos or not self.head_since:
            self.head_since = server.now  # the first bytes of a new head
        self._buf = rest

    def _answer(self, buf: bytes, pos: int, stop: int, out: list[bytes]) -> None:
        """Parse the request head ``buf[pos:stop]`` and answer it (into ``out`` or a commit
        group)."""
        line_end = buf.find(b"\r\n", pos)
        # HTTP/1.0 from the request line's end (get_http_version formats a string).
        http10 = buf.startswith(b"1.0", line_end - 3)
        lines = buf[line_end:stop]
        known = self._known
        server = self.server
        intake = server.intake
        commit: asyncio.Future[None] | None = None
        set_cookie: str | None = None
        if known is not None and known[1] == lines:
            # The header lines of the client we know: llhttp checks the head, no callbacks
            # but the end of the message. llhttp allows several spaces before the version:
            # then the target is not the slice, and the full parse below takes it.
            lean = self._lean
            assert lean is not None
            url = buf[pos + 4:line_end - 9]
            if url[-1:] != b" ":
                lean.done = False
                try:
                    lean.parser.feed_data(_head(buf, pos, stop))
                except httptools.HttpParserError:
                    raise Foreign() from None
                if not lean.done:
                    raise Foreign()
                self._keep_alive = lean.keep_alive
                try:
                    client = intake.readmit(known[0], known[2])
                    commit = self._spool(known[0], client, url)
                except (Refused, Dropped):
                    pass  # counted by the intake; browsers never read pixel errors
                self._respond(None, http10, commit, out)
                return
        self._url = b""
        self._headers = {}
        self._done = self._foreign = False
        parser = self._parser
        try:
            parser.feed_data(_head(buf, pos, stop))
        except httptools.HttpParserError:
            raise Foreign() from None
        if self._foreign or not self._done:
            raise Foreign()
        headers = self._headers
        tenant = server.router.lookup(headers.get("Host"))
        if tenant is None or tenant.config.allow_tenant_param:
            raise Foreign()  # 404 and the tenant parameter: aiohttp answers
        try:
            client = intake.client_of(headers, self.remote, False, tenant)
            if client.set_cookie is None and not client.anonymous:
                self._known = (tenant, lines, client)
                if self._lean is None:
                    self._lean = _LeanHead()
            set_cookie = client.set_cookie
            commit = self._spool(tenant, client, self._url)
        except (Refused, Dropped):
            pass  # counted by the intake; browsers never read pixel errors: the GIF anyway
        self._respond(set_cookie, http10, commit, out)

    def _spool(self, tenant: Tenant, client: Client, url: bytes) -> asyncio.Future[None] | None:
        """Spool the event of ``url``; the commit to wait for under ``ack: "spooled"``."""
        query = url[7:].partition(b"#")[0] if url[6:7] == b"?" else b""
        commit = self.server.intake.spool_query(tenant, client, "pageview", query)
        return commit if tenant.spooled_ack else None

    def _respond(self, set_cookie: str | None, http10: bool,
                 commit: asyncio.Future[None] | None, out: list[bytes]) -> None:
        """Queue the GIF answer: into ``out`` when nothing before it waits, else behind the
        commit it waits for."""
        server = self.server
        keep_alive = self._keep_alive
        if not keep_alive:
            self._close_after = True
        response = server.response(set_cookie, keep_alive, http10)
        groups = self._groups
        if not groups and (commit is None or commit.done()):
            out.append(response)
            return
        if groups and (commit is None or commit is groups[-1][0] or commit.done()):
            groups[-1][1].append(response)  # behind an earlier answer still waiting
        else:
            assert commit is not None
            groups.append((commit, [response]))
            server.wait_commit(commit, self)
        self._waiting += 1
        if self._waiting >= MAX_PENDING and not self._throttled:
            assert self.transport is not None
            self._throttled = True
            self.transport.pause_reading()

    def write_committed(self) -> None:
        """A spool commit resolved: write every response whose commit is done, in order."""
        transport = self.transport
        groups = self._groups
        if transport is None or transport.is_closing():
            groups.clear()
            return
        ready: list[bytes] = []
        while groups and groups[0][0].done():
            ready.extend(groups.pop(0)[1])
        self._waiting -= len(ready)
        self._flush(ready)
        if groups:
            return
        if self._close_after or self.server.closing:
            transport.close()
        elif self._handover is not None:
            rest, self._handover = self._handover, None
            self._switch(rest)
        elif self._throttled:
            self._throttled = False
            transport.resume_reading()
