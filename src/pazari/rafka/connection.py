"""One protocol object per TCP connection: parse, dispatch in order, reply in batches.

Commands run in the order they arrive. Synchronous commands (RPUSHX, RPUSH acks, PING, ...)
run inside ``data_received``, so a pipelined batch costs one parse crossing and one
``transport.write`` (go-redisproto flushed when its parser had no more buffered input, spec
§1.1). A command that must wait (BLPOP, DUMP, KEYS, SAVE) parks the rest of the batch until it
has replied.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import functools
import struct
import termios
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from pazari.rafka import commands, produce_run
from pazari.rafka.consumer import Consumer
from pazari.rafka.producer import Producer
from pazari.resp import ProtocolError, Reader, Writer
from pazari.runtime.logs import get_logger

if TYPE_CHECKING:
    from pazari.rafka.server import RafkaServer

log = get_logger("rafka.client")

#: Bytes of pipelined commands parked behind a blocking one before the connection stops
#: reading (issue 12: bounded in bytes, not entries; 4096 entries could be 4096 x 32 MB).
#: Reading resumes below half of it.
_PARKED_HIGH = 1 << 20
#: What one parked command costs beyond its argument bytes (list, bytes headers).
_PARKED_OVERHEAD = 64


#: Before AUTH succeeds a frame may carry at most this many arguments and bulk bytes; more
#: closes the connection, as Redis does since CVE-2021-32675 (an unauthenticated client
#: could otherwise make the server buffer 20 x 32 MB).
_UNAUTH_MAX_ARGS = 10
_UNAUTH_MAX_BYTES = 16 * 1024
_AUTH_COMMANDS = frozenset({b"AUTH", b"HELLO"})


#: Replies held back while more requests wait in the socket are written once this large.
_CORK_MAX = 256 * 1024


def _bytes_waiting(fd: int) -> int:
    """Bytes the kernel holds for us to read on ``fd`` (FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
    except OSError:
        return 0


def _parked_size(command: list[bytes | None] | _Failure) -> int:
    if command.__class__ is not list:
        return _PARKED_OVERHEAD
    return _PARKED_OVERHEAD + sum(len(a) + 8 for a in command if a is not None)


class _Failure:
    """A malformed frame, queued behind the commands that came before it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Connection(asyncio.Protocol):
    def __init__(self, server: RafkaServer) -> None:
        self.server = server
        opts = server.options
        self.reader = Reader(
            max_bulk=opts.max_bulk, max_inline=opts.max_inline, max_args=opts.max_args
        )
        self.writer = Writer()
        self.transport: asyncio.Transport | None = None
        self.client_id = ""
        self.named = False
        self.authenticated = opts.password is None
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        # DUMP accounting on a shared producer (commands.dump): this connection's messages
        # on the tracked producer not yet reported, and those it sent on the untracked one
        # before its first DUMP, settled once that producer finished `untracked_barrier`.
        self.unreported = 0
        self.untracked_sent = 0
        self.untracked_barrier = 0
        self.on_delivery: Any = None
        self._produce: Any = None
        self.monitoring = False
        self.closing = False
        self._parked: collections.deque[list[bytes | None] | _Failure] = collections.deque()
        self._parked_bytes = 0
        self._busy = False
        self._reading_paused = False
        # Why reading is paused: "parked" (too many parked bytes), "writing" (the client
        # does not read its replies). Reading resumes only when no reason holds.
        self._pause_reasons: set[str] = set()
        self._writable = asyncio.Event()
        self._writable.set()
        self._output_limit = opts.client_output_buffer_limit
        self._task: asyncio.Task[None] | None = None
        self._fd = -1
        self._flush_scheduled = False
        self.last_active = time.monotonic()
        #: Set once the transport is gone (connection_lost).
        self.lost = asyncio.Event()
        #: The label of the command being run, for `rafka_command_errors{command=...}`.
        self.command = ""

    @property
    def busy(self) -> bool:
        """A blocking command (BLPOP, DUMP, ...) is running: the client waits, it is not idle."""
        return self._busy

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host = peer[0]
            self.client_id = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        else:
            self.client_id = f"unix:{id(self)}"
        if not self.server.on_connect(self):
            self.writer.error(b"ERR max number of clients reached")
            self.flush()
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.lost.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.server.on_disconnect(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        batch: list[Any] = []
        try:
            self.reader.feed(data)
            # gets_all returns the commands before a malformed frame; the next call raises.
            while cmds := self.reader.gets_all():
                batch.extend(cmds)
        except ProtocolError as exc:
            # Commands before the bad frame still run, in order; then the error closes us.
            batch.append(_Failure(str(exc)))
        if not self.authenticated:
            self._check_unauthenticated(batch)
        if not batch:
            return
        if self._busy:
            self._park(batch)
            return
        self._run(batch)

    def _check_unauthenticated(self, batch: list[Any]) -> None:
        """Cut ``batch`` at the first frame an unauthenticated client may not send (Redis:
        `Protocol error: unauthenticated multibulk length` / `bulk length`). Frames after
        an AUTH or HELLO are the authenticated client's: they are checked no further."""
        for i, command in enumerate(batch):
            if command.__class__ is not list:
                return
            if len(command) > _UNAUTH_MAX_ARGS:
                batch[i:] = [_Failure("ERR Protocol error: unauthenticated multibulk length")]
                return
            if sum(len(a) for a in command if a is not None) > _UNAUTH_MAX_BYTES:
                batch[i:] = [_Failure("ERR Protocol error: unauthenticated bulk length")]
                return
            if command and (command[0] or b"").upper() in _AUTH_COMMANDS:
                return
        # No AUTH in this read: a partial frame may not grow past the bound either.
        if self.reader.buffered() > _UNAUTH_MAX_BYTES + 64:
            batch.append(_Failure("ERR Protocol error: unauthenticated bulk length"))

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its requests too, and let
        # parked commands wait before they add more replies.
        self._writable.clear()
        self._hold("writing")

    def resume_writing(self) -> None:
        self._writable.set()
        self._release("writing")

    # -- running commands --------------------------------------------------------------------

    def _run(self, batch: list[list[bytes | None] | _Failure]) -> None:
        i = 0
        n = len(batch)
        fast = self.authenticated and not self.server.monitors
        while i < n:
            if fast and self.producer is not None:
                # Producing is the hot path: a run of pipelined RPUSHX skips the generic
                # dispatch (no argument copies, no table lookups, locals only).
                i = self._rpushx_run(batch, i, n)
                if i == n:
                    break
            command = batch[i]
            i += 1
            pending = self._dispatch(command)
            if self.closing or self._over_output_limit():
                return
            if pending is not None:
                self._park(batch[i:])
                self._busy = True
                self.flush()
                self._task = asyncio.get_running_loop().create_task(self._run_parked(pending))
                return
        self._flush_batch()

    def _flush_batch(self) -> None:
        """Reply to a pipelined batch: at once, unless more requests already wait in the
        socket, in which case their replies go out together on the next read (one write, so
        one wake-up of the client, per socket read rather than per batch). go-redisproto
        flushed when its buffer held no more input (spec §1.1); this looks into the kernel's.
        """
        pending = len(self.writer)
        if (
            pending
            and pending < _CORK_MAX
            and self._fd >= 0
            and not self._flush_scheduled
            and _bytes_waiting(self._fd) > 0
        ):
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._deferred_flush)
            return
        self.flush()

    def _deferred_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def _rpushx_run(self, batch: list[Any], i: int, n: int) -> int:
        """Produce the RPUSHX commands from ``batch[i]`` on (compiled loop); return the index
        of the first command it did not take: the generic path replies to that one."""
        producer = self.producer
        assert producer is not None
        start = i
        produce = self._produce or producer.produce_raw
        i = produce_run(batch, i, commands.RPUSHX_NAMES, self.server.routes,
                        produce, self.writer.integer)
        if i > start:
            n = i - start
            stats = self.server.stats
            stats.produced += n
            stats.commands["rpushx"] += n
            producer.accepted += n
            if producer.tracked:
                self.unreported += n
            else:
                self.untracked_sent += n
        return i

    def track_deliveries(self) -> None:
        """Produce on the server's tracked producer from now on, counting this connection's
        own outstanding messages (DUMP, as the original's per-connection producer did)."""
        producer = self.server.tracked_producer()
        if self.producer is not None and not self.producer.tracked:
            self.untracked_barrier = self.producer.accepted
        self.producer = producer
        shared_report = producer.on_delivery

        def delivered(err: Any, msg: Any) -> None:
            self.unreported -= 1
            if err is not None:
                shared_report(err, msg)

        self.on_delivery = delivered
        self._produce = functools.partial(producer.produce_raw, on_delivery=delivered)

    async def _run_parked(self, pending: Awaitable[None]) -> None:
        try:
            await pending
            while self._parked and not self.closing:
                if not self._writable.is_set():
                    self.flush()
                    await self._writable.wait()
                    continue
                command = self._parked.popleft()
                self._parked_bytes -= _parked_size(command)
                if self._parked_bytes < _PARKED_HIGH // 2:
                    self._release("parked")
                nxt = self._dispatch(command)
                if self._over_output_limit():
                    return
                if nxt is not None:
                    self.flush()
                    await nxt
            self._busy = False
            self._parked_bytes = 0
            if not self.closing:
                self.flush()
                self._release("parked")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take the server down: close this client
            log.error("command failed: %s", exc, exc_info=exc, extra={"client": self.client_id})
            self.close()

    def _dispatch(self, command: list[bytes | None] | _Failure) -> Awaitable[None] | None:
        if isinstance(command, _Failure):
            self._protocol_error(command.text)
            return None
        if self.server.monitors:
            self.server.broadcast_monitor(self, command)
        return commands.dispatch(self, command)

    def _park(self, commands_: list[list[bytes | None] | _Failure]) -> None:
        """Queue commands behind the blocking one; stop reading past _PARKED_HIGH bytes."""
        self._parked.extend(commands_)
        self._parked_bytes += sum(map(_parked_size, commands_))
        if self._parked_bytes >= _PARKED_HIGH:
            self._hold("parked")

    def _hold(self, reason: str) -> None:
        self._pause_reasons.add(reason)
        self._set_reading(False)

    def _release(self, reason: str) -> None:
        self._pause_reasons.discard(reason)
        if not self._pause_reasons:
            self._set_reading(True)

    def _set_reading(self, on: bool) -> None:
        if self.transport is None or self.closing or on != self._reading_paused:
            return
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()
        self._reading_paused = not on

    def _over_output_limit(self) -> bool:
        """Redis `client-output-buffer-limit`: a client whose unread replies pass the limit
        is disconnected at once (its replies are dropped)."""
        t = self.transport
        if t is None or not self._output_limit:
            return False
        if len(self.writer) + t.get_write_buffer_size() <= self._output_limit:
            return False
        self.server.stats.output_limit_disconnects += 1
        log.info("client output buffer limit reached; closing",
                 extra={"client": self.client_id})
        self.writer.take()
        self.closing = True
        t.abort()
        return True

    # -- output ------------------------------------------------------------------------------

    def flush(self) -> None:
        if self.transport is not None and len(self.writer) and not self.transport.is_closing():
            self.transport.write(self.writer.take())
            self._over_output_limit()

    def error(self, text: bytes) -> None:
        """Reply ``-<text>`` to the running command, counted in ``command_errors``."""
        self.server.stats.command_errors[self.command] += 1
        self.writer.error(text)

    def _protocol_error(self, text: str) -> None:
        # Spec §1.1: write `-<error text>`, flush and close this connection only.
        self.server.stats.protocol_errors += 1
        log.info("protocol error: %s", text, extra={"client": self.client_id})
        self.writer.error(text.encode())
        self.flush()
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping replies the client has not read."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def send_monitor_line(self, line: bytes) -> None:
        """Stream one MONITOR line, dropping it when this monitor is too far behind."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size() > self.server.monitor_buffer_bytes:
            self.server.monitor_dropped += 1
            return
        t.write(line)
