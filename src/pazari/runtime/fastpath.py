"""A raw fast path in front of aiohttp's low-level server: the connection plumbing shared by
scratchd's pixel (``scratchd/pixel.py``) and the downloader's ``POST /download``
(``downloader/intake.py``).

A fast path owns the listener. Its protocol answers the one request it is built for from
pre-built bytes, and hands the connection, from the first byte of any other request on, to
aiohttp's ``web.Server`` (the *fallback*), which then serves it to the end; answers the fast
path still owes leave first, so the client sees responses in request order (RFC 9112 §9.3.2).
Here: the connection set and the once-a-second tick (the Date header, RFC 9110 §6.6.1, and
the sweep of idle keep-alive connections), ordered writes, the hand-over, and the graceful
stop (stop accepting, answer what was read, close).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import cast

KEEPALIVE_TIMEOUT = 75.0  # as aiohttp's default: an idle keep-alive connection is closed


class Foreign(Exception):
    """This request is not for the fast path: hand the connection to aiohttp."""


class FastPathServer:
    """The listener's protocol factory base: connections, tick and stop. Subclasses build
    their protocol in ``__call__`` and their Date-dependent bytes in :meth:`refresh_date`,
    and call :meth:`start_ticking` once their own state is ready."""

    def __init__(self, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.fallback = fallback
        self.connections: set[FastPathProtocol] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self.now = 0.0
        self._server: asyncio.AbstractServer | None = None
        self._tick: asyncio.TimerHandle | None = None

    def refresh_date(self, date: str) -> None:
        """Rebuild whatever carries the Date header (``date`` is its RFC 9110 value)."""

    def start_ticking(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        self.now = self.loop.time()
        self.refresh_date(formatdate(time.time(), usegmt=True))
        idle_before = self.now - KEEPALIVE_TIMEOUT
        for conn in [c for c in self.connections if c.last_seen < idle_before]:
            conn.close_idle()
        self._tick = self.loop.call_later(1.0, self._refresh)

    async def stop(self, timeout: float) -> None:
        """Stop accepting; answer what the connections already read, close them (aborting
        whatever is still open after ``timeout`` seconds)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._tick is not None:
            self._tick.cancel()
        for conn in list(self.connections):
            conn.begin_close()
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort()


class FastPathProtocol(asyncio.Protocol):
    """One connection of a fast path. Subclasses say whether answers are still owed
    (:meth:`owes`) and whether the connection holds a partial request (:meth:`busy`)."""

    __slots__ = ("_handover", "last_seen", "server", "transport")

    def __init__(self, server: FastPathServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.last_seen = server.now
        self._handover: bytes | None = None  # the bytes aiohttp gets once our answers left

    def owes(self) -> bool:
        raise NotImplementedError

    def busy(self) -> bool:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not registered as an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)
        if self.server.closing:
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def _flush(self, out: list[bytes]) -> None:
        """One write for a run of answers."""
        if out:
            assert self.transport is not None
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _hand_over(self, rest: bytes) -> None:
        """From this request on, aiohttp serves the connection (after our answers left:
        reading pauses until then, and the owner calls :meth:`_switch` with the bytes)."""
        assert self.transport is not None
        if self.owes():
            self._handover = rest
            self.transport.pause_reading()
            return
        self._switch(rest)

    def _switch(self, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.server.connections.discard(self)
        handler = self.server.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if rest:
            handler.data_received(rest)
        transport.resume_reading()
        self.transport = None

    def begin_close(self) -> None:
        """Graceful stop: read nothing more; close once the owed answers are out."""
        if self.transport is None:
            return
        self.transport.pause_reading()
        if not self.owes():
            self.transport.close()

    def close_idle(self) -> None:
        if self.transport is not None and not self.owes() and not self.busy():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
