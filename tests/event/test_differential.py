"""Hypothesis differential tests: the compiled encoder and the pure twin (dict + orjson.dumps)
agree byte for byte, and raise the same EventError reasons, on random and hostile input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pazari.event import EventError, _encoder_py
from tests.event.conftest import COMPILED

pytestmark = pytest.mark.skipif(COMPILED is None, reason="pazari.event._encoder not built")

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Bytes that matter to the parser, mixed with arbitrary ones: separators, escapes, hex digits,
# UTF-8 lead/continuation bytes, controls, JSON specials.
_interesting = st.sampled_from(
    [b"&", b"=", b"+", b"%", b"%2", b"%zz", b"%FF", b"%C2%85", b"%E2%82", b"%ED%A0%80",
     b"%F4%90%80%80", b"\xc3", b"\xa9", b"\xf0\x9f\x98\x80", b"\x00", b"\x7f", b'"', b"\\",
     b"a", b"k", b"type=", b"sent_at=", b"url=", b"session_id=", b"referrer=", b"9"]
)
queries = st.lists(st.one_of(_interesting, st.binary(max_size=8)), max_size=60).map(b"".join)
hostile_text = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=40
)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False,
    allow_infinity=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)
heads = st.tuples(
    hostile_text, hostile_text, hostile_text, st.integers(0, 2**62), hostile_text,
    st.none() | hostile_text, st.none() | hostile_text, st.none() | hostile_text, st.booleans(),
)


def _outcome(fn: Any, *args: Any) -> tuple[str, bytes | str]:
    try:
        return "ok", fn(*args)
    except EventError as exc:
        return "error", str(exc)


@SETTINGS
@given(query=queries, head=heads)
def test_query_twins_agree(query: bytes, head: tuple[Any, ...]) -> None:
    assert _outcome(COMPILED.encode_query, query, *head) == _outcome(
        _encoder_py.encode_query, query, *head
    )


@SETTINGS
@given(fields=st.dictionaries(hostile_text, json_values, max_size=12), head=heads)
def test_fields_twins_agree(fields: dict[str, Any], head: tuple[Any, ...]) -> None:
    assert _outcome(COMPILED.encode_fields, fields, *head) == _outcome(
        _encoder_py.encode_fields, fields, *head
    )


HUGE_CASES = [
    ("huge key", b"k" * 100_000 + b"=1"),
    ("huge value", b"k=" + b"%FF" * 20_000),
    ("many repeated keys", b"&".join([b"a=1", b"b=2"] * 20_000)),
    ("many distinct keys", b"&".join(b"k%d" % i for i in range(5000))),
    ("only separators", b"&=&==&" * 10_000),
    ("all bytes", bytes(range(256)) * 50),
]


@pytest.mark.parametrize("query", [c[1] for c in HUGE_CASES], ids=[c[0] for c in HUGE_CASES])
def test_huge_inputs_agree(query: bytes) -> None:
    head = ("i", "t", "pageview", 1, "v", None, None, None, False)
    assert _outcome(COMPILED.encode_query, query, *head) == _outcome(
        _encoder_py.encode_query, query, *head
    )


@SETTINGS
@given(query=st.binary(max_size=300), head=heads)
def test_random_bytes_agree(query: bytes, head: tuple[Any, ...]) -> None:
    assert _outcome(COMPILED.encode_query, query, *head) == _outcome(
        _encoder_py.encode_query, query, *head
    )


def _framed(fn: Any, pending: bytes, tenant: bytes, key: bytes, limit: int, query: bytes,
            head: tuple[Any, ...]) -> tuple[str, bytes | str | int, bytes]:
    buf = bytearray(pending)
    try:
        size = fn(buf, tenant, key, limit, query, *head)
    except EventError as exc:
        return "error", str(exc), bytes(buf)
    return "ok", size, bytes(buf)


@SETTINGS
@given(query=queries, head=heads, pending=st.binary(max_size=20),
       tenant=st.binary(max_size=12), key=st.binary(max_size=40),
       limit=st.integers(0, 40_000))
def test_frame_query_twins_agree(query: bytes, head: tuple[Any, ...], pending: bytes,
                                 tenant: bytes, key: bytes, limit: int) -> None:
    """The spool record of the pixel path (issue 17): same bytes appended (after whatever
    ``pending`` held), same length returned, nothing appended past ``limit`` or on an error."""
    assert _framed(COMPILED.frame_query, pending, tenant, key, limit, query, head) == _framed(
        _encoder_py.frame_query, pending, tenant, key, limit, query, head
    )
