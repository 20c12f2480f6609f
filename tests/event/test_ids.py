"""UUIDv7 event ids on both twins (spec "The event": ``id`` is a time-ordered UUIDv7)."""

from __future__ import annotations

import time
import uuid
from types import ModuleType

import pytest

MS = 1_700_000_000_000


def _ms(text: str) -> int:
    return int(text[:8] + text[9:13], 16)


def test_ids_are_rfc9562_v7_and_carry_the_millisecond(encoder: ModuleType) -> None:
    ids = encoder.Uuid7()
    first = ids.new(MS)
    parsed = uuid.UUID(first)
    assert str(parsed) == first and len(first) == 36
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert _ms(first) == MS
    assert abs(_ms(encoder.new_id()) - time.time_ns() // 1_000_000) < 5000


@pytest.mark.parametrize("count", [2, 5000], ids=["two", "past-the-counter"])
def test_ids_increase_within_one_millisecond(encoder: ModuleType, count: int) -> None:
    """A 12-bit counter starting below 0x400 orders ids inside one ms; past 0xFFF the
    generator borrows the next millisecond instead of wrapping (RFC 9562 §6.2)."""
    ids = encoder.Uuid7()
    made = [ids.new(MS) for _ in range(count)]
    assert made == sorted(made) and len(set(made)) == count
    assert _ms(made[-1]) in (MS, MS + 1)
    if count == 5000:
        assert _ms(made[-1]) == MS + 1


def test_clock_going_backwards_keeps_order(encoder: ModuleType) -> None:
    ids = encoder.Uuid7()
    later = ids.new(MS + 10)
    earlier_clock = ids.new(MS)
    assert earlier_clock > later and _ms(earlier_clock) == MS + 10


def test_random_bits_differ(encoder: ModuleType) -> None:
    a, b = encoder.Uuid7(), encoder.Uuid7()
    assert a.new(MS)[19:] != b.new(MS)[19:]
