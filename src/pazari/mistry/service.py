"""mistryd as a runtime Service: startup order of the original (spec §4: prune zombies,
workers, gauge refresher, listen) and a graceful stop it never had."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pazari.mistry import janitor
from pazari.mistry.build import Builder
from pazari.mistry.config import MistryConfig
from pazari.mistry.engine import Engine, EngineError
from pazari.mistry.filesystem import make_filesystem
from pazari.mistry.metrics import Metrics
from pazari.mistry.server import Api
from pazari.mistry.store import JobIndex, Layout
from pazari.mistry.worker import Scheduler
from pazari.runtime.logs import get_logger
from pazari.runtime.metrics import parse_addr
from pazari.runtime.service import Service

HOSTED_REFRESH = 300.0  # the original refreshed mistry_builds_hosted every 5 minutes


class MistryService(Service):
    name = "mistryd"

    def __init__(
        self, config: MistryConfig, addr: str, filesystem: str, drain_timeout: float = 30.0
    ) -> None:
        super().__init__()
        self.config = config
        self.host, self.port = parse_addr(config.addr or addr, default_host="0.0.0.0")
        self.drain_timeout = drain_timeout
        self.log = get_logger("mistry.server")
        self.layout = Layout(config.build_path)
        self.fs = make_filesystem(filesystem)
        self.engines = config.make_engines()
        self.index = JobIndex()
        self.metrics = Metrics()
        self.builder = Builder(config, self.layout, self.fs, self.engines, self.index,
                               self.metrics)
        self.scheduler = Scheduler(self.builder)
        self.api = Api(self.scheduler, config.auth_token, self.vars, config.public_read)
        self.api.registry = self.registry
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _probe(self, engine: Engine) -> None:
        """Log what the engine is at start-up; an engine that is not reachable yet only
        fails the builds routed to it until it is."""
        try:
            if not await engine.ping():
                raise OSError("ping failed")
            try:
                await engine.prefix()
                self.log.info("container engine at %s: API version %s",
                              engine.url, engine.api_version)  # fmt: skip
            except EngineError as exc:
                self.log.error("container engine at %s: %s", engine.url, exc)
        except Exception as exc:
            self.log.warning(
                "container engine at %s is not reachable (%s); builds will fail until it is",
                engine.url, exc,
            )  # fmt: skip

    async def start(self) -> None:
        recovered = await self.builder.recover()
        if recovered:
            self.log.warning("[cleanup] %d interrupted builds recorded as failed", recovered)
        began = time.monotonic()
        n = self.index.load(self.layout)
        self.log.info("indexed %d jobs in %.3fs", n, time.monotonic() - began)
        self.scheduler.start()
        shown = dataclasses.replace(
            self.config, auth_token="<redacted>" if self.config.auth_token else ""
        )
        self.log.info("Configuration: %s", shown)
        for engine in self.engines:
            await self._probe(engine)
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="mistry-hosted"))
        retention = self.config.retention
        if retention.enabled:
            self._tasks.append(asyncio.create_task(self._janitor_loop(), name="mistry-janitor"))
        self._runner = web.AppRunner(
            self.api.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, backlog=1024)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.log.info("Listening on %s:%d", self.host, self.port)

    def listeners(self) -> Mapping[str, str]:
        return {"http": f"http://{self.host}:{self.port}"}

    def vars(self) -> Mapping[str, Any]:
        return {
            "mistry": {
                "queued": self.scheduler.waiting,
                "running": len(self.scheduler.running),
                "inflight": len(self.scheduler.inflight),
                "indexed_jobs": len(self.index),
                "log_subscribers": sum(
                    j.log.subscribers for j in self.scheduler.running if j.log is not None
                ),
            }
        }

    def refresh_hosted(self) -> None:
        for project in self.layout.projects():
            self.metrics.hosted[project] = len(self.layout.jobs(project, "ready"))

    async def _refresh_loop(self) -> None:
        while True:
            self.refresh_hosted()
            await asyncio.sleep(HOSTED_REFRESH)
            # Also notices builds removed by `mistryd delete-build` run beside us.
            if not self.scheduler.running:
                self.index.load(self.layout)

    async def _janitor_loop(self) -> None:
        r = self.config.retention
        while True:
            try:
                await janitor.sweep(
                    self.layout, self.fs, r.keep_last, r.max_age_seconds, self.index
                )
            except Exception as exc:
                self.log.error("retention sweep failed: %s", exc, exc_info=exc)
            await asyncio.sleep(r.interval_seconds)

    async def stop(self) -> None:
        """Stop taking jobs, give running builds most of the drain time, then cancel and
        record the rest, close the listener; the runtime then exits 0."""
        grace = max(self.drain_timeout - max(5.0, self.drain_timeout * 0.25), 0.0)
        self.log.info("draining: running builds get %.1fs", grace)
        await self.scheduler.drain(grace)
        self.api.closing.set()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.engines.close()
