"""Compiled vs pure: identical behaviour on valid, random and hostile input (hypothesis),
plus a seeded 100k-input fuzz run of the compiled Reader.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pazari.resp import ERROR_TEXTS, ProtocolError, _parser_py

_parser = pytest.importorskip("pazari.resp._parser")  # test_compiled_module_loaded guards it

Step = tuple[list[list[bytes | None]], str | None, int]

LIMITS = st.fixed_dictionaries(
    {
        "max_bulk": st.integers(0, 64),
        "max_inline": st.integers(0, 64),
        "max_args": st.integers(0, 8),
    }
)
ARG = st.one_of(st.none(), st.binary(max_size=40))
COMMAND = st.lists(ARG, max_size=6)
INLINE_ARG = st.binary(min_size=1, max_size=12).filter(lambda b: not (set(b) & set(b" \r\n")))
INLINE = st.lists(INLINE_ARG, min_size=1, max_size=5).filter(lambda a: a[0][:1] != b"*")
TOKENS = st.sampled_from(
    [b"*", b"$", b"\r\n", b"\r", b"\n", b"-", b"-1", b"0", b"1", b"3", b"12", b" ", b"a", b"GET"]
)
NOISE = st.one_of(st.binary(max_size=60), st.lists(TOKENS, max_size=30).map(b"".join))


def encode(cmd: Sequence[bytes | None]) -> bytes:
    """A request multibulk, nulls included (the pure Writer's RESP2 bulk array)."""
    writer = _parser_py.Writer()
    writer.bulk_array(cmd)
    return writer.take()


@st.composite
def valid_commands(draw: st.DrawFn) -> tuple[bytes, list[list[bytes | None]]]:
    """A pipelined stream (multibulk, inline, empty and blank) and the commands it holds."""
    stream = bytearray()
    commands: list[list[bytes | None]] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["multibulk", "inline", "empty", "blank"]))
        if kind == "multibulk":
            cmd = draw(COMMAND)
            stream += encode(cmd)
            commands.append(cmd)
        elif kind == "inline":
            args: list[bytes | None] = list(draw(INLINE))
            spaces = draw(st.sampled_from([b" ", b"  "]))
            stream += spaces.join(a or b"" for a in args) + draw(st.sampled_from([b"\r\n", b"\n"]))
            commands.append(args)
        elif kind == "empty":
            stream += draw(st.sampled_from([b"*0\r\n", b"*-1\r\n"]))
            commands.append([])
        else:
            stream += draw(st.sampled_from([b"\r\n", b"\n", b"  \r\n"]))
    return bytes(stream), commands


def valid_streams() -> st.SearchStrategy[bytes]:
    return valid_commands().map(lambda pair: pair[0])


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_streams()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(NOISE)
        elif at < len(data):
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def trace(impl: Any, chunks: Sequence[bytes], limits: dict[str, int]) -> list[Step]:
    """What a server sees after each feed: commands, error text, bytes still buffered."""
    reader = impl.Reader(**limits)
    steps: list[Step] = []
    for chunk in chunks:
        reader.feed(chunk)
        got: list[list[bytes | None]] = []
        try:
            while cmds := reader.gets_all():
                got.extend(cmds)
        except ProtocolError as exc:
            steps.append((got, str(exc), reader.buffered()))
            return steps
        steps.append((got, None, reader.buffered()))
    return steps


def flat(steps: list[Step]) -> tuple[list[list[bytes | None]], str | None]:
    return [c for s in steps for c in s[0]], steps[-1][1] if steps else None


def assert_twins_agree(data: bytes, chunks: list[bytes], limits: dict[str, int]) -> None:
    compiled = trace(_parser, chunks, limits)
    assert compiled == trace(_parser_py, chunks, limits)
    # The outcome depends only on the bytes, never on how they were split.
    assert flat(compiled) == flat(trace(_parser, [data], limits))


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data(), stream=valid_streams(), limits=LIMITS)
def test_valid_streams(data: st.DataObject, stream: bytes, limits: dict[str, int]) -> None:
    assert_twins_agree(stream, data.draw(chunkings(stream)), limits)


@SETTINGS
@given(pair=valid_commands())
def test_valid_streams_parse_to_their_commands(
    pair: tuple[bytes, list[list[bytes | None]]],
) -> None:
    stream, commands = pair
    one_by_one = [stream[i : i + 1] for i in range(len(stream))]
    assert flat(trace(_parser, one_by_one, {})) == (commands, None)
    assert flat(trace(_parser_py, [stream], {})) == (commands, None)


@SETTINGS
@given(data=st.data(), stream=NOISE, limits=LIMITS)
def test_random_bytes(data: st.DataObject, stream: bytes, limits: dict[str, int]) -> None:
    assert_twins_agree(stream, data.draw(chunkings(stream)), limits)


