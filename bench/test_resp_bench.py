"""RESP hot path: compiled parser vs its pure twin vs hiredis, and the reply writer.

``make bench`` runs the pytest-benchmark groups; the ``gate`` tests measure the candidates
interleaved in one process (bench.helpers.ratio_of_best) and assert ratios, never times.

Every parser is fed the 1 MiB pipelined stream of rafka traffic the way a socket feeds it:
in reads of 4, 16 and 64 KiB, each read drained of its complete commands before the next
(issue 15). Feeding hiredis the whole MiB at once is not a fair baseline: hiredis moves its
buffer down after every ~1 KiB it consumes, so one huge feed costs it the square of the
buffer and flattered the ratio (9x then; under 2x fed as a socket feeds it). The gate
asserts >= 1.5x hiredis at 16 KiB reads and >= 10x the pure twin; the 4 and 64 KiB figures
are reported, not gated. The compiled Writer must beat the pure one by 3x.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis
import pytest

from bench.helpers import ratio_of_best, write_result
from bench.resp_corpus import commands, stream
from pazari.resp import _parser_py

_parser: Any = pytest.importorskip("pazari.resp._parser")

STREAM = stream()
COMMANDS = commands()
MESSAGES = 10_000
VALUE = bytes(range(100))


READS = {"4k": 4 * 1024, "16k": 16 * 1024, "64k": 64 * 1024}
GATED_READ = "16k"


def chunks(size: int) -> list[bytes]:
    """The stream cut into socket-sized reads (made once: slicing is not what is measured)."""
    return [STREAM[i : i + size] for i in range(0, len(STREAM), size)]


def parse_with(impl: Any, reads: list[bytes]) -> Callable[[], list[list[bytes | None]]]:
    def parse() -> list[list[bytes | None]]:
        reader = impl.Reader()
        out: list[list[bytes | None]] = []
        for data in reads:
            reader.feed(data)
            out.extend(reader.gets_all())
        return out

    return parse


def parse_hiredis_with(reads: list[bytes]) -> Callable[[], list[Any]]:
    def parse() -> list[Any]:
        reader = hiredis.Reader()
        out = []
        for data in reads:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                out.append(reply)
        return out

    return parse


def parsers(size: int) -> dict[str, Callable[[], list[Any]]]:
    reads = chunks(size)
    return {
        "compiled": parse_with(_parser, reads),
        "pure": parse_with(_parser_py, reads),
        "hiredis": parse_hiredis_with(reads),
    }


def write_with(impl: Any) -> Callable[[], bytes]:
    def write() -> bytes:
        writer = impl.Writer()
        message = writer.message
        for i in range(MESSAGES):
            message(b"orders-3", i & 15, 1_000_000 + i, VALUE)
        out: bytes = writer.take()
        return out

    return write


PARSERS = parsers(READS[GATED_READ])
WRITERS = {"compiled": write_with(_parser), "pure": write_with(_parser_py)}


@pytest.mark.parametrize("name", PARSERS)
def test_parse_1mib_pipeline(benchmark: Any, name: str) -> None:
    benchmark.group = f"resp-parser: 1 MiB pipelined rafka requests, {GATED_READ} reads"
    assert benchmark(PARSERS[name]) == COMMANDS


@pytest.mark.parametrize("name", WRITERS)
def test_write_blpop_messages(benchmark: Any, name: str) -> None:
    benchmark.group = f"resp-writer: {MESSAGES} BLPOP message replies"
    assert len(benchmark(WRITERS[name])) > MESSAGES * len(VALUE)


@pytest.mark.gate
def test_gate_resp_parser() -> None:
    for name, parse in PARSERS.items():
        assert parse() == COMMANDS, name
    reader = _parser.Reader()
    one_by_one: list[list[bytes | None]] = []
    for i in range(len(STREAM)):
        reader.feed(STREAM[i : i + 1])
        one_by_one.extend(reader.gets_all())
    assert one_by_one == COMMANDS
    assert reader.buffered() == 0

    by_read: dict[str, dict[str, Any]] = {}
    for label, size in READS.items():
        candidates = parsers(size)
        best = ratio_of_best(candidates, rounds=9)
        by_read[label] = {
            "best_seconds": best,
            "compiled_vs_hiredis": best["hiredis"] / best["compiled"],
            "compiled_vs_pure": best["pure"] / best["compiled"],
            "compiled_ns_per_command": best["compiled"] * 1e9 / len(COMMANDS),
            "gated": label == GATED_READ,
        }
    gated = by_read[GATED_READ]
    write_result(
        "resp_parser",
        {
            "stream_bytes": len(STREAM),
            "commands": len(COMMANDS),
            "gated_read": GATED_READ,
            "bounds": {"compiled_vs_hiredis": 1.5, "compiled_vs_pure": 10},
            "reads": by_read,
            "compiled_vs_hiredis": gated["compiled_vs_hiredis"],
            "compiled_vs_pure": gated["compiled_vs_pure"],
        },
    )
    assert gated["compiled_vs_hiredis"] >= 1.5
    assert gated["compiled_vs_pure"] >= 10


@pytest.mark.gate
def test_gate_resp_writer() -> None:
    assert WRITERS["compiled"]() == WRITERS["pure"]()
    best = ratio_of_best(WRITERS, rounds=9)
    vs_pure = best["pure"] / best["compiled"]
    write_result(
        "resp_writer",
        {
            "messages": MESSAGES,
            "best_seconds": best,
            "compiled_vs_pure": vs_pure,
            "compiled_ns_per_message": best["compiled"] * 1e9 / MESSAGES,
        },
    )
    assert vs_pure >= 3
