"""Downloader fixtures: a Store on the real redis, an in-process api on a real socket, a
config writer and spawners for the real ``downloader`` subcommands."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pazari.downloader.api import Api
from pazari.downloader.redisconn import connect
from pazari.downloader.store import Store
from tests.support.daemon import Daemon, DaemonFactory
from tests.support.ports import free_port
from tests.support.services import RedisServer

DOWNLOADER_BIN = str(Path(sys.executable).parent / "downloader")


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[Store]:
    client = connect(redis_server.url, "test")
    yield Store(client)
    await client.aclose()


class ApiHandle:
    def __init__(self, url: str, session: aiohttp.ClientSession, api: Api) -> None:
        self.url = url
        self.session = session
        self.api = api

    async def post(self, path: str, body: bytes | str | dict[str, Any]) -> tuple[int, str]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        async with self.session.post(self.url + path, data=data) as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def api(store: Store, tmp_path: Path) -> AsyncIterator[ApiHandle]:
    handler = Api(store, str(tmp_path / "disabled"))
    app = web.Application()
    app.add_routes(handler.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    async with aiohttp.ClientSession() as session:
        yield ApiHandle(f"http://127.0.0.1:{port}", session, handler)
    await runner.cleanup()


def make_config(tmp: Path, redis: RedisServer, **sections: dict[str, Any]) -> dict[str, Any]:
    """A full config with test-speed intervals; ``sections`` override keys per section."""
    storage = tmp / "storage"
    storage.mkdir(exist_ok=True)
    cfg: dict[str, Any] = {
        "redis": {"addr": f"{redis.host}:{redis.port}"},
        "api": {"heartbeat_path": str(tmp / "hb-disable")},
        "processor": {
            "storage_dir": str(storage),
            "download_url": "http://localhost/assets",
            "stats_interval": 200,
            "allow_private_networks": True,
            "scan_interval": 0.2,
            "poll_interval": 0.05,
            "inflight_lease": 3,
            "aggregation_lease": 3,
            "retry_backoff": 0.2,
            "disk_check_interval": 0.2,
            "read_timeout": 5,
            "timeout": 20,
        },
        "notifier": {
            "concurrency": 20,
            "deletion_interval": 1,
            "stats_interval": 200,
            "poll_interval": 0.05,
            "retry_backoff": 0.2,
            "inflight_lease": 5,
            "allow_private_networks": True,
        },
        "backends": {"http": {"timeout": 5}},
    }
    for name, values in sections.items():
        if isinstance(cfg.get(name), dict):
            cfg[name].update(values)
        else:
            cfg[name] = values
    return cfg


def write_config(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


Spawner = Callable[..., Daemon]


@pytest.fixture
def spawn_downloader(daemon_factory: DaemonFactory) -> Spawner:
    """``spawn_downloader(command, config_path, *extra) -> Daemon`` (ready via sd_notify)."""

    def make(command: str, config: Path, *extra: str, **kw: Any) -> Daemon:
        argv = [DOWNLOADER_BIN, command, "-c", str(config), *extra]
        return daemon_factory(argv, **kw)

    return make


@pytest.fixture
async def stack(daemon_factory: DaemonFactory, redis_server: RedisServer, tmp_path: Path
                ) -> AsyncIterator[Any]:
    """The three real subcommands (started by ``await stack.start(...)``), a file server and
    a callback receiver; everything is stopped at teardown."""
    from .stack import Stack

    s = Stack(daemon_factory, redis_server, tmp_path)
    yield s
    await s.stop()
