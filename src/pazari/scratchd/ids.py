"""UUIDv7 (RFC 9562 §5.7): 48-bit Unix ms timestamp, version, 74 random bits.

Ids are time-ordered within a process: inside one millisecond a 12-bit counter in ``rand_a``
(RFC 9562 §6.2 method 1) keeps them increasing. Randomness comes from ``os.urandom`` read in
blocks, so an id costs no syscall.
"""

from __future__ import annotations

import os
import time

_BLOCK = 8192


class Uuid7:
    __slots__ = ("_counter", "_last_ms", "_pool", "_pos")

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0
        self._pool = b""
        self._pos = _BLOCK

    def _random64(self) -> int:
        if self._pos + 8 > len(self._pool):
            self._pool = os.urandom(_BLOCK)
            self._pos = 0
        value = int.from_bytes(self._pool[self._pos:self._pos + 8], "big")
        self._pos += 8
        return value

    def new(self, now_ms: int | None = None) -> str:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        rnd = self._random64()
        if ms <= self._last_ms:
            ms = self._last_ms
            self._counter += 1
            if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                self._counter = rnd >> 52 & 0x3FF
        else:
            self._counter = rnd >> 52 & 0x3FF  # random start, room left to count up
        self._last_ms = ms
        value = (
            (ms & 0xFFFFFFFFFFFF) << 80
            | 0x7 << 76
            | self._counter << 64
            | 0b10 << 62
            | (rnd & 0x3FFFFFFFFFFFFFFF)
        )
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_default = Uuid7()
new_id = _default.new


def timestamp_ms(uuid: str) -> int:
    """The Unix ms timestamp of a UUIDv7 string."""
    return int(uuid[:8] + uuid[9:13], 16)