@SETTINGS
@given(data=st.data(), stream=mutated_streams(), limits=LIMITS)
def test_mutated_streams(data: st.DataObject, stream: bytes, limits: dict[str, int]) -> None:
    assert_twins_agree(stream, data.draw(chunkings(stream)), limits)


@SETTINGS
@given(args=st.lists(st.binary(max_size=50), max_size=20))
def test_encode_command_round_trips(args: list[bytes]) -> None:
    encoded = _parser.encode_command(*args)
    assert encoded == _parser_py.encode_command(*args)
    reader = _parser.Reader()
    reader.feed(encoded)
    assert reader.gets_all() == ([args] if args else [[]])


WRITER_OPS = st.one_of(
    st.tuples(st.sampled_from(["simple", "error"]), st.binary(max_size=20)),
    st.tuples(st.sampled_from(["integer", "array", "map"]), st.integers(-(2**70), 2**70)),
    st.tuples(st.just("bulk"), ARG),
    st.tuples(st.just("bulk_array"), st.lists(ARG, max_size=4)),
    st.tuples(st.just("null_array"), st.none()),
    st.tuples(st.just("resp3"), st.booleans()),
    st.tuples(st.just("take"), st.none()),
    st.tuples(
        st.just("message"),
        st.tuples(st.binary(max_size=20), st.integers(0, 2**31), st.integers(-1, 2**63), ARG),
    ),
)


def replay(impl: Any, ops: list[tuple[str, Any]]) -> list[bytes]:
    writer = impl.Writer()
    out = []
    for name, arg in ops:
        if name == "resp3":
            writer.resp3 = arg
        elif name in ("take", "null_array"):
            out.append(getattr(writer, name)() or b"")
        elif name == "message":
            writer.message(*arg)
        else:
            getattr(writer, name)(arg)
        out.append(b"%d" % len(writer))
    out.append(writer.take())
    return out


@SETTINGS
@given(ops=st.lists(WRITER_OPS, max_size=30))
def test_writer_output_identical(ops: list[tuple[str, Any]]) -> None:
    assert replay(_parser, ops) == replay(_parser_py, ops)


# -- seeded fuzz: fast, no hypothesis ---------------------------------------------------

_FUZZ_LIMITS = {"max_bulk": 200, "max_inline": 100, "max_args": 8}
# After a gets_all that did not raise, only one header plus one incomplete bulk may remain.
_FUZZ_BOUND = _FUZZ_LIMITS["max_bulk"] + _FUZZ_LIMITS["max_inline"] + 4
_PIECES = [b"*", b"$", b"\r\n", b"\r", b"\n", b"-1", b"0", b"2", b"9", b"99", b" ", b"x", b"\x00"]


def _fuzz_input(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return rng.randbytes(rng.randrange(64))
    if kind < 0.5:
        return b"".join(rng.choices(_PIECES, k=rng.randrange(40)))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data) + 1)
        op = rng.randrange(4)
        if op == 0 and at < len(data):
            data[at] = rng.randrange(256)
        elif op == 1:
            del data[at:]
        elif op == 2:
            data[at:at] = rng.choice(_PIECES)
        else:
            del data[at : at + rng.randrange(1, 6)]
    return bytes(data)


def test_fuzz_compiled_reader_100k_inputs() -> None:
    rng = random.Random(0xF022)
    seeds = [
        encode([b"RPUSHX", b"topics:foo", rng.randbytes(100)]),
        encode([b"BLPOP", b'topics:foo:{"auto.offset.reset":"earliest"}', b"5"]),
        encode([b"RPUSH", b"acks", b"foo:0:123"]) * 2,
        encode([None, b"", b"\r\n"]) + b"*0\r\n*-1\r\n",
        b"PING\r\nGET  key\n\r\n",
        b"*1\r\n$199\r\n" + b"z" * 199 + b"\r\n",
    ]
    errors = commands = 0
    for i in range(100_000):
        data = _fuzz_input(rng, seeds)
        reader = _parser.Reader(**_FUZZ_LIMITS)
        step = rng.randrange(1, 80)
        try:
            for at in range(0, max(len(data), 1), step):
                reader.feed(data[at : at + step])
                commands += len(reader.gets_all())
                assert reader.buffered() <= _FUZZ_BOUND
        except ProtocolError as exc:
            assert str(exc) in ERROR_TEXTS
            errors += 1
        if i % 100 == 0:  # spot-check the oracle on a slice (the pure twin is slower)
            chunks = [data[a : a + step] for a in range(0, len(data), step)]
            assert trace(_parser, chunks, _FUZZ_LIMITS) == trace(_parser_py, chunks, _FUZZ_LIMITS)
    # The corpus must exercise both outcomes, or the fuzzing proves little.
    assert errors > 10_000
    assert commands > 10_000
