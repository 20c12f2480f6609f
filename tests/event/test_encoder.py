"""Canonical event encoding, table-driven, on both twins (spec scratchd.md "The event")."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

import pazari.event
from pazari.event import EventError

HEAD: tuple[Any, ...] = ("0190-id", "shop", "pageview", 1_700_000_000_000, "vis", None,
                         "203.0.113.0", "Mozilla/5.0", False)
FFFD = "\ufffd"


def test_compiled_encoder_loaded() -> None:
    """A silent fallback to the pure twin would hide a broken build."""
    if os.environ.get("PAZARI_NO_EXTENSIONS") == "1":
        pytest.skip("PAZARI_NO_EXTENSIONS=1 asks for the pure twin")
    from pazari.event import _encoder

    assert _encoder.__file__ is not None and _encoder.__file__.endswith(".so")
    assert pazari.event.COMPILED
    assert pazari.event._impl is _encoder  # type: ignore[attr-defined]


def _params(encoder: ModuleType, query: bytes) -> dict[str, str]:
    event: dict[str, Any] = orjson.loads(encoder.encode_query(query, *HEAD))
    params: dict[str, str] = event["params"]
    return params


QUERY_CASES = [
    ("plain", b"a=1&b=two", {"a": "1", "b": "two"}),
    ("plus is space", b"q=a+b%2Bc", {"q": "a b+c"}),
    ("empty sequences skipped", b"&&a=1&&", {"a": "1"}),
    ("no equals sign", b"flag", {"flag": ""}),
    ("empty key kept", b"=v", {"": "v"}),
    ("first equals splits", b"a=b=c", {"a": "b=c"}),
    ("bad escape stays literal", b"a=%zz%4", {"a": "%zz%4"}),
    ("lowercase hex", b"a=%c3%a9", {"a": "é"}),
    ("escape builds utf-8", b"a=%E2%82%AC", {"a": "€"}),
    ("invalid utf-8 replaced", b"a=%FF", {"a": FFFD}),
    ("truncated sequence is one fffd", b"a=%E2%82", {"a": FFFD}),
    ("surrogate bytes are three", b"a=%ED%A0%80", {"a": FFFD * 3}),
    ("overlong replaced", b"a=%C0%AF", {"a": FFFD * 2}),
    ("control replaced", b"a=x%00y%0Az%7F", {"a": f"x{FFFD}y{FFFD}z{FFFD}"}),
    ("c1 control replaced", b"a=%C2%85", {"a": FFFD}),
    ("raw bytes decoded too", b"a=\xc3\xa9", {"a": "é"}),
    ("duplicate keeps last, first position", b"a=1&b=2&a=3", {"a": "3", "b": "2"}),
    ("json escapes", b'a=%22%5C', {"a": '"\\'}),
]


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in QUERY_CASES],
                         ids=[c[0] for c in QUERY_CASES])
def test_query_params(encoder: ModuleType, query: bytes, expected: dict[str, str]) -> None:
    params = _params(encoder, query)
    assert params == expected
    assert list(params) == list(expected)


def test_event_fields_in_fixed_order(encoder: ModuleType) -> None:
    raw = encoder.encode_query(
        b"type=click&sent_at=1699999999999&session_id=s1&url=https%3A%2F%2Fa.example%2F"
        b"&referrer=r&x=1",
        "id1", "shop", "pageview", 42, "vis", "https://header.example/", "198.51.100.0",
        "UA", True,
    )
    assert list(orjson.loads(raw).items()) == [
        ("id", "id1"), ("tenant", "shop"), ("type", "click"), ("received_at", 42),
        ("sent_at", 1699999999999), ("visitor_id", "vis"), ("session_id", "s1"),
        ("url", "https://a.example/"), ("referrer", "r"), ("ip", "198.51.100.0"),
        ("user_agent", "UA"), ("bot", True), ("params", {"x": "1"}),
    ]


def test_absent_fields_are_null(encoder: ModuleType) -> None:
    event = orjson.loads(encoder.encode_query(b"", "i", "t", "pageview", 1, "v", None, None,
                                              None, False))
    assert event["url"] is None and event["ip"] is None and event["user_agent"] is None
    assert event["sent_at"] is None and event["session_id"] is None and event["params"] == {}


@pytest.mark.parametrize(("sent", "expected"), [
    ("123", 123), ("", None), ("12a", None), ("1" * 16, None), ("-1", None), ("١٢", None),
], ids=["digits", "empty", "letters", "too-long", "negative", "arabic-digits"])
def test_sent_at(encoder: ModuleType, sent: str, expected: int | None) -> None:
    event = orjson.loads(encoder.encode_fields({"sent_at": sent}, *HEAD))
    assert event["sent_at"] == expected


BODY_CASES = [
    ("strings", {"a": "1"}, {"a": "1"}),
    ("numbers as json text", {"n": 1, "f": 1.5, "b": False, "z": None},
     {"n": "1", "f": "1.5", "b": "false", "z": "null"}),
    ("nested as compact json", {"o": {"k": [1, "x"]}}, {"o": '{"k":[1,"x"]}'}),
    ("lone surrogate replaced", {"s": "a\ud800"}, {"s": "a" + FFFD * 3}),
    ("keys cleaned and merged", {"\x01": "1", "\x02": "2"}, {FFFD: "2"}),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in BODY_CASES],
                         ids=[c[0] for c in BODY_CASES])
def test_body_params(encoder: ModuleType, fields: dict[str, Any],
                     expected: dict[str, str]) -> None:
    assert orjson.loads(encoder.encode_fields(fields, *HEAD))["params"] == expected


LIMIT_CASES = [
    ("key", b"k" * 129 + b"=1", "key too long (129 bytes, limit 128)"),
    ("value", b"k=" + b"v" * 4097, "value too long (4097 bytes, limit 4096)"),
    ("value after fffd", b"k=" + b"%FF" * 1366, "value too long (4098 bytes, limit 4096)"),
    ("params", b"&".join(b"k%d=1" % i for i in range(257)), "too many params (limit 256)"),
    ("event", b"&".join(b"k%d=" % i + b"v" * 4000 for i in range(9)),
     "event too large (36298 bytes, limit 32768)"),
]


@pytest.mark.parametrize(("query", "reason"), [c[1:] for c in LIMIT_CASES],
                         ids=[c[0] for c in LIMIT_CASES])
def test_limits(encoder: ModuleType, query: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        encoder.encode_query(query, *HEAD)
    assert str(info.value) == reason


def test_limits_at_the_edge_pass(encoder: ModuleType) -> None:
    query = b"k" * 128 + b"=" + b"v" * 4096 + b"&" + b"&".join(b"p%d" % i for i in range(255))
    assert len(_params(encoder, query)) == 256


def test_duplicates_do_not_count_twice(encoder: ModuleType) -> None:
    query = b"&".join(b"k%d=1" % (i % 256) for i in range(2000))
    assert len(_params(encoder, query)) == 256


def test_header_value_too_long(encoder: ModuleType) -> None:
    with pytest.raises(EventError, match=r"^user_agent too long \(5000 bytes"):
        encoder.encode_query(b"", "i", "t", "pageview", 1, "v", None, None, "u" * 5000, False)


def test_unencodable_body_value(encoder: ModuleType) -> None:
    with pytest.raises(EventError, match="not encodable"):
        encoder.encode_fields({"big": 1 << 70}, *HEAD)


def test_frame_query_records_read_back_from_the_spool(encoder: ModuleType,
                                                      tmp_path: Path) -> None:
    """frame_query writes scratchd's spool record layout (issue 17): the spool's own start-up
    check (checksums) keeps every record, and reading gives back tenant, key and the event
    ``encode_query`` makes; a too large event is left out, its length returned."""
    from pazari.scratchd.config import SpoolConfig
    from pazari.scratchd.spool import Spool

    pending = bytearray()
    queries = [b"a=1", b"url=%2Fx&b=%FF", b""]
    for i, query in enumerate(queries):
        assert encoder.frame_query(pending, b"shop", b"vis%d" % i, 32768, query,
                                   *HEAD) == len(encoder.encode_query(query, *HEAD))
    before = bytes(pending)
    assert encoder.frame_query(pending, b"shop", b"v", 10, b"a=1", *HEAD) > 10
    assert pending == before
    (tmp_path / f"{0:020d}.seg").write_bytes(pending)
    spool = Spool(SpoolConfig(dir=str(tmp_path)))
    spool.open(["file"])
    try:
        assert spool.end == len(pending)
        assert [(r.tenant, r.key, r.event) for r in spool.read(0)] == [
            ("shop", b"vis%d" % i, encoder.encode_query(q, *HEAD)) for i, q in enumerate(queries)
        ]
    finally:
        spool.close()
