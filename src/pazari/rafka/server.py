"""The rafka server: listener, client registry, producers, MONITOR and the shutdown sequence
of the original (spec §2.3)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from typing import Any

from pazari.rafka.config import RafkaConfig, ServerOptions
from pazari.rafka.connection import Connection
from pazari.rafka.producer import Producer, kafka_text
from pazari.rafka.stats import Stats, StatsCollector
from pazari.runtime.logs import get_logger
from pazari.runtime.service import Service

#: How long a closing client may take to read its last replies at shutdown.
_CLOSE_GRACE = 1.0


class RafkaServer(Service):
    name = "rafka"

    def __init__(self, config: RafkaConfig, host: str, port: int) -> None:
        super().__init__()
        self.log = get_logger("rafka.server")
        self.options: ServerOptions = config.rafka
        self.consumer_conf, self.producer_conf = config.merged()
        self.host = host
        self.port = port
        self.stats = Stats()
        self.registry.register(StatsCollector(self.stats))
        self.stopping = asyncio.Event()
        self.connections: set[Connection] = set()
        self.clients: dict[str, Connection] = {}
        self.monitors: set[Connection] = set()
        # A monitor that falls this far behind loses lines (the original buffered 1000).
        self.monitor_buffer_bytes = self.options.monitor_buffer * 256
        self.monitor_dropped = 0
        self._shared_producer: Producer | None = None
        self._tracked_producer: Producer | None = None
        self._producers: set[Producer] = set()
        self._closing: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        # Process-wide parse caches, bounded by commands.remember: parsed BLPOP keys, and the
        # `topics:<topic>[:<key>]` targets of RPUSHX for the hot path (Connection._rpushx_run).
        self.topic_keys: dict[bytes, Any] = {}
        self.routes: dict[bytes | None, tuple[str, bytes | None]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = None
        if self.options.tls_cert and self.options.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.options.tls_cert, self.options.tls_key)
        self._server = await loop.create_server(
            lambda: Connection(self), self.host, self.port, ssl=context,
            reuse_address=True, backlog=4096,
        )
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        self.log.info("Listening on %s:%d", self.host, self.port)
        if self.options.timeout > 0:
            self._idle_timer = loop.call_later(self._idle_period(), self._close_idle)

    def _idle_period(self) -> float:
        return min(1.0, self.options.timeout / 2)

    def _close_idle(self) -> None:
        """Redis `timeout`: close clients idle that long; blocked and MONITOR clients are
        not idle (Redis clientsCronHandleTimeout)."""
        limit = time.monotonic() - self.options.timeout
        for conn in list(self.connections):
            if conn.last_active < limit and not conn.busy and not conn.monitoring:
                self.log.info("closing idle client", extra={"client": conn.client_id})
                conn.close()
        self._idle_timer = asyncio.get_running_loop().call_later(
            self._idle_period(), self._close_idle
        )

    async def stop(self) -> None:
        """Spec §2.3: consumers go first, producers keep working until the last phase."""
        self.log.info("Shutting down...")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        # 1. New and waiting BLPOPs answer `-CONS Server shutdown` (within one poll slice).
        self.stopping.set()
        # 2. Close the clients that have a consumer, once their pending reply is out; closing
        #    a connection closes its consumer, which commits the stored offsets.
        with_consumer = [c for c in self.connections if c.consumer is not None]
        await asyncio.gather(*(self._close_after_reply(c) for c in with_consumer))
        # 3. Wait for the consumers to finish closing.
        await self._wait_closing()
        # 4. Stop accepting; until now producers could still connect.
        if self._server is not None:
            self._server.close()
        # 5. Close the remaining (producer-only) clients and flush the producers.
        await asyncio.gather(*(self._close_or_abort(c) for c in list(self.connections)))
        await self._wait_closing()
        producers = list(self._producers)
        await asyncio.gather(*(p.close(self.options.close_flush_timeout) for p in producers))
        # 6. Done.
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _close_after_reply(self, conn: Connection) -> None:
        task = conn._task
        if task is not None and not task.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        conn.flush()
        await self._close_or_abort(conn)

    async def _close_or_abort(self, conn: Connection) -> None:
        """Close ``conn``; a client that does not read its replies keeps a closing transport
        (and its consumer) open for ever, so it is aborted after a grace period: step 3 of
        the shutdown never waits on a client (issue 12)."""
        conn.close()
        try:
            await asyncio.wait_for(conn.lost.wait(), _CLOSE_GRACE)
        except TimeoutError:
            self.log.info("client does not read; aborted", extra={"client": conn.client_id})
            conn.abort()

    async def _wait_closing(self) -> None:
        # connection_lost runs on the next loop iteration after transport.close().
        await asyncio.sleep(0)
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    def vars(self) -> Mapping[str, Any]:
        return {
            "rafka": {
                **self.stats.vars(),
                "clients": len(self.clients),
                "monitors": len(self.monitors),
                "monitor_dropped": self.monitor_dropped,
                "producers": len(self._producers),
            }
        }

    def listeners(self) -> Mapping[str, str]:
        scheme = "rediss" if self.options.tls_cert else "redis"
        return {"resp": f"{scheme}://{self.host}:{self.port}"}

    # -- client registry (spec §1.2) -----------------------------------------------------

    def on_connect(self, conn: Connection) -> bool:
        """Register a new connection; False when it is one too many (`max_clients`)."""
        if len(self.connections) >= self.options.max_clients:
            self.stats.rejected_connections += 1
            return False
        self.connections.add(conn)
        self.clients[conn.client_id] = conn
        self.stats.connections += 1
        self.stats.connections_total += 1
        return True

    def rename(self, conn: Connection, new_id: str) -> None:
        self.release(conn)
        conn.client_id = new_id
        self.clients[new_id] = conn

    def release(self, conn: Connection) -> None:
        if self.clients.get(conn.client_id) is conn:
            del self.clients[conn.client_id]

    def on_disconnect(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.monitors.discard(conn)
        self.release(conn)
        self.stats.connections -= 1
        if conn.consumer is not None:
            self._track(conn.consumer.close())
        if conn.producer is not None and conn.producer not in (
            self._shared_producer, self._tracked_producer
        ):
            self._producers.discard(conn.producer)
            self._track(conn.producer.close(self.options.close_flush_timeout))
        conn.producer = None

    def _track(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- producers -----------------------------------------------------------------------

    def producer_for(self, conn: Connection) -> Producer | str:
        """The producer this connection uses, created on first use; an error text on failure."""
        try:
            if self.options.producers == "shared":
                if self._shared_producer is None:
                    self._shared_producer = Producer(self.producer_conf, self.stats)
                    self._producers.add(self._shared_producer)
                producer = self._shared_producer
            else:
                producer = Producer(self.producer_conf, self.stats)
                self._producers.add(producer)
        except Exception as exc:
            return kafka_text(exc)
        conn.producer = producer
        return producer

    @property
    def shared_producer(self) -> Producer | None:
        return self._shared_producer

    def tracked_producer(self) -> Producer:
        """The shared producer reporting every delivery, for connections that DUMP."""
        if self._tracked_producer is None:
            self._tracked_producer = Producer(self.producer_conf, self.stats, tracked=True)
            self._producers.add(self._tracked_producer)
        return self._tracked_producer

    # -- consumers -------------------------------------------------------------------------

    def on_consumer(self, conn: Connection) -> None:
        self.log.info("consumer %s registered", conn.consumer.cid if conn.consumer else "")

    # -- MONITOR (spec §1.6) -------------------------------------------------------------

    def add_monitor(self, conn: Connection) -> None:
        conn.monitoring = True
        self.monitors.add(conn)
        self.log.info("New monitor client: %s (active monitors: %d)",
                      conn.client_id, len(self.monitors))

    def broadcast_monitor(self, sender: Connection, command: list[bytes | None]) -> None:
        """``+<unix secs> [0 <id>] "<CMD>" "<arg>"...``, with the sender's id (the original
        showed the monitoring client's id: a bug)."""
        parts = [b'"' + _printable(a or b"") + b'"' for a in _redacted(command)]
        line = b"+%.6f [0 %s] %s\r\n" % (time.time(), sender.client_id.encode(), b" ".join(parts))
        for mon in list(self.monitors):
            mon.send_monitor_line(line)


_REDACTED = b"(redacted)"


def _redacted(command: list[bytes | None]) -> list[bytes | None]:
    """The command as MONITOR shows it: name upper-cased, secrets replaced as Redis does
    (redactClientCommandArgument): every AUTH argument, and HELLO's AUTH user and password.
    """
    if not command:
        return []
    name = (command[0] or b"").upper()
    out = [name, *command[1:]]
    if name == b"AUTH":
        out[1:] = [_REDACTED] * (len(out) - 1)
    elif name == b"HELLO":
        for i in range(2, len(out)):
            if (out[i] or b"").upper() == b"AUTH":
                out[i + 1 : i + 3] = [_REDACTED] * len(out[i + 1 : i + 3])
                break
    return out


def _printable(arg: bytes) -> bytes:
    # A simple string cannot carry CR or LF; the original sent them raw and broke the stream.
    return arg.replace(b"\\", b"\\\\").replace(b"\r", b"\\r").replace(b"\n", b"\\n")
