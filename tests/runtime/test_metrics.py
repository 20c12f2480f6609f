"""/debug/vars content and the GC measurements behind it."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from pazari.runtime.metrics import GcStats, debug_vars, memstats, parse_addr


def test_gc_stats_count_forced_collections() -> None:
    stats = GcStats()
    stats.install()
    try:
        for _ in range(1000):
            cycle: list[Any] = []
            cycle.append(cycle)
        gc.collect()
    finally:
        stats.uninstall()
    snap = stats.snapshot()
    assert snap["collections"][2] >= 1
    assert sum(snap["collected"]) >= 1000
    assert snap["pause_total_ms"] > 0
    assert 0 < snap["pause_max_ms"] <= snap["pause_total_ms"]


def test_debug_vars_shape() -> None:
    doc = debug_vars({"rafka": {"connections": 3}})
    assert {"cmdline", "memstats", "gc", "tasks", "threads", "open_fds", "uptime_seconds"} <= set(
        doc
    )
    assert doc["rafka"] == {"connections": 3}
    assert doc["threads"] >= 1
    assert doc["open_fds"] >= 3


def test_debug_vars_names_every_thread() -> None:
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="owner-worker")
    thread.start()
    try:
        doc = debug_vars()
        assert "owner-worker" in doc["thread_names"]
        assert threading.main_thread().name in doc["thread_names"]
        assert len(doc["thread_names"]) == doc["threads"]
    finally:
        stop.set()
        thread.join()


def test_memstats_are_plausible() -> None:
    mem = memstats()
    assert 1 << 20 < mem["rss_bytes"] <= mem["peak_rss_bytes"] + (1 << 20)
    assert mem["allocated_blocks"] > 1000


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["9100", "host:", "host:port", ""])
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_addr(addr)
