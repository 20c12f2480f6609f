"""The three real ``downloader`` subcommands against the real redis, a file server and a
callback receiver, for end-to-end and reliability tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import Daemon, DaemonFactory
from tests.support.ports import free_port
from tests.support.services import RedisServer

from .conftest import DOWNLOADER_BIN, make_config, write_config
from .servers import FileServer, Receiver


class Stack:
    def __init__(self, factory: DaemonFactory, redis: RedisServer, tmp: Path) -> None:
        self.factory = factory
        self.redis = redis
        self.tmp = tmp
        self.files = FileServer()
        self.receiver = Receiver()
        self.api_port = free_port()
        self.metrics_ports = {"processor": free_port(), "notifier": free_port()}
        self.daemons: dict[str, Daemon] = {}
        self.config: dict[str, Any] = {}
        self.config_path = tmp / "config.json"
        self.file_url = ""
        self.session: aiohttp.ClientSession | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def storage(self) -> Path:
        return Path(self.config["processor"]["storage_dir"])

    async def start(self, components: tuple[str, ...] = ("api", "processor", "notifier"),
                    **sections: dict[str, Any]) -> Stack:
        self.file_url = await self.files.start()
        await self.receiver.start()
        self.config = make_config(self.tmp, self.redis, **sections)
        write_config(self.tmp, self.config)
        self.session = aiohttp.ClientSession()
        for name in components:
            await self.start_component(name)
        return self

    async def start_component(self, name: str) -> Daemon:
        if name == "api":
            extra = ["--host", "127.0.0.1", "-p", str(self.api_port)]
        else:
            extra = ["--metrics-addr", f"127.0.0.1:{self.metrics_ports[name]}"]
        env = dict(os.environ)
        d = self.factory([DOWNLOADER_BIN, name, "-c", str(self.config_path), *extra],
                         env=env, start=False)
        await d.astart()
        self.daemons[name] = d
        return d

    async def stop_gracefully(self, within: float = 8.0) -> None:
        """SIGTERM every component and require a clean exit 0 (drain works)."""
        for d in self.daemons.values():
            if d.running:
                await d.astop(within=within)

    async def stop(self) -> None:
        for d in self.daemons.values():
            d.terminate_quietly()
        if self.session is not None:
            await self.session.close()
        await self.files.stop()
        await self.receiver.stop()

    async def post(self, url: str, **fields: Any) -> str:
        body = {"url": url, "aggr_id": "a", "aggr_limit": 4,
                "callback_url": self.receiver.url, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        assert self.session is not None
        async with self.session.post(self.api_url + "/download",
                                     data=json.dumps(body)) as resp:
            text = await resp.text()
            assert resp.status == 201, text
            return str(json.loads(text)["id"])
