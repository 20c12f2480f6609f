"""Exceptions shared by the compiled sniffer, its pure twin and the pattern checks."""

from __future__ import annotations


class MimeError(Exception):
    """Base class of the MIME package's errors."""


class BadPattern(MimeError, ValueError):
    """A malformed Go ``filepath.Match`` pattern (Go's ``filepath.ErrBadPattern``)."""

    def __init__(self, pattern: str, message: str = "syntax error in pattern") -> None:
        super().__init__(message)
        self.pattern = pattern


class InvalidMimePattern(BadPattern):
    """A job's ``mime_type`` holds a malformed pattern; the text is the API's 400 body."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern, f"Invalid MimeType Pattern, {go_quote(pattern)}")


def go_quote(s: str) -> str:
    """Go's ``%q`` / ``strconv.Quote``: the original formats the pattern with ``%q``."""
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif cp < 0x80:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


_GO_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}
