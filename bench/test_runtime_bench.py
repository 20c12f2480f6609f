"""Gates of the shared runtime: the measuring helpers themselves, on known workloads."""

from __future__ import annotations

from typing import Any

import pytest

from bench.helpers import gc_pause, memory_growth, ratio_of_best, write_result


def _make_cycle() -> None:
    a: list[Any] = []
    a.append(a)


def _no_garbage() -> None:
    int("1")


@pytest.mark.gate
def test_gate_helpers_tell_garbage_from_none() -> None:
    """The GC gate must see pauses from cyclic garbage, and the memory gate none from a no-op."""
    cyclic = gc_pause(_make_cycle, 100_000)
    clean = gc_pause(_no_garbage, 100_000)
    growth = memory_growth(_no_garbage, 100_000)
    times = ratio_of_best({"list": lambda: [0] * 10_000, "tuple": lambda: (0,) * 10_000})
    write_result(
        "runtime_helpers",
        {
            "cyclic_gc_ms_per_100k": cyclic.per(100_000),
            "clean_gc_ms_per_100k": clean.per(100_000),
            "noop_blocks_growth": growth.blocks_growth,
            "list_vs_tuple": times["list"] / times["tuple"],
        },
    )
    assert cyclic.collections > clean.collections
    assert cyclic.pause_total_ms > clean.pause_total_ms
    assert abs(growth.blocks_growth) < 1000
