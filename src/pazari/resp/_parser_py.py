"""RESP request parser and reply writer: the pure-Python reference twin.

This module is the oracle for ``ext/resp/_parser.pyx``: both have the same API and must
behave identically, byte for byte and error for error (tests/resp/test_differential.py).
Keep the two in step; the comments on the grammar live here and in the ``.pxd``.

Wire behaviour follows go-redisproto rev 14323b2 as rafka uses it (../shared/specs/rafka.md
§1.1), with the deviations the spec asks for:

* ``*-1`` and ``*0`` give an empty command ``[]`` (the original panicked on ``*-1``).
* Every header byte is checked as it arrives, so garbage fails at the first byte that makes
  it invalid (``*abc`` fails at ``a``) and a count or size out of range fails at the digit
  that takes it out of range. The error point therefore depends only on the bytes, never on
  how they were split across ``feed`` calls.
* Inline lines are split on single spaces and empty fields are dropped, so repeated spaces
  collapse as in redis-cli/redis (go-redisproto's ``bytes.Split`` kept them as empty
  arguments). No quoting, as in go-redisproto. A line with no fields is skipped.
* Completed arguments of a partially received multibulk are taken out of the buffer at once
  (hiredis does the same), so at most one incomplete bulk plus one header is ever buffered:
  ``buffered() <= max_bulk + max_inline + 4`` after a ``gets``/``gets_all`` that did not raise.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from pazari.resp.errors import (
    EXPECT_NEWLINE,
    EXPECT_NUMBER,
    EXPECT_TYPECHAR,
    INVALID_BULK_SIZE,
    LINE_TOO_LONG,
    TOO_MANY_ARG,
    ProtocolError,
)

__all__ = ["ProtocolError", "Reader", "Writer", "encode_command"]

Command = list[bytes | None]

# Limits above these make no sense and would let the digit accumulator overflow a C int64
# in the compiled twin; both twins refuse them the same way.
_MAX_BULK_LIMIT = 1 << 50
_MAX_SMALL_LIMIT = (1 << 31) - 1
_MAX_ARGS_LIMIT = 1 << 20  # the list is allocated from the count: no GB lists by mistake

_STAR = 0x2A  # '*'
_DOLLAR = 0x24  # '$'
_MINUS = 0x2D  # '-'
_CR = 0x0D
_LF = 0x0A
_SPACE = b" "

# The header scanner's "need more bytes" result; distinct from any count.
_NEED = -(1 << 62)


def _check_limit(name: str, value: int, top: int) -> int:
    value = operator.index(value)
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be in [0, {top}], got {value}")
    return value


class Reader:
    """Incremental RESP request parser: ``feed`` bytes, then take whole commands out."""

    __slots__ = (
        "_buf",
        "_error",
        "_inline_scanned",
        "_max_args",
        "_max_bulk",
        "_max_inline",
        "_pending",
        "_pending_i",
        "_pos",
    )

    def __init__(
        self, *, max_bulk: int = 32_768_000, max_inline: int = 65536, max_args: int = 20
    ) -> None:
        self._max_bulk = _check_limit("max_bulk", max_bulk, _MAX_BULK_LIMIT)
        self._max_inline = _check_limit("max_inline", max_inline, _MAX_SMALL_LIMIT)
        self._max_args = _check_limit("max_args", max_args, _MAX_ARGS_LIMIT)
        self._buf = bytearray()
        self._pos = 0  # first unconsumed byte of _buf
        self._pending: Command | None = None  # multibulk whose arguments are still arriving
        self._pending_i = 0  # arguments of _pending already filled in
        self._inline_scanned = 0  # bytes after _pos already known to hold no b"\n"
        self._error: str | None = None  # sticky: the connection is closed after an error

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the buffer (ignored once a ProtocolError was raised)."""
        if self._error is not None:
            return
        buf = self._buf
        if self._pos:
            # Deleting from the front of a bytearray is O(1) in CPython (it moves ob_start),
            # so compacting on every feed is not quadratic.
            del buf[: self._pos]
            self._pos = 0
        buf += data

    def buffered(self) -> int:
        """Bytes buffered and not yet consumed into a returned or pending command."""
        return len(self._buf) - self._pos

    def gets(self) -> Command | None:
        """Return one complete command, or None when more bytes are needed."""
        if self._error is not None:
            raise ProtocolError(self._error)
        cmd = self._next()
        if cmd is None and self._error is not None:
            raise ProtocolError(self._error)
        return cmd

    def gets_all(self) -> list[Command]:
        """Return every complete command buffered now; ``[]`` when there is none.

        If a malformed frame follows complete commands, those commands are returned and the
        ProtocolError is raised by the next ``gets``/``gets_all`` call, which needs no new
        bytes: a server loops ``while cmds := reader.gets_all()`` to reply to them first.
        """
        if self._error is not None:
            raise ProtocolError(self._error)
        out: list[Command] = []
        while True:
            cmd = self._next()
            if cmd is None:
                break
            out.append(cmd)
        if not out and self._error is not None:
            raise ProtocolError(self._error)
        return out

    # -- parsing -------------------------------------------------------------------------

    def _fail(self, text: str) -> None:
        self._error = text

    def _header(self, p: int, limit: int, range_error: str) -> tuple[int, int]:
        """Parse the ``*``/``$`` header line whose sigil is at ``p``.

        Returns ``(value, index after CRLF)``, or ``(_NEED, 0)`` when incomplete. Raises
        ProtocolError at the first byte that makes the line invalid.
        """
        buf = self._buf
        end = len(buf)
        max_inline = self._max_inline
        q = p + 1
        neg = False
        val = 0
        digits = 0
        while True:
            # More than max_inline bytes without CR: bounded buffering for streamed garbage.
            if q - p > max_inline:
                raise ProtocolError(LINE_TOO_LONG)
            if q >= end:
                return _NEED, 0
            c = buf[q]
            if 0x30 <= c <= 0x39:
                val = val * 10 + (c - 0x30)
                digits += 1
                if val > (1 if neg else limit):
                    raise ProtocolError(range_error)
                q += 1
            elif c == _MINUS and q == p + 1:
                neg = True
                q += 1
            elif c == _CR:
                if not digits:
                    raise ProtocolError(EXPECT_NUMBER)
                if q + 1 >= end:
                    return _NEED, 0
                if buf[q + 1] != _LF:
                    raise ProtocolError(EXPECT_NEWLINE)
                return (-val if neg else val), q + 2
            else:
                raise ProtocolError(EXPECT_NUMBER)

    def _next(self) -> Command | None:
        """Parse one command; None when incomplete or on error (then ``_error`` is set)."""
        try:
            return self._parse()
        except ProtocolError as exc:
            self._fail(str(exc))
            return None

    def _parse(self) -> Command | None:
        buf = self._buf
        end = len(buf)
        cmd = self._pending
        if cmd is None:
            while True:
                p = self._pos
                if p >= end:
                    return None
                if buf[p] != _STAR:
                    line = self._inline(p, end)
                    if line is None:
                        return None
                    if line:
                        return line
                    continue  # an empty inline line yields nothing
                n, after = self._header(p, self._max_args, TOO_MANY_ARG)
                if n == _NEED:
                    return None
                self._pos = after
                if n <= 0:
                    return []  # *0 and *-1: an empty command, the server picks the reply
                cmd = [None] * n
                self._pending = cmd
                self._pending_i = 0
                break
        i = self._pending_i
        n = len(cmd)
        p = self._pos
        while i < n:
            if p >= end:
                break
            if buf[p] != _DOLLAR:
                raise ProtocolError(EXPECT_TYPECHAR)
            size, start = self._header(p, self._max_bulk, INVALID_BULK_SIZE)
            if size == _NEED:
                break
            if size < 0:
                cmd[i] = None  # $-1: a null argument arrives as nil
                p = start
            else:
                stop = start + size
                # The payload must be followed by CRLF; check each byte as soon as it is here.
                if stop < end and buf[stop] != _CR:
                    raise ProtocolError(EXPECT_NEWLINE)
                if stop + 1 >= end:
                    break
                if buf[stop + 1] != _LF:
                    raise ProtocolError(EXPECT_NEWLINE)
                cmd[i] = bytes(buf[start:stop])
                p = stop + 2
            i += 1
            self._pos = p
        self._pending_i = i
        if i < n:
            return None
        self._pending = None
        return cmd

    def _inline(self, p: int, end: int) -> Command | None:
        """Parse the inline line at ``p``: a command, ``[]`` for a blank line, or None."""
        buf = self._buf
        nl = buf.find(b"\n", p + self._inline_scanned, end)
        if nl < 0:
            if end - p > self._max_inline:
                raise ProtocolError(LINE_TOO_LONG)
            self._inline_scanned = end - p
            return None
        if nl - p > self._max_inline:
            raise ProtocolError(LINE_TOO_LONG)
        self._inline_scanned = 0
        stop = nl - 1 if nl > p and buf[nl - 1] == _CR else nl
        args: Command = [bytes(f) for f in buf[p:stop].split(_SPACE) if f]
        if len(args) > self._max_args:
            raise ProtocolError(TOO_MANY_ARG)
        self._pos = nl + 1
        return args


