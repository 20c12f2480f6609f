"""Expvar-style stats maps (spec §5 Metrics): kept in memory, written as JSON to
``stats:<component>`` every interval with TTL 2 * interval, and exported to Prometheus."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pazari.runtime import get_logger

_NAME = re.compile(r"[^a-zA-Z0-9_]")


class Stats(Collector):
    """Counters and gauges under the original's key names (``download.response.404``...)."""

    def __init__(self, component: str, gauges: tuple[str, ...] = ()) -> None:
        self.component = component
        self.values: dict[str, int] = {"alive": 1}
        self.gauges = set(gauges)

    def incr(self, key: str, n: int = 1) -> None:
        self.values[key] = self.values.get(key, 0) + n

    def set(self, key: str, value: int) -> None:
        self.values[key] = value

    def set_max(self, key: str, value: int) -> None:
        if value > self.values.get(key, 0):
            self.values[key] = value

    def snapshot(self) -> dict[str, Any]:
        return dict(self.values)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for key, value in sorted(self.values.items()):
            name = f"downloader_{self.component}_{_NAME.sub('_', key)}"
            yield GaugeMetricFamily(name, f"{self.component} stat {key}", value=value)

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)


async def report_loop(stats: Stats, store: Any, interval_ms: int) -> None:
    """Write the map to Redis every interval (TTL 2 * interval); Redis errors are logged and
    retried next time (the stats are not worth stopping for)."""
    log = get_logger(f"downloader.{stats.component}")
    while True:
        try:
            await store.put_stats(stats.component, stats.snapshot(), 2 * interval_ms)
        except Exception as exc:
            log.warning("could not write stats: %s", exc)
        await asyncio.sleep(interval_ms / 1000)
