"""Run a daemon: uvloop, signals, metrics listener, sd_notify and a bounded graceful stop.

SIGTERM or SIGINT starts a graceful stop: STOPPING=1 goes to systemd, the service drains for
at most ``--drain-timeout`` seconds, and a clean drain exits 0 (a drain that runs out of time
exits 1). A second signal during the drain exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import uvloop
from prometheus_client import CollectorRegistry

from pazari.runtime import race
from pazari.runtime.logs import get_logger
from pazari.runtime.metrics import GC_STATS, MetricsServer, new_registry
from pazari.runtime.notify import sd_notify, watchdog_interval, watchdog_loop
from pazari.runtime.pprof import tasks_text

#: A drain still running after this long logs every task with its stack, once: a stop that
#: hangs says what it waits for ("think of when your goroutines terminate and how you'll
#: notice"), in the journal, before systemd or the drain timeout kills it.
SLOW_DRAIN_SECONDS = 5.0

EXIT_OK = 0
EXIT_DRAIN_TIMEOUT = 1
EXIT_FORCED = 1
EXIT_FAILED = 1


class Service:
    """What a daemon implements. ``start`` binds the listeners (READY=1 follows it); ``stop``
    drains; ``vars`` adds the service's own entries to ``/debug/vars``."""

    name = "service"

    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        self._stop_requested = asyncio.Event()
        self.exit_code = EXIT_OK

    async def start(self) -> None:
        """Bind listeners and start background work."""

    async def stop(self) -> None:
        """Drain: finish what is in flight; the runtime bounds the time this may take."""

    def vars(self) -> Mapping[str, Any]:
        return {}

    def listeners(self) -> Mapping[str, str]:
        """Name → URL of every listener, for the startup log line."""
        return {}

    def request_stop(self, exit_code: int = EXIT_OK) -> None:
        """Ask the runtime to stop the daemon, as a signal would (e.g. on a fatal error)."""
        self.exit_code = max(self.exit_code, exit_code)
        self._stop_requested.set()


@dataclass
class RuntimeOptions:
    metrics_addr: str | None = None
    drain_timeout: float = 30.0


def options_from_args(args: Any) -> RuntimeOptions:
    return RuntimeOptions(
        metrics_addr=getattr(args, "metrics_addr", None),
        drain_timeout=getattr(args, "drain_timeout", 30.0),
    )


def run(service: Service, options: RuntimeOptions) -> int:
    """Run ``service`` on uvloop until a signal (or ``request_stop``); return the exit code.

    With ``PAZARI_RACE=1`` the race checker (pazari.runtime.race) watches the whole run."""
    code = uvloop.run(_serve(service, options), loop_factory=race.loop_factory())
    if race.enabled():
        race.check_at_exit()
    return code


async def _serve(service: Service, options: RuntimeOptions) -> int:
    log = get_logger(f"{service.name}.runtime")
    loop = asyncio.get_running_loop()
    if race.enabled():
        race.install(loop)
    GC_STATS.install()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            log.info("received %s, stopping gracefully", name)
            service._stop_requested.set()
            return
        log.warning("received %s again, exiting now", name)
        sys.stderr.flush()
        os._exit(EXIT_FORCED)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    metrics: MetricsServer | None = None
    watchdog: asyncio.Task[None] | None = None
    try:
        await service.start()
        if options.metrics_addr:
            metrics = MetricsServer(options.metrics_addr, service.registry, service.vars)
            await metrics.start()
    except Exception as exc:
        log.error("failed to start: %s", exc, exc_info=exc)
        with contextlib.suppress(Exception):
            await service.stop()
        if metrics is not None:
            await metrics.stop()
        return EXIT_FAILED

    urls = dict(service.listeners())
    if metrics is not None:
        urls["metrics"] = metrics.url
    log.info("ready", extra={"pid": os.getpid(), **urls})
    sd_notify(f"READY=1\nSTATUS={service.name} serving\nMAINPID={os.getpid()}")
    # From the next loop turn on: the step that ran start() ends at the wait below.
    loop.call_soon(race.serving, True)
    interval = watchdog_interval()
    if interval is not None:
        watchdog = asyncio.create_task(watchdog_loop(interval), name="sd-watchdog")

    await service._stop_requested.wait()
    sd_notify("STOPPING=1")
    started = time.monotonic()
    code = service.exit_code
    slow = loop.call_later(SLOW_DRAIN_SECONDS, _log_slow_drain, log, loop)
    try:
        await asyncio.wait_for(service.stop(), timeout=options.drain_timeout)
    except TimeoutError:
        log.error("drain did not finish within %.1fs", options.drain_timeout)
        code = max(code, EXIT_DRAIN_TIMEOUT)
    except Exception as exc:
        log.error("error while stopping: %s", exc, exc_info=exc)
        code = max(code, EXIT_FAILED)
    finally:
        slow.cancel()
    if watchdog is not None:
        watchdog.cancel()
    if metrics is not None:
        await metrics.stop()
    race.serving(False)
    if race.enabled():
        await race.check_pending_tasks()
    log.info("stopped", extra={"drain_seconds": round(time.monotonic() - started, 3)})
    return code


def _log_slow_drain(log: Any, loop: asyncio.AbstractEventLoop) -> None:
    log.warning("drain still running after %.0fs; tasks:\n%s", SLOW_DRAIN_SECONDS,
                tasks_text(loop))
