"""RESP reply writer: RESP2/RESP3 encodings, the rafka BLPOP message reply, batching."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import hiredis
import pytest

INT64_MIN = b"-9223372036854775808"
INT64_MAX = b"9223372036854775807"

# method, args, RESP2 bytes, RESP3 bytes (None: same as RESP2)
ENCODINGS: dict[str, tuple[str, tuple[Any, ...], bytes, bytes | None]] = {
    "simple": ("simple", (b"OK",), b"+OK\r\n", None),
    "error": ("error", (b"CONS Server shutdown",), b"-CONS Server shutdown\r\n", None),
    "error-crlf-sanitized": ("error", (b"a\r\nb\nc",), b"-a  b c\r\n", None),
    "integer": ("integer", (1,), b":1\r\n", None),
    "integer-negative": ("integer", (-42,), b":-42\r\n", None),
    "integer-int64-min": ("integer", (-(2**63),), b":" + INT64_MIN + b"\r\n", None),
    "integer-int64-max": ("integer", (2**63 - 1,), b":" + INT64_MAX + b"\r\n", None),
    "integer-beyond-int64": ("integer", (2**64,), b":18446744073709551616\r\n", None),
    "integer-bool": ("integer", (True,), b":1\r\n", None),
    "bulk": ("bulk", (b"OK",), b"$2\r\nOK\r\n", None),
    "bulk-empty": ("bulk", (b"",), b"$0\r\n\r\n", None),
    "bulk-binary": ("bulk", (b"\r\n\x00",), b"$3\r\n\r\n\x00\r\n", None),
    "bulk-bytearray": ("bulk", (bytearray(b"ab"),), b"$2\r\nab\r\n", None),
    "bulk-null": ("bulk", (None,), b"$-1\r\n", b"_\r\n"),
    "array": ("array", (3,), b"*3\r\n", None),
    "null-array": ("null_array", (), b"*-1\r\n", b"_\r\n"),
    "map": ("map", (2,), b"*4\r\n", b"%2\r\n"),
    "bulk-array": (
        "bulk_array",
        ([b"a", None, b""],),
        b"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n",
        b"*3\r\n$1\r\na\r\n_\r\n$0\r\n\r\n",
    ),
    "bulk-array-tuple": ("bulk_array", ((b"x",),), b"*1\r\n$1\r\nx\r\n", None),
}


@pytest.mark.parametrize(
    ("method", "args", "resp2", "resp3"), ENCODINGS.values(), ids=ENCODINGS.keys()
)
def test_encoding(
    resp_impl: ModuleType, method: str, args: tuple[Any, ...], resp2: bytes, resp3: bytes | None
) -> None:
    for resp3_on, expected in ((False, resp2), (True, resp3 or resp2)):
        writer = resp_impl.Writer(resp3=resp3_on)
        getattr(writer, method)(*args)
        assert len(writer) == len(expected)
        assert writer.take() == expected


def test_message_is_the_rafka_blpop_reply(resp_impl: ModuleType) -> None:
    writer = resp_impl.Writer()
    writer.message(b"greetings", 2, 10, b"hello there!")
    data = writer.take()
    assert data == (
        b"*8\r\n$5\r\ntopic\r\n$9\r\ngreetings\r\n$9\r\npartition\r\n:2\r\n"
        b"$6\r\noffset\r\n:10\r\n$5\r\nvalue\r\n$12\r\nhello there!\r\n"
    )
    reader = hiredis.Reader()
    reader.feed(data)
    assert reader.gets() == [
        *(b"topic", b"greetings"),
        *(b"partition", 2),
        *(b"offset", 10),
        *(b"value", b"hello there!"),
    ]


def test_message_null_value_follows_the_protocol_version(resp_impl: ModuleType) -> None:
    writer = resp_impl.Writer()
    writer.message(b"t", 0, 0, None)
    assert writer.take().endswith(b"$5\r\nvalue\r\n$-1\r\n")
    writer.resp3 = True  # the server flips it after HELLO 3
    writer.message(b"t", 0, 0, None)
    assert writer.take().endswith(b"$5\r\nvalue\r\n_\r\n")


def test_replies_are_batched_until_take(resp_impl: ModuleType) -> None:
    writer = resp_impl.Writer()
    assert len(writer) == 0
    assert writer.take() == b""
    writer.simple(b"OK")
    writer.integer(1)
    writer.bulk(b"x" * 100_000)  # grows past the preallocated buffer
    assert len(writer) == len(b"+OK\r\n:1\r\n$100000\r\n\r\n") + 100_000
    data = writer.take()
    assert data.startswith(b"+OK\r\n:1\r\n$100000\r\nxxx")
    assert data.endswith(b"xxx\r\n")
    assert len(writer) == 0
    assert writer.take() == b""
    writer.null_array()
    assert writer.take() == b"*-1\r\n"


def test_many_replies_parse_back_with_hiredis(resp_impl: ModuleType) -> None:
    writer = resp_impl.Writer()
    for i in range(1000):
        writer.message(b"topic-%d" % i, i % 7, i * 1000, bytes([i % 256]) * (i % 50))
        writer.integer(i)
    reader = hiredis.Reader()
    reader.feed(writer.take())
    for i in range(1000):
        msg = reader.gets()
        assert msg[1] == b"topic-%d" % i
        assert msg[3::2] == [i % 7, i * 1000, bytes([i % 256]) * (i % 50)]
        assert reader.gets() == i
    assert reader.gets() is False


@pytest.mark.parametrize(
    ("method", "arg", "exc"),
    [("integer", 1.5, TypeError), ("bulk", "text", TypeError), ("array", "3", TypeError)],
    ids=["integer-float", "bulk-str", "array-str"],
)
def test_wrong_types_are_refused(
    resp_impl: ModuleType, method: str, arg: object, exc: type[Exception]
) -> None:
    writer = resp_impl.Writer()
    with pytest.raises(exc):
        getattr(writer, method)(arg)
    assert writer.take() == b""
