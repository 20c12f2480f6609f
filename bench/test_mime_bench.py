"""MIME sniffer benchmarks: compiled vs pure twin vs libmagic (python-magic) vs filetype.

``test_gate_mime_sniffer`` measures all four in one process on the same first-1KiB buffers of
the generated corpus, writes the ratios to bench/results/mime_sniffer.json and gates on
compiled >= 20x libmagic and >= 3x filetype. The pytest-benchmark tests (group "mime") feed
``make bench``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.mime.corpus import build_corpus

RESULTS = Path(__file__).parent / "results" / "mime_sniffer.json"
MIN_VS_LIBMAGIC = 20.0
MIN_VS_FILETYPE = 3.0


def _require(module: str, pip_name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"{module} is missing: .venv/bin/pip install {pip_name}"
        if os.environ.get("CI") == "true":
            pytest.fail(hint)
        pytest.skip(hint)


@pytest.fixture(scope="module")
def buffers(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    _require("PIL", "pillow")
    return [s.head for s in build_corpus(tmp_path_factory.mktemp("mime-bench")) if s.head]


def _per_call(fn: Callable[[bytes], Any], bufs: list[bytes], min_time: float = 0.3) -> float:
    """Best-of-5 seconds per call over the whole corpus (repeat until min_time per round)."""
    rounds = 1
    while True:
        start = time.perf_counter()
        for _ in range(rounds):
            for b in bufs:
                fn(b)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 5:
            break
        rounds *= 2
    best = elapsed
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(rounds):
            for b in bufs:
                fn(b)
        best = min(best, time.perf_counter() - start)
    return best / (rounds * len(bufs))


def _compiled() -> Callable[[bytes], str]:
    try:
        return importlib.import_module("pazari.mime._sniff").sniff  # type: ignore[no-any-return]
    except ImportError:
        pytest.fail("pazari.mime._sniff is not built: run `make build`")


@pytest.mark.gate
def test_gate_mime_sniffer(buffers: list[bytes]) -> None:
    magic = _require("magic", "python-magic")
    filetype = _require("filetype", "filetype")
    from pazari.mime import _sniff_py

    libmagic = magic.Magic(mime=True)
    timings = {
        "compiled": _per_call(_compiled(), buffers),
        "pure": _per_call(_sniff_py.sniff, buffers),
        "libmagic": _per_call(libmagic.from_buffer, buffers),
        "filetype": _per_call(filetype.guess, buffers),
    }
    ratios = {
        "vs_libmagic": timings["libmagic"] / timings["compiled"],
        "vs_filetype": timings["filetype"] / timings["compiled"],
        "vs_pure": timings["pure"] / timings["compiled"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "buffers": len(buffers),
                "ns_per_call": {k: round(v * 1e9, 1) for k, v in timings.items()},
                "ratios": {k: round(v, 1) for k, v in ratios.items()},
                "gates": {"vs_libmagic": MIN_VS_LIBMAGIC, "vs_filetype": MIN_VS_FILETYPE},
            },
            indent=2,
        )
        + "\n"
    )
    assert ratios["vs_libmagic"] >= MIN_VS_LIBMAGIC, ratios
    assert ratios["vs_filetype"] >= MIN_VS_FILETYPE, ratios


def _sniff_all(fn: Callable[[bytes], Any], bufs: list[bytes]) -> None:
    for b in bufs:
        fn(b)


@pytest.mark.benchmark(group="mime")
def test_bench_sniff_compiled(benchmark: Any, buffers: list[bytes]) -> None:
    benchmark(_sniff_all, _compiled(), buffers)


@pytest.mark.benchmark(group="mime")
def test_bench_sniff_pure(benchmark: Any, buffers: list[bytes]) -> None:
    from pazari.mime import _sniff_py

    benchmark(_sniff_all, _sniff_py.sniff, buffers)


@pytest.mark.benchmark(group="mime")
def test_bench_sniff_libmagic(benchmark: Any, buffers: list[bytes]) -> None:
    magic = _require("magic", "python-magic")
    benchmark(_sniff_all, magic.Magic(mime=True).from_buffer, buffers)


@pytest.mark.benchmark(group="mime")
def test_bench_sniff_filetype(benchmark: Any, buffers: list[bytes]) -> None:
    filetype = _require("filetype", "filetype")
    benchmark(_sniff_all, filetype.guess, buffers)
