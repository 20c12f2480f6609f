"""Counters of the hot path, kept as plain ints and exported at scrape time (a
prometheus_client Counter takes a lock per increment; the pixel path cannot afford that).

Per tenant: events in / rejected (by reason) / dropped (quota, sampling, DNT, rate limit) /
spooled; per sink: delivered, failures, lag; spool bytes; GC pause per 100k events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pazari.runtime.metrics import GC_STATS


class TenantStats:
    __slots__ = ("dropped", "received", "rejected", "spooled")

    def __init__(self) -> None:
        self.received = 0
        self.spooled = 0
        self.rejected: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "spooled": self.spooled,
                "rejected": dict(self.rejected), "dropped": dict(self.dropped)}


class SinkStats:
    __slots__ = ("dead_letters", "delivered", "failures", "lag", "lag_bytes", "up")

    def __init__(self) -> None:
        self.delivered: defaultdict[str, int] = defaultdict(int)
        self.failures = 0
        self.dead_letters = 0
        self.lag_bytes = 0
        # The forwarder's live (bytes, events) behind the spool's end, read at scrape time.
        self.lag: Callable[[], tuple[int, int]] | None = None
        self.up = True

    def lags(self) -> tuple[int, int]:
        return self.lag() if self.lag is not None else (self.lag_bytes, 0)

    def as_dict(self) -> dict[str, Any]:
        lag_bytes, lag_events = self.lags()
        return {"delivered": dict(self.delivered), "failures": self.failures,
                "dead_letters": self.dead_letters, "lag_bytes": lag_bytes,
                "lag_events": lag_events, "up": self.up}


class Stats:
    def __init__(self) -> None:
        self.tenants: defaultdict[str, TenantStats] = defaultdict(TenantStats)
        self.sinks: defaultdict[str, SinkStats] = defaultdict(SinkStats)
        self.unknown_host = 0
        self.spool_bytes: Callable[[], int] = lambda: 0
        self.events_total = 0  # every event offered to the spool, for GC-per-100k

    def reject(self, tenant: str, reason: str, n: int = 1) -> None:
        self.tenants[tenant].rejected[reason] += n

    def drop(self, tenant: str, reason: str, n: int = 1) -> None:
        self.tenants[tenant].dropped[reason] += n

    def gc_pause_per_100k_ms(self) -> float:
        events = self.events_total
        gc = GC_STATS.snapshot()
        return round(gc["pause_total_ms"] * 100_000 / events, 3) if events else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenants": {k: v.as_dict() for k, v in self.tenants.items()},
            "sinks": {k: v.as_dict() for k, v in self.sinks.items()},
            "unknown_host": self.unknown_host,
            "spool_bytes": self.spool_bytes(),
            "events_total": self.events_total,
            "gc_pause_ms_per_100k_events": self.gc_pause_per_100k_ms(),
        }


class StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats
        received = CounterMetricFamily("scratchd_events_received", "Events in", labels=["tenant"])
        spooled = CounterMetricFamily("scratchd_events_spooled", "Events spooled",
                                      labels=["tenant"])
        rejected = CounterMetricFamily("scratchd_events_rejected", "Events rejected",
                                       labels=["tenant", "reason"])
        dropped = CounterMetricFamily("scratchd_events_dropped", "Events dropped on purpose",
                                      labels=["tenant", "reason"])
        for name, t in sorted(s.tenants.items()):
            received.add_metric([name], t.received)
            spooled.add_metric([name], t.spooled)
            for reason, n in sorted(t.rejected.items()):
                rejected.add_metric([name, reason], n)
            for reason, n in sorted(t.dropped.items()):
                dropped.add_metric([name, reason], n)
        delivered = CounterMetricFamily("scratchd_events_delivered", "Events delivered",
                                        labels=["sink", "tenant"])
        failures = CounterMetricFamily("scratchd_sink_failures", "Failed delivery attempts",
                                       labels=["sink"])
        lag = GaugeMetricFamily("scratchd_sink_lag_bytes", "Spool bytes not yet delivered",
                                labels=["sink"])
        lag_events = GaugeMetricFamily("scratchd_sink_lag_events",
                                       "Events appended but not yet delivered", labels=["sink"])
        up = GaugeMetricFamily("scratchd_sink_up", "1 when the last delivery succeeded",
                               labels=["sink"])
        dead = CounterMetricFamily("scratchd_sink_dead_letters",
                                   "Events a sink kept rejecting, set aside", labels=["sink"])
        for name, k in sorted(s.sinks.items()):
            for tenant, n in sorted(k.delivered.items()):
                delivered.add_metric([name, tenant], n)
            failures.add_metric([name], k.failures)
            dead.add_metric([name], k.dead_letters)
            lag_bytes, lag_count = k.lags()
            lag.add_metric([name], lag_bytes)
            lag_events.add_metric([name], lag_count)
            up.add_metric([name], 1 if k.up else 0)
        unknown = CounterMetricFamily("scratchd_unknown_host", "Requests for unknown hosts")
        unknown.add_metric([], s.unknown_host)
        spool = GaugeMetricFamily("scratchd_spool_bytes", "Bytes in the spool")
        spool.add_metric([], s.spool_bytes())
        gc = GaugeMetricFamily("scratchd_gc_pause_ms_per_100k_events",
                               "GC pause total per 100k events")
        gc.add_metric([], s.gc_pause_per_100k_ms())
        yield from (received, spooled, rejected, dropped, delivered, failures, dead, lag,
                    lag_events, up, unknown, spool, gc)
