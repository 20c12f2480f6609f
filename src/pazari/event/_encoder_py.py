"""Pure-Python reference of the event encoder: build the dict, then ``orjson.dumps``.

The compiled ``pazari.event._encoder`` must produce byte-identical output and raise the same
``EventError`` messages (tests/event/test_differential.py). Canonical handling (spec "The
event"), documented once here:

* Query strings are split as the WHATWG URL Standard's ``application/x-www-form-urlencoded``
  parser does (§5.1): split on ``&``, skip empty sequences, split each at the first ``=`` (no
  ``=`` → empty value), ``+`` → space, then percent-decode. A ``%`` not followed by two hex
  digits stays a literal ``%`` (WHATWG percent-decode, and RFC 3986 §2.1 which only defines
  ``%`` HEXDIG HEXDIG). Percent-decoding happens on bytes, so escapes may build multi-byte
  UTF-8 sequences.
* Decoded bytes become text as UTF-8 with replacement (WHATWG "UTF-8 decode without BOM"):
  every maximal ill-formed subpart becomes one U+FFFD (Unicode §3.9, the practice CPython's
  decoder follows). A leading BOM is kept as U+FEFF, like CPython.
* Control characters (Unicode general category Cc: U+0000-U+001F, U+007F-U+009F) become
  U+FFFD as well: they are never passed through. Lone surrogates in parsed JSON text are
  encoded with ``surrogatepass`` and so also end up as U+FFFD.
* Duplicate keys keep the last value at the position of the first (a dict's update rule).
* Reserved keys (``type``, ``sent_at``, ``session_id``, ``url``, ``referrer``) fill the event
  fields of the same names and are not repeated in ``params``. ``sent_at`` is an integer when
  it is 1-15 ASCII digits, else null.
* JSON bodies: non-string values become their compact JSON text (``1`` → ``"1"``, ``true`` →
  ``"true"``, objects and arrays as JSON), so ``params`` stays a string → string map.
* Limits are checked on the cleaned UTF-8 bytes, pair by pair in input order: key ≤ 128,
  value ≤ 4096, ≤ 256 distinct params, and the whole encoded event ≤ 32768 bytes.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from pazari.event.errors import EventError

MAX_KEY = 128
MAX_VALUE = 4096
MAX_PARAMS = 256
MAX_EVENT = 32768
RESERVED = frozenset(("type", "sent_at", "session_id", "url", "referrer"))

_CONTROLS = {c: 0xFFFD for c in (*range(0x20), *range(0x7F, 0xA0))}


def clean_bytes(raw: bytes) -> str:
    """UTF-8 decode with replacement, then replace control characters."""
    return raw.decode("utf-8", "replace").translate(_CONTROLS)


def clean_str(text: str) -> str:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return clean_bytes(raw)


def _field(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    text = clean_str(value)
    size = len(text.encode())
    if size > MAX_VALUE:
        raise EventError(f"{name} too long ({size} bytes, limit {MAX_VALUE})")
    return text


def _query_pairs(query: bytes) -> Iterable[tuple[str, str]]:
    for sequence in query.split(b"&"):
        if not sequence:
            continue
        name, _, value = sequence.partition(b"=")
        yield (
            clean_bytes(unquote_to_bytes(name.replace(b"+", b" "))),
            clean_bytes(unquote_to_bytes(value.replace(b"+", b" "))),
        )


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return clean_str(value)
    try:
        return clean_bytes(orjson.dumps(value))
    except orjson.JSONEncodeError:
        raise EventError("value is not encodable as JSON") from None


def _field_pairs(fields: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for key, value in fields.items():
        if not isinstance(key, str):
            raise EventError("keys must be strings")
        yield clean_str(key), _json_text(value)


def _sent_at(text: str | None) -> int | None:
    if text is not None and 0 < len(text) <= 15 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _encode(
    pairs: Iterable[tuple[str, str]],
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> bytes:
    head = {
        "id": _field("id", id),
        "tenant": _field("tenant", tenant),
        "type": _field("type", type),
        "visitor_id": _field("visitor_id", visitor_id),
        "url": _field("url", url),
        "ip": _field("ip", ip),
        "user_agent": _field("user_agent", user_agent),
    }
    reserved: dict[str, str] = {}
    params: dict[str, str] = {}
    for key, value in pairs:
        size = len(key.encode())
        if size > MAX_KEY:
            raise EventError(f"key too long ({size} bytes, limit {MAX_KEY})")
        size = len(value.encode())
        if size > MAX_VALUE:
            raise EventError(f"value too long ({size} bytes, limit {MAX_VALUE})")
        if key in RESERVED:
            reserved[key] = value
            continue
        if key not in params and len(params) == MAX_PARAMS:
            raise EventError(f"too many params (limit {MAX_PARAMS})")
        params[key] = value
    event = {
        "id": head["id"],
        "tenant": head["tenant"],
        "type": reserved.get("type", head["type"]),
        "received_at": received_at,
        "sent_at": _sent_at(reserved.get("sent_at")),
        "visitor_id": head["visitor_id"],
        "session_id": reserved.get("session_id"),
        "url": reserved.get("url", head["url"]),
        "referrer": reserved.get("referrer"),
        "ip": head["ip"],
        "user_agent": head["user_agent"],
        "bot": bool(bot),
        "params": params,
    }
    out = orjson.dumps(event)
    if len(out) > MAX_EVENT:
        raise EventError(f"event too large ({len(out)} bytes, limit {MAX_EVENT})")
    return out


def encode_query(
    query: bytes,
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> bytes:
    """One event from raw query-string bytes and the header values."""
    return _encode(
        _query_pairs(query), id, tenant, type, received_at, visitor_id, url, ip, user_agent, bot
    )


def encode_fields(
    fields: dict[str, Any],
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> bytes:
    """One event from a parsed JSON object and the header values."""
    return _encode(
        _field_pairs(fields), id, tenant, type, received_at, visitor_id, url, ip, user_agent, bot
    )


# -- event ids -------------------------------------------------------------------------------------

_RECORD_HEAD = struct.Struct("<IIHH")


def frame_query(
    pending: bytearray,
    tenant_raw: bytes,
    key: bytes,
    limit: int,
    query: bytes,
    id: str,
    tenant: str,
    type: str,
    received_at: int,
    visitor_id: str,
    url: str | None,
    ip: str | None,
    user_agent: str | None,
    bot: bool,
) -> int:
    """``encode_query``, appended to ``pending`` as one spool record (scratchd/spool.py's
    layout: ``[u32 length][u32 crc32][u16 tenant length][u16 key length][tenant][key][event]``,
    little endian, crc32 over the three parts) keyed by ``tenant_raw`` and ``key``. Returns
    the event's length; an event longer than ``limit`` is not appended. Raises EventError,
    leaving ``pending`` as it was."""
    if len(tenant_raw) > 0xFFFF or len(key) > 0xFFFF:
        raise ValueError("tenant and key are at most 65535 bytes")
    event = encode_query(query, id, tenant, type, received_at, visitor_id, url, ip, user_agent,
                         bot)
    if len(event) > limit:
        return len(event)
    crc = zlib.crc32(event, zlib.crc32(key, zlib.crc32(tenant_raw)))
    pending += _RECORD_HEAD.pack(8 + len(tenant_raw) + len(key) + len(event), crc,
                                 len(tenant_raw), len(key))
    pending += tenant_raw + key + event
    return len(event)


_ID_BLOCK = 8192  # random bytes per os.urandom call, kept as hex text
# The variant nibble (RFC 9562 §4.1: 0b10xx) from one random hex digit's two low bits.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class Uuid7:
    """UUIDv7 (RFC 9562 §5.7) as text: 48-bit Unix ms, version 7, a 12-bit counter in
    ``rand_a`` keeping ids increasing within a millisecond (§6.2 method 1, random start below
    0x400), variant 0b10, 62 random bits from ``os.urandom`` read in blocks. Same layout and
    ordering rules as the compiled twin."""

    __slots__ = ("_counter", "_last_ms", "_pool", "_pos", "_prefix", "_prefix_ms")

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0
        self._pool = ""
        self._pos = _ID_BLOCK * 2
        self._prefix_ms = -1
        self._prefix = ""

    def _hex(self, n: int) -> str:
        """``n`` random hex digits."""
        pos = self._pos
        if pos + n > len(self._pool):
            self._pool = os.urandom(_ID_BLOCK).hex()
            pos = 0
        self._pos = pos + n
        return self._pool[pos:pos + n]

    def new(self, now_ms: int | None = None) -> str:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms <= self._last_ms:
            ms = self._last_ms
            self._counter += 1
            if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                self._counter = int(self._hex(3), 16) & 0x3FF
        else:
            self._counter = int(self._hex(3), 16) & 0x3FF  # random start, room to count up
        self._last_ms = ms
        if ms != self._prefix_ms:
            self._prefix_ms = ms
            t = ms & 0xFFFFFFFFFFFF
            self._prefix = f"{t >> 16:08x}-{t & 0xFFFF:04x}-7"
        r = self._hex(16)
        return f"{self._prefix}{self._counter:03x}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:]}"


new_id = Uuid7().new


# -- the spool's group-commit syncer (issue 17) ------------------------------------------------

_SYNC_MESSAGE = struct.Struct("=ii")


def sync_loop(requests: int, results: int) -> None:
    """Serve fdatasync requests until ``requests`` reaches end of file: each request is
    ``(fd, seq)``, each result ``(seq, errno)`` (0 on success), native int32s on pipes (the
    compiled twin runs this without the GIL; this one is its oracle)."""
    while True:
        try:
            request = os.read(requests, 8)
        except InterruptedError:
            continue
        except OSError:
            return
        if len(request) != 8:
            return
        fd, seq = _SYNC_MESSAGE.unpack(request)
        err = 0
        try:
            os.fdatasync(fd)
        except OSError as exc:
            err = exc.errno or errno.EIO
        except ValueError:  # a negative fd, which fdatasync(2) answers with EBADF
            err = errno.EBADF
        try:
            os.write(results, _SYNC_MESSAGE.pack(seq, err))
        except OSError:
            return
