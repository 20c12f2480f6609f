"""The ``POST /download`` fast path (issue 4: the end-to-end throughput gate; a profile of the
api showed half its CPU per job in aiohttp's request/response machinery and one task per
request, the other half in our validation and the batched enqueue).

One :class:`IntakeProtocol` per connection owns the api listener's connections, as
``scratchd/pixel.py`` does for the pixel. It frames each request itself and answers the common
one — exactly ``POST /download HTTP/1.x`` with a ``Content-Length`` body no larger than the
app's ``client_max_size``, none of the headers that make aiohttp do something else (chunked
bodies, ``Expect``, ``Upgrade``, ``Content-Encoding``, duplicate singleton headers, an HTTP/1.1
request without ``Host``), validated by ``httptools`` (llhttp, the parser aiohttp uses). The
status and body come from :meth:`Api.submit`, the same function the aiohttp handler calls, and
the response is byte for byte the one aiohttp writes (status line, header set and order,
``Connection`` handling for HTTP/1.0 and ``Connection: close``); only the Date value may lag by
less than a second. Anything else (another path or method, a parser error, a bare-LF head, a
head too long) hands the connection, from the first byte of that request on, to aiohttp's
low-level server, which then serves it to the end.

Requests on one connection are submitted as soon as they are read (so the enqueue batches them
with every other connection's), one task each; responses leave in request order, one
``transport.write`` per run of finished answers.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from typing import Any

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from pazari.runtime import get_logger
from pazari.runtime.fastpath import FastPathProtocol, FastPathServer, Foreign

log = get_logger("downloader.intake")

Submit = Callable[[bytes], Coroutine[Any, Any, tuple[int, bytes]]]
Headers = Callable[[int], Mapping[str, str]]

_HEAD_END = b"\r\n\r\n"
_LINE_11 = b"POST /download HTTP/1.1\r\n"
_LINE_10 = b"POST /download HTTP/1.0\r\n"
# aiohttp's max_line_size / max_field_size (8190): no line of a head this short can reach
# them, so a longer head goes to aiohttp, which answers 400 or serves it.
MAX_HEAD = 8190
MAX_HEADERS = 100  # aiohttp refuses more than 128 headers; past this aiohttp decides
MAX_PENDING = 256  # pipelined responses waiting before reading pauses
# Header names (lower-cased, from the head's CRLF-separated lines) and the rules aiohttp
# applies to them in its parser (aiohttp/_http_parser.pyx _process_header and
# _on_headers_complete): these make the request one the fast path does not answer.
_HEADER_NAME = re.compile(rb"\r\n([^:\r\n]*):")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,9})[ \t]*\r\n")
_FOREIGN_HEADERS = frozenset({
    b"transfer-encoding", b"expect", b"upgrade", b"content-encoding", b"sec-websocket-key1",
})
_SINGLETON_HEADERS = frozenset({
    b"content-length", b"content-location", b"content-range", b"content-type", b"etag",
    b"host", b"max-forwards", b"server", b"transfer-encoding", b"user-agent",
})


def frame_head(head: bytes, http11: bool, max_body: int) -> int:
    """The body length of a fast-path request head (request line to the blank line), or
    :class:`Foreign` when aiohttp must decide."""
    if (len(head) > MAX_HEAD or b"\x00" in head or head.count(b"\n") != head.count(b"\r\n")
            or b"\r\n " in head or b"\r\n\t" in head):
        raise Foreign()  # too long, NUL, bare LF, obs-fold: aiohttp's own answers
    lower = head.lower()
    names = _HEADER_NAME.findall(lower)
    if len(names) > MAX_HEADERS or not _FOREIGN_HEADERS.isdisjoint(names):
        raise Foreign()
    singles = [name for name in names if name in _SINGLETON_HEADERS]
    if len(singles) != len(set(singles)):
        raise Foreign()  # aiohttp: "Duplicate '...' header found."
    if http11 and b"host" not in singles:
        raise Foreign()  # aiohttp: "Missing 'Host' header in request."
    match = _CONTENT_LENGTH.search(lower)
    if match is None:
        raise Foreign()
    length = int(match.group(1))
    if length > max_body:
        raise Foreign()  # aiohttp's client_max_size error, through Api.download
    return length


class IntakeServer(FastPathServer):
    """The listener's protocol factory and the shared response parts (the connection set,
    the tick and the graceful stop are runtime.fastpath's)."""

    def __init__(self, submit: Submit, headers: Headers, fallback: web.Server,
                 max_body: int) -> None:
        super().__init__(fallback)
        self.submit = submit
        self.max_body = max_body
        self.answered = 0  # requests the fast path submitted itself (not handed over)
        self._headers = headers
        self._heads: dict[tuple[int, bool], bytes] = {}
        self._tail = b""
        self.start_ticking()

    def __call__(self) -> IntakeProtocol:
        return IntakeProtocol(self)

    async def start(self, host: str | None, port: int) -> list[socket.socket]:
        """Listen like aiohttp's TCPSite (``host`` None: every interface)."""
        self._server = await self.loop.create_server(self, host, port, backlog=128,
                                                     reuse_address=True)
        return list(self._server.sockets)

    def refresh_date(self, date: str) -> None:
        self._tail = f"\r\nDate: {date}\r\nServer: {SERVER_SOFTWARE}\r\n".encode()

    def response(self, status: int, body: bytes, http10: bool, keep_alive: bool) -> bytes:
        """aiohttp's bytes for ``web.Response(status, body, headers)`` (web_response.py
        _prepare_headers: Content-Length, Date, Server, then Connection)."""
        head = self._heads.get((status, http10))
        if head is None:
            fields = "".join(f"{k}: {v}\r\n" for k, v in self._headers(status).items())
            version = "1.0" if http10 else "1.1"
            head = (f"HTTP/{version} {status} {HTTPStatus(status).phrase}\r\n{fields}"
                    "Content-Length: ").encode()
            self._heads[(status, http10)] = head
        if keep_alive:
            end = b"Connection: keep-alive\r\n\r\n" if http10 else b"\r\n"
        else:
            end = b"\r\n" if http10 else b"Connection: close\r\n\r\n"
        return b"%s%d%s%s%s" % (head, len(body), self._tail, end, body)