# -- writer ------------------------------------------------------------------------------

_MSG_HEAD = b"*8\r\n$5\r\ntopic\r\n"
_MSG_PARTITION = b"$9\r\npartition\r\n:"
_MSG_OFFSET = b"\r\n$6\r\noffset\r\n:"
_MSG_VALUE = b"\r\n$5\r\nvalue\r\n"


def _line_safe(s: bytes) -> bytes:
    # A CR or LF inside a simple string or error would end the reply early and let the
    # rest be read as another reply; redis' addReplyErrorFormat turns them into spaces.
    return s.replace(b"\r", b" ").replace(b"\n", b" ")


class Writer:
    """RESP2/RESP3 reply encoder into one growing buffer, taken as one bytes per batch."""

    __slots__ = ("_buf", "resp3")

    def __init__(self, resp3: bool = False) -> None:
        self.resp3 = resp3
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def take(self) -> bytes:
        """Return everything written since the last take and start over."""
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def simple(self, s: bytes) -> None:
        self._buf += b"+" + _line_safe(bytes(s)) + b"\r\n"

    def error(self, s: bytes) -> None:
        self._buf += b"-" + _line_safe(bytes(s)) + b"\r\n"

    def _int(self, prefix: bytes, n: int) -> None:
        self._buf += b"%s%d\r\n" % (prefix, operator.index(n))

    def integer(self, n: int) -> None:
        self._int(b":", n)

    def array(self, n: int) -> None:
        self._int(b"*", n)

    def map(self, n: int) -> None:
        # RESP3 map; a RESP2 client gets the flat key/value array (what redis does).
        if self.resp3:
            self._int(b"%", n)
        else:
            self._int(b"*", operator.index(n) * 2)

    def null_array(self) -> None:
        self._buf += b"_\r\n" if self.resp3 else b"*-1\r\n"

    def bulk(self, b: bytes | None) -> None:
        buf = self._buf
        if b is None:
            buf += b"_\r\n" if self.resp3 else b"$-1\r\n"
            return
        if type(b) is not bytes:
            b = bytes(b)
        buf += b"$%d\r\n" % len(b)
        buf += b
        buf += b"\r\n"

    def bulk_array(self, items: Sequence[bytes | None]) -> None:
        self._int(b"*", len(items))
        for item in items:
            self.bulk(item)

    def message(self, topic: bytes, partition: int, offset: int, value: bytes | None) -> None:
        """The rafka BLPOP reply (rafka.md §1.3): topic, partition, offset, value."""
        buf = self._buf
        buf += _MSG_HEAD
        self.bulk(topic)
        buf += _MSG_PARTITION
        buf += b"%d" % operator.index(partition)
        buf += _MSG_OFFSET
        buf += b"%d" % operator.index(offset)
        buf += _MSG_VALUE
        self.bulk(value)


def encode_command(*args: bytes | bytearray | memoryview | str | int) -> bytes:
    """Encode a request as a RESP multibulk (what clients send; used by tests)."""
    out = bytearray(b"*%d\r\n" % len(args))
    for arg in args:
        if isinstance(arg, str):
            b = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("encode_command does not take bool arguments")
        elif isinstance(arg, int):
            b = b"%d" % arg
        else:
            b = bytes(arg)
        out += b"$%d\r\n" % len(b)
        out += b
        out += b"\r\n"
    return bytes(out)
