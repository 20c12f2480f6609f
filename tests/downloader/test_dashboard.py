"""The dashboard rendered by headless Chromium (Debian ``chromium``) against a running
``downloader api``: the aggregation table, per-component stats and liveness; and no asset
comes from outside the api (no CDN)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis

from pazari.downloader.api import DASHBOARD_DIR
from tests.support.daemon import DaemonFactory
from tests.support.ports import free_port
from tests.support.services import RedisServer, require_binary

from .conftest import DOWNLOADER_BIN, make_config, write_config

pytestmark = pytest.mark.timeout(120)


def _dump_dom(chromium: str, url: str, profile: Path) -> str:
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=4000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_dashboard_in_headless_chromium(daemon_factory: DaemonFactory,
                                        redis_server: RedisServer, tmp_path: Path) -> None:
    chromium = require_binary("chromium", "apt-get install -y chromium")
    port = free_port()
    config = write_config(tmp_path, make_config(tmp_path, redis_server))
    daemon_factory([DOWNLOADER_BIN, "api", "-c", str(config), "--host", "127.0.0.1",
                    "-p", str(port)])
    r = redis.Redis(port=redis_server.port)
    try:
        for aggr, n in (("shop-a", 3), ("shop-b", 7), ("shop-c", 1)):
            r.zadd(f"jobs:{aggr}", {f"id{aggr}{i}": 1 for i in range(n)})
        r.set("stats:processor", b'{"alive":1,"workers":4,"maxWorkers":9}', px=60_000)
    finally:
        r.close()
    dom = _dump_dom(chromium, f"http://127.0.0.1:{port}/", tmp_path / "profile")
    assert 'data-loaded="1"' in dom, dom[:2000]
    table = dom[dom.index('id="aggregations"'):]
    table = table[: table.index("</table>")]
    rows = re.findall(r'<td class="name">([^<]*)</td><td class="host">([^<]*)</td>'
                      r'<td class="size">(\d+)</td>', table)
    origin = f"http://127.0.0.1:{port}"
    assert rows == [("shop-b", origin, "7"), ("shop-a", origin, "3"),
                    ("shop-c", origin, "1")]
    assert f"{origin} processor: alive" in dom
    assert f"{origin} notifier: dead" in dom  # no stats:notifier written
    stats = dom[dom.index('id="stats-processor"'):]
    assert "<td>maxWorkers</td><td>9</td>" in stats[: stats.index("</table>")]


def test_dashboard_empty_and_offline(daemon_factory: DaemonFactory,
                                     redis_server: RedisServer, tmp_path: Path) -> None:
    chromium = require_binary("chromium", "apt-get install -y chromium")
    port = free_port()
    config = write_config(tmp_path, make_config(tmp_path, redis_server))
    daemon_factory([DOWNLOADER_BIN, "api", "-c", str(config), "--host", "127.0.0.1",
                    "-p", str(port)])
    dom = _dump_dom(chromium, f"http://127.0.0.1:{port}/", tmp_path / "profile")
    assert "No running aggregations :(" in dom
    for asset in DASHBOARD_DIR.rglob("*"):
        if asset.is_file():
            text = asset.read_text()
            assert not re.search(r"(src|href)=\"(https?:)?//", text), asset
            assert "unpkg.com" not in text and "@import" not in text, asset