_Answer = tuple["asyncio.Task[tuple[int, bytes]]", bool, bool]  # task, http10, keep-alive


class IntakeProtocol(FastPathProtocol):
    """One connection on the fast path (see the module docstring)."""

    __slots__ = (
        "_buf", "_close_after", "_done", "_have", "_keep_alive", "_need", "_parser", "_parts",
        "_queue", "_throttled", "_write_full",
    )
    server: IntakeServer

    def __init__(self, server: IntakeServer) -> None:
        super().__init__(server)
        self._buf = b""
        # A request waiting for the rest of its body, from its first byte.
        self._parts: list[bytes] | None = None
        self._have = 0
        self._need = 0
        self._parser = httptools.HttpRequestParser(self)
        self._done = False
        self._keep_alive = True
        self._queue: deque[_Answer] = deque()  # submitted requests, in request order
        self._throttled = False  # reading paused until the waiting responses are out
        self._write_full = False  # reading paused until the transport's buffer drains
        self._close_after = False

    # -- connection ---------------------------------------------------------------------------

    def owes(self) -> bool:
        return bool(self._queue)

    def busy(self) -> bool:
        return bool(self._buf) or self._parts is not None

    def connection_lost(self, exc: Exception | None) -> None:
        # The submitted tasks run on: their jobs are written, the 201s are not sent.
        super().connection_lost(exc)
        self._queue.clear()

    def pause_writing(self) -> None:
        assert self.transport is not None
        self._write_full = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self._write_full = False
        if (self._handover is None and not self._close_after and not self._throttled
                and not self.server.closing):
            self.transport.resume_reading()

    # -- httptools callback --------------------------------------------------------------------

    def on_message_complete(self) -> None:
        # llhttp clears its flags once the message is complete: ask now, not after feed_data.
        self._keep_alive = self._parser.should_keep_alive()
        self._done = True

    # -- requests ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.server.now
        if self._handover is not None:
            self._handover += data  # reading is paused; whatever was in flight goes along
            return
        if self._close_after or self.server.closing:
            return
        parts = self._parts
        if parts is not None:
            parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            buf = b"".join(parts)
            self._parts = None
            scan_from = 0
        else:
            scan_from = max(len(self._buf) - 3, 0)
            buf = self._buf + data if self._buf else data
        self._buf = b""
        pos = 0
        while not self._close_after:
            end = buf.find(_HEAD_END, max(pos, scan_from))
            if end < 0:
                break
            body_at = end + 4
            http11 = buf.startswith(_LINE_11, pos)
            try:
                if not http11 and not buf.startswith(_LINE_10, pos):
                    raise Foreign()
                stop = body_at + frame_head(buf[pos:body_at], http11, self.server.max_body)
                if stop > len(buf):
                    self._parts = [buf[pos:]]
                    self._have = len(buf) - pos
                    self._need = stop - pos
                    return
                self._submit(buf, pos, body_at, stop, not http11)
            except Foreign:
                self._hand_over(buf[pos:])
                return
            pos = stop
        if self._close_after:
            if not self._queue:
                assert self.transport is not None
                self.transport.close()
            return
        rest = buf[pos:]
        if rest and (len(rest) > MAX_HEAD or rest.count(b"\n") != rest.count(b"\r\n")):
            # Too long for a head (aiohttp answers 431/400), or a bare LF (aiohttp's 400, or
            # a bare-LF head end we would never find).
            self._hand_over(rest)
            return
        self._buf = rest

    def _submit(self, buf: bytes, pos: int, body_at: int, stop: int, http10: bool) -> None:
        """Check one whole request with llhttp and submit its body."""
        self._done = False
        try:
            self._parser.feed_data(memoryview(buf)[pos:stop])
        except httptools.HttpParserError:
            raise Foreign() from None
        if not self._done:
            raise Foreign()
        keep_alive = self._keep_alive
        if not keep_alive:
            self._close_after = True
        server = self.server
        server.answered += 1
        task = server.loop.create_task(server.submit(buf[body_at:stop]))
        task.add_done_callback(self._answered)
        queue = self._queue
        queue.append((task, http10, keep_alive))
        if len(queue) >= MAX_PENDING and not self._throttled:
            assert self.transport is not None
            self._throttled = True
            self.transport.pause_reading()

    def _answered(self, task: asyncio.Task[tuple[int, bytes]]) -> None:
        """A request's answer is ready: write every answer ready in order."""
        transport = self.transport
        queue = self._queue
        if transport is None or transport.is_closing():
            queue.clear()
            return
        server = self.server
        ready: list[bytes] = []
        while queue and queue[0][0].done():
            done, http10, keep_alive = queue.popleft()
            if done.cancelled() or done.exception() is not None:
                # aiohttp would answer its generic 500; the api's own errors are answers,
                # so this is a bug: say it loudly and drop the connection.
                log.error("download submit failed: %r",
                          None if done.cancelled() else done.exception())
                queue.clear()
                self._flush(ready)
                transport.close()
                return
            status, body = done.result()
            ready.append(server.response(status, body, http10, keep_alive))
        self._flush(ready)
        if queue:
            return
        if self._close_after or server.closing:
            transport.close()
        elif self._handover is not None:
            rest, self._handover = self._handover, None
            self._switch(rest)
        elif self._throttled:
            self._throttled = False
            if not self._write_full:
                transport.resume_reading()
