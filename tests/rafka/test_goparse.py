"""Ack parsing follows Go's strconv.ParseInt, error texts included (rafka spec §1.4)."""

from __future__ import annotations

import pytest

from pazari.rafka.goparse import GoParseError, parse_int


@pytest.mark.parametrize(
    ("text", "base", "bits", "expected"),
    [
        ("0", 10, 32, 0),
        ("42", 10, 32, 42),
        ("-7", 10, 32, -7),
        ("+7", 10, 32, 7),
        ("2147483647", 10, 32, 2**31 - 1),
        ("-2147483648", 10, 32, -(2**31)),
        ("0x1f", 0, 64, 31),
        ("0X1F", 0, 64, 31),
        ("017", 0, 64, 15),
        ("0o17", 0, 64, 15),
        ("0b101", 0, 64, 5),
        ("1_000", 0, 64, 1000),
        ("0x_1f", 0, 64, 31),
        ("0_17", 0, 64, 15),
        ("-1", 0, 64, -1),
        ("9223372036854775807", 0, 64, 2**63 - 1),
        ("0", 0, 64, 0),
    ],
)
def test_parses_like_go(text: str, base: int, bits: int, expected: int) -> None:
    assert parse_int(text, base, bits) == expected


@pytest.mark.parametrize(
    ("text", "base", "bits", "reason"),
    [
        ("foo", 0, 64, "invalid syntax"),
        ("", 10, 32, "invalid syntax"),
        ("1.5", 0, 64, "invalid syntax"),
        ("0x", 0, 64, "invalid syntax"),
        ("08", 0, 64, "invalid syntax"),
        ("1_000", 10, 32, "invalid syntax"),
        ("1__0", 0, 64, "invalid syntax"),
        ("_1", 0, 64, "invalid syntax"),
        ("1_", 0, 64, "invalid syntax"),
        ("0x1f", 10, 32, "invalid syntax"),
        (" 1", 10, 32, "invalid syntax"),
        ("٣", 10, 32, "invalid syntax"),
        ("2147483648", 10, 32, "value out of range"),
        ("-2147483649", 10, 32, "value out of range"),
        ("9223372036854775808", 0, 64, "value out of range"),
    ],
)
def test_errors_use_go_texts(text: str, base: int, bits: int, reason: str) -> None:
    with pytest.raises(GoParseError) as info:
        parse_int(text, base, bits)
    assert str(info.value) == f'strconv.ParseInt: parsing "{text}": {reason}'
