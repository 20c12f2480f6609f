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


# -- encoding/json, as the original decoded the BLPOP config (json.NewDecoder + UseNumber) --

_WS = b" \t\r\n"


class _Unexpected(Exception):
    """The input ended inside a value: json.Decoder's io.ErrUnexpectedEOF."""


def _quote_char(c: int) -> str:
    """encoding/json quoteChar: the byte as a Go quoted rune, between single quotes."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    ch = chr(c)
    named = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t",
             0x0B: "\\v", 0x5C: "\\\\"}  # fmt: skip
    if c in named:
        return f"'{named[c]}'"
    if ch.isprintable() and c != 0xAD:
        return f"'{ch}'"
    return f"'\\x{c:02x}'" if c < 0x80 else f"'\\u{c:04x}'"


class _Scanner:
    """A port of encoding/json's scanner, for its error texts only (scanner.go)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0

    def _peek(self) -> int:
        if self.i >= len(self.data):
            raise _Unexpected
        return self.data[self.i]

    def _skip_ws(self) -> int:
        while self.i < len(self.data) and self.data[self.i] in _WS:
            self.i += 1
        return self._peek()

    def _bad(self, c: int, context: str) -> GoParseError:
        return GoParseError(f"invalid character {_quote_char(c)} {context}")

    def value(self) -> None:
        c = self._skip_ws()
        if c == 0x7B:  # {
            self.i += 1
            c = self._skip_ws()
            if c == 0x7D:
                self.i += 1
                return
            while True:
                if c != 0x22:
                    raise self._bad(c, "looking for beginning of object key string")
                self.string()
                c = self._skip_ws()
                if c != 0x3A:
                    raise self._bad(c, "after object key")
                self.i += 1
                self.value()
                c = self._skip_ws()
                self.i += 1
                if c == 0x7D:
                    return
                if c != 0x2C:
                    raise self._bad(c, "after object key:value pair")
                c = self._skip_ws()
        elif c == 0x5B:  # [
            self.i += 1
            if self._skip_ws() == 0x5D:
                self.i += 1
                return
            while True:
                self.value()
                c = self._skip_ws()
                self.i += 1
                if c == 0x5D:
                    return
                if c != 0x2C:
                    raise self._bad(c, "after array element")
        elif c == 0x22:
            self.string()
        elif c == 0x2D or 0x30 <= c <= 0x39:
            self.number()
        elif c in b"tfn":
            word = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}[c]
            self.i += 1
            for expect in word[1:]:
                got = self._peek()
                if got != expect:
                    raise self._bad(got, f"in literal {word.decode()} (expecting "
                                         f"{_quote_char(expect)})")
                self.i += 1
        else:
            raise self._bad(c, "looking for beginning of value")

    def string(self) -> None:
        self.i += 1  # the opening quote
        while True:
            c = self._peek()
            self.i += 1
            if c == 0x22:
                return
            if c == 0x5C:
                e = self._peek()
                self.i += 1
                if e == 0x75:  # \uXXXX
                    for _ in range(4):
                        h = self._peek()
                        if h not in b"0123456789abcdefABCDEF":
                            raise self._bad(h, "in \\u hexadecimal character escape")
                        self.i += 1
                elif e not in b'"\\/bfnrt':
                    raise self._bad(e, "in string escape code")
            elif c < 0x20:
                raise self._bad(c, "in string literal")

    def number(self) -> None:
        data = self.data

        def at() -> int | None:
            return data[self.i] if self.i < len(data) else None

        if at() == 0x2D:
            self.i += 1
            c = self._peek()
            if not 0x30 <= c <= 0x39:
                raise self._bad(c, "in numeric literal")
        if at() == 0x30:
            self.i += 1
        else:
            while (c2 := at()) is not None and 0x30 <= c2 <= 0x39:
                self.i += 1
        if at() == 0x2E:
            self.i += 1
            c = self._peek()
            if not 0x30 <= c <= 0x39:
                raise self._bad(c, "after decimal point in numeric literal")
            while (c2 := at()) is not None and 0x30 <= c2 <= 0x39:
                self.i += 1
        if at() in (0x65, 0x45):
            self.i += 1
            if at() in (0x2B, 0x2D):
                self.i += 1
            c = self._peek()
            if not 0x30 <= c <= 0x39:
                raise self._bad(c, "in exponent of numeric literal")
            while (c2 := at()) is not None and 0x30 <= c2 <= 0x39:
                self.i += 1


_GO_KINDS = {0x7B: "object", 0x5B: "array", 0x22: "string", 0x74: "bool", 0x66: "bool",
             0x6E: "null"}  # fmt: skip


def decode_config_map(text: str) -> tuple[str, str]:
    """What ``json.NewDecoder(text).Decode(&kafka.ConfigMap)`` reads: the first JSON value
    (trailing bytes ignored, as Decoder does) and its kind; raises GoParseError with Go's text
    (``EOF``, ``unexpected EOF``, ``invalid character ...``, ``json: cannot unmarshal ...``).
    """
    data = text.encode("utf-8", "surrogatepass")
    scanner = _Scanner(data)
    if not data.strip(_WS):
        raise GoParseError("EOF")
    try:
        scanner.value()
    except _Unexpected:
        raise GoParseError("unexpected EOF") from None
    first = data[: scanner.i].strip(_WS)
    kind = _GO_KINDS.get(first[0], "number")
    if kind not in ("object", "null"):
        raise GoParseError(
            f"json: cannot unmarshal {kind} into Go value of type kafka.ConfigMap"
        )
    return first.decode("utf-8", "replace"), kind
