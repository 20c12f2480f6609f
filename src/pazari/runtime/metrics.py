"""The metrics listener every daemon has: Prometheus ``/metrics``, expvar-style
``/debug/vars`` (the Go originals exposed expvar; its shape is kept: ``cmdline`` and
``memstats`` at the top level, then the service's own vars) and pprof-style
``/debug/pprof/`` profiles and dumps (:mod:`pazari.runtime.pprof`).

Each daemon owns a ``CollectorRegistry`` so that two daemons in one test process never clash.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from pazari.runtime.pprof import pprof_routes

VarsProvider = Callable[[], Mapping[str, Any]]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_STARTED = time.monotonic()


class GcStats:
    """Collections, collected/uncollectable objects per generation and pause times, measured
    with ``gc.callbacks`` (the interpreter calls us at the start and stop of each collection).
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.collected = [0, 0, 0]
        self.uncollectable = [0, 0, 0]
        self.pause_total = 0.0
        self.pause_max = 0.0
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        gen = info.get("generation", 0)
        self.collections[gen] += 1
        self.collected[gen] += info.get("collected", 0)
        self.uncollectable[gen] += info.get("uncollectable", 0)
        self.pause_total += pause
        self.pause_max = max(self.pause_max, pause)

    def snapshot(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "collected": list(self.collected),
            "uncollectable": list(self.uncollectable),
            "num_gc": sum(self.collections),
            "pause_total_ms": round(self.pause_total * 1000, 3),
            "pause_max_ms": round(self.pause_max * 1000, 3),
            "thresholds": list(gc.get_threshold()),
        }


GC_STATS = GcStats()


def memstats() -> dict[str, int]:
    """RSS and peak RSS of this process, and the blocks CPython's allocator has handed out."""
    with open("/proc/self/statm", "rb") as f:
        rss_pages = int(f.read().split()[1])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "rss_bytes": rss_pages * _PAGE_SIZE,
        "peak_rss_bytes": peak_kib * 1024,
        "allocated_blocks": sys.getallocatedblocks(),
    }


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the fd listdir itself opened
    except OSError:
        return -1


def debug_vars(service_vars: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``/debug/vars`` serves, as a dict."""
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop
        tasks = 0
    out: dict[str, Any] = {
        "cmdline": list(sys.argv),
        "memstats": memstats(),
        "gc": GC_STATS.snapshot(),
        "tasks": tasks,
        "threads": threading.active_count(),
        # By name (issue 19): every thread a daemon starts is named after its owner.
        "thread_names": sorted(t.name for t in threading.enumerate()),
        "open_fds": _open_fds(),
        "uptime_seconds": round(time.monotonic() - _STARTED, 3),
        "pid": os.getpid(),
    }
    if service_vars:
        out.update(service_vars)
    return out


def new_registry() -> CollectorRegistry:
    """A daemon's own registry, with the process, platform and GC collectors in it."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_routes(
    registry: CollectorRegistry, service_vars: VarsProvider | None = None
) -> list[web.RouteDef]:
    """``/metrics`` and ``/debug/vars`` handlers, for a daemon's own aiohttp app as well."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def variables(_: web.Request) -> web.Response:
        doc = debug_vars(service_vars() if service_vars else None)
        return web.Response(
            body=orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )

    return [web.get("/metrics", metrics), web.get("/debug/vars", variables)]


def parse_addr(addr: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"invalid address {addr!r}: expected host:port")
    host = host.strip("[]") or default_host
    return host, int(port)


class MetricsServer:
    """The ``--metrics-addr`` listener: a small aiohttp app of its own, with the
    ``/debug/pprof/`` profiles and dumps (not on the daemons' public ports, where
    ``metrics_routes`` alone is mounted)."""

    def __init__(
        self, addr: str, registry: CollectorRegistry, service_vars: VarsProvider | None = None
    ) -> None:
        self.host, self.port = parse_addr(addr)
        app = web.Application()
        app.add_routes(metrics_routes(registry, service_vars))
        app.add_routes(pprof_routes())
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
