"""Go's ``strconv.ParseInt``, for ack parsing that matches the original (spec §1.4).

The partition is parsed with base 10 and 32 bits, the offset with base 0 and 64 bits: base 0
takes ``0x``/``0o``/``0b`` prefixes, a leading ``0`` as octal, and ``_`` between digits. The
error texts are Go's: ``strconv.ParseInt: parsing "foo": invalid syntax``.
"""

from __future__ import annotations


class GoParseError(ValueError):
    pass


def _syntax(s: str) -> GoParseError:
    return GoParseError(f'strconv.ParseInt: parsing "{s}": invalid syntax')


def _range(s: str) -> GoParseError:
    return GoParseError(f'strconv.ParseInt: parsing "{s}": value out of range')


def _underscore_ok(s: str) -> bool:
    """Go's underscoreOK: ``_`` only between digits (a base prefix counts as a digit)."""
    saw = "^"  # '^' start, '0' digit or prefix, '_' underscore, '!' other
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hex_ = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hex_ = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if c.isdigit() or (hex_ and c.lower() in "abcdef"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_int(s: str, base: int, bits: int) -> int:
    """``strconv.ParseInt(s, base, bits)`` with Go's semantics and error texts."""
    # Fast path for the common case (plain decimal without a leading zero).
    if s.isascii() and s.isdigit() and (s[0] != "0" or len(s) == 1):
        value = int(s)
        if value < 1 << (bits - 1):
            return value
        raise _range(s)
    if not s:
        raise _syntax(s)
    body = s
    negative = False
    if body[0] in "+-":
        negative = body[0] == "-"
        body = body[1:]
    digits_base = base
    underscores = False
    if base == 0:
        digits_base = 10
        if body[:1] == "0":
            if len(body) >= 3 and body[1].lower() == "x":
                digits_base, body = 16, body[2:]
            elif len(body) >= 3 and body[1].lower() == "o":
                digits_base, body = 8, body[2:]
            elif len(body) >= 3 and body[1].lower() == "b":
                digits_base, body = 2, body[2:]
            else:
                digits_base, body = 8, body[1:] or "0"
        underscores = True
    if not body:
        raise _syntax(s)
    if "_" in body:
        if not underscores or not _underscore_ok(s):
            raise _syntax(s)
        body = body.replace("_", "")
    valid = "0123456789abcdefghijklmnopqrstuvwxyz"[:digits_base]
    if not body or any(c.lower() not in valid for c in body) or not body.isascii():
        raise _syntax(s)
    value = int(body, digits_base)
    limit = 1 << (bits - 1)
    if negative:
        value = -value
        if value < -limit:
            raise _range(s)
    elif value >= limit:
        raise _range(s)
    return value
