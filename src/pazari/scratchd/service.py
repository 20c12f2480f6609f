"""The scratchd service: spool, sinks, forwarders and the HTTP listener, started and drained
in order (spec "Persistence": graceful shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from pazari.runtime.logs import get_logger
from pazari.runtime.service import EXIT_FAILED, Service
from pazari.scratchd.app import Dispatcher, Endpoints
from pazari.scratchd.config import ScratchdConfig
from pazari.scratchd.forwarder import Forwarder, persist_loop, persist_once
from pazari.scratchd.intake import Intake
from pazari.scratchd.partner import Partner
from pazari.scratchd.pixel import PixelServer, TimedServer
from pazari.scratchd.privacy import ProxyTrust
from pazari.scratchd.sinks import build_sink
from pazari.scratchd.spool import Spool
from pazari.scratchd.stats import SinkStats, Stats, StatsCollector
from pazari.scratchd.tenants import TenantRouter

log = get_logger("scratchd.service")

MAX_LINE = 65536  # long pixel query strings (an event may be 32 KiB once decoded)
GC_GEN0 = 20_000  # container allocations between young collections (CPython default 700)
MAX_HEAD = 4 * MAX_LINE  # an unfinished request head past this goes to aiohttp (400/431)


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Spec "Scale": one process per core on one port, the kernel spreads connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def tune_gc() -> None:
    """Issue 6 reports the GC pause per 100k events; the batch benchmark measured ~125 ms.
    What exists after start-up (modules, config, tenants) lives as long as the process:
    ``gc.freeze`` keeps full collections from rescanning it. A larger first generation lets
    the short-lived containers of a batch (parsed JSON, spool records) die by refcount
    before a collection walks them; the few real cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0, 20, 20)


class Scratchd(Service):
    name = "scratchd"

    def __init__(self, config: ScratchdConfig, host: str, port: int,
                 reuse_port: bool = False, worker: int | None = None,
                 orphans: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.worker = worker
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self.stats = Stats()
        self.registry.register(StatsCollector(self.stats))
        self.router = TenantRouter(config.tenants)
        self.spool = Spool(config.spool)
        self.stats.spool_bytes = self.spool.disk_bytes
        self.intake = Intake(self.spool, self.stats,
                             ProxyTrust(config.trusted_proxies, config.trust_forwarded_for))
        self.stopping = False
        self.forwarders: list[Forwarder] = []
        self._runner: web.ServerRunner | None = None
        self._pixel: PixelServer | None = None
        self._persist: asyncio.Task[None] | None = None
        self.orphans = list(orphans or [])
        self._drains: list[asyncio.Task[None]] = []
        self._orphan_forwarders: list[tuple[Spool, Forwarder]] = []

    def healthy(self) -> bool:
        return (not self.stopping and self.spool.failed is None
                and not self.spool.over_quota())

    async def start(self) -> None:
        used = sorted({s for t in self.config.tenants for s in t.sinks})
        self.spool.open(used)
        await self.spool.start()
        for name in used:
            sink = build_sink(name, self.config.sinks[name], self.worker)
            await sink.start()
            routed = {t.id for t in self.config.tenants if name in t.sinks}
            fwd = Forwarder(sink, self.spool, routed, self.stats.sinks[name])
            fwd.start()
            self.forwarders.append(fwd)
        for directory in self.orphans:
            self._drain_orphan(directory, used)
        interval = self.config.spool.cursor_interval_ms / 1000
        self._persist = asyncio.create_task(persist_loop(self.spool, self.forwarders, interval))
        self._persist.add_done_callback(self._persist_died)
        endpoints = Endpoints(self.router, self.intake, self.healthy)
        dispatch = Dispatcher(endpoints, Partner(endpoints))
        server = TimedServer(dispatch, access_log=None,
                             max_line_size=MAX_LINE, max_field_size=MAX_LINE)
        # aiohttp's server is not bound to the socket itself: the pixel fast path owns the
        # listener and hands it every connection that asks for something else (pixel.py).
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        sock = bind_socket(self.host, self.port, self.reuse_port)
        self.port = sock.getsockname()[1]
        self._pixel = PixelServer(self.router, self.intake, server, MAX_HEAD,
                                  self.config.header_timeout)
        await self._pixel.start(sock)
        tune_gc()

    def _drain_orphan(self, directory: str, used: list[str]) -> None:
        """Deliver the spool of a worker that no longer runs (issue 12), then remove its
        segments and cursors. Its forwarders share this process's sinks and start stopping:
        they end once they reach the orphan's end."""
        if not Path(directory).is_dir():
            return
        spool = Spool(replace(self.config.spool, dir=directory))
        spool.open(used)
        forwarders = []
        for fwd in self.forwarders:
            orphan = Forwarder(fwd.sink, spool, fwd.tenants, SinkStats())
            orphan.stopping = True
            orphan.start()
            forwarders.append(orphan)
            self._orphan_forwarders.append((spool, orphan))
        log.info("draining the spool %s left by a worker that no longer runs", directory,
                 extra={"lag_bytes": spool.end - min(spool.cursors.values(), default=0)})
        self._drains.append(asyncio.create_task(self._finish_orphan(spool, forwarders)))

    async def _finish_orphan(self, spool: Spool, forwarders: list[Forwarder]) -> None:
        for fwd in forwarders:
            assert fwd.task is not None
            await fwd.task
        await persist_once(spool, forwarders)
        spool.close()
        if all(fwd.cursor >= spool.end for fwd in forwarders):
            for path in spool.dir.iterdir():
                if path.suffix == ".seg" or path.name.startswith("cursor-"):
                    path.unlink()
            with contextlib.suppress(OSError):
                spool.dir.rmdir()  # dead letters, if any, stay for `scratchd spool replay`
            log.info("drained and removed the spool %s", spool.dir)

    def _persist_died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("cursor persistence failed: %s", task.exception())
            self.request_stop(EXIT_FAILED)

    async def stop(self) -> None:
        """Stop accepting, drain requests, flush the spool, let each sink deliver for a
        bounded time, persist the cursors, exit (spec "Persistence")."""
        self.stopping = True
        if self._pixel is not None:
            await self._pixel.stop(5.0)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.spool.stop_writes()
        deadline = time.monotonic() + self.config.shutdown_deliver_timeout
        await asyncio.gather(*(f.drain(deadline) for f in self.forwarders),
                             *(f.drain(deadline) for _, f in self._orphan_forwarders))
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        for spool, fwd in self._orphan_forwarders:
            if not spool.closed:  # not finished: keep its cursor for the next start
                await persist_once(spool, [fwd])
                spool.close()
        if self._persist is not None:
            self._persist.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._persist
        try:
            await persist_once(self.spool, self.forwarders)
        finally:
            # Also when the cursors cannot be persisted (a failed disk): the sinks and the
            # spool's threads and files are released all the same.
            for fwd in self.forwarders:
                try:
                    await fwd.sink.close()
                except Exception as exc:
                    log.warning("sink %s: close failed: %s", fwd.name, exc)
            self.spool.close()

    def vars(self) -> Mapping[str, Any]:
        return {"scratchd": {**self.stats.as_dict(),
                             "spool": {"end": self.spool.end, "durable": self.spool.durable,
                                       "events_written": self.spool.events_written,
                                       "commits": self.spool.commits,
                                       "segments": len(self.spool.bases),
                                       "cursors": dict(self.spool.persisted)}}}

    def listeners(self) -> Mapping[str, str]:
        return {"http": f"http://{self.host}:{self.port}"}
