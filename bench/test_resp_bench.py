"""RESP hot path: compiled parser vs its pure twin vs hiredis, and the reply writer.

``make bench`` runs the pytest-benchmark groups; the ``gate`` tests measure the candidates
interleaved in one process (bench.helpers.ratio_of_best) and assert ratios, never times:
the compiled Reader must beat hiredis by 1.5x and the pure twin by 10x on a 1 MiB pipelined
stream of rafka traffic, and the compiled Writer the pure one by 3x.
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


def parse_with(impl: Any) -> Callable[[], list[list[bytes | None]]]:
    def parse() -> list[list[bytes | None]]:
        reader = impl.Reader()
        reader.feed(STREAM)
        out: list[list[bytes | None]] = reader.gets_all()
        return out

    return parse


def parse_hiredis() -> list[Any]:
    reader = hiredis.Reader()
    reader.feed(STREAM)
    out = []
    while (reply := reader.gets()) is not False:
        out.append(reply)
    return out


def write_with(impl: Any) -> Callable[[], bytes]:
    def write() -> bytes:
        writer = impl.Writer()
        message = writer.message
        for i in range(MESSAGES):
            message(b"orders-3", i & 15, 1_000_000 + i, VALUE)
        out: bytes = writer.take()
        return out

    return write


PARSERS = {
    "compiled": parse_with(_parser),
    "pure": parse_with(_parser_py),
    "hiredis": parse_hiredis,
}
WRITERS = {"compiled": write_with(_parser), "pure": write_with(_parser_py)}


@pytest.mark.parametrize("name", PARSERS)
def test_parse_1mib_pipeline(benchmark: Any, name: str) -> None:
    benchmark.group = "resp-parser: 1 MiB pipelined rafka requests"
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

    best = ratio_of_best(PARSERS, rounds=9)
    vs_hiredis = best["hiredis"] / best["compiled"]
    vs_pure = best["pure"] / best["compiled"]
    write_result(
        "resp_parser",
        {
            "stream_bytes": len(STREAM),
            "commands": len(COMMANDS),
            "best_seconds": best,
            "compiled_vs_hiredis": vs_hiredis,
            "compiled_vs_pure": vs_pure,
            "compiled_ns_per_command": best["compiled"] * 1e9 / len(COMMANDS),
        },
    )
    assert vs_hiredis >= 1.5
    assert vs_pure >= 10


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
