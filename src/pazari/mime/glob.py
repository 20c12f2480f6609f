"""Go ``path/filepath.Match`` with ``/`` as the separator (Go ≥ 1.16 semantics).

A line-by-line port of Go's path/filepath/match.go (Match, scanChunk, matchChunk, getEsc).
Python's fnmatch is not a substitute (downloader spec §10): its ``*`` crosses ``/`` and it never
rejects a malformed pattern. Like Go since 1.16, a malformed pattern raises ``BadPattern`` even
when the name already failed to match before the malformed part: the rest of the pattern is
still scanned for syntax.
"""

from __future__ import annotations

from .errors import BadPattern

SEPARATOR = "/"


def match(pattern: str, name: str) -> bool:
    """Report whether ``name`` matches the shell ``pattern``; raise BadPattern if malformed."""
    original = pattern
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            # A trailing * matches the rest of the name unless it holds a separator.
            return SEPARATOR not in name
        rest, ok = _match_chunk(chunk, name, original)
        # The last chunk must use up the name; otherwise a star may still help.
        if ok and (rest == "" or pattern):
            name = rest
            continue
        if star:
            # Try the chunk after skipping i+1 bytes; a star never skips a separator.
            matched = False
            i = 0
            while i < len(name) and name[i] != SEPARATOR:
                rest, ok = _match_chunk(chunk, name[i + 1 :], original)
                if ok:
                    if not pattern and rest:
                        i += 1
                        continue
                    name = rest
                    matched = True
                    break
                i += 1
            if matched:
                continue
        # Before answering "no", check that the rest of the pattern is well formed (Go 1.16).
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "", original)
        return False
    return name == ""


def validate(pattern: str) -> None:
    """Raise BadPattern if ``pattern`` is malformed (Go: ``Match(pattern, "")``'s error)."""
    match(pattern, "")


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Split off leading stars and the chunk up to the next star outside a class."""
    star = False
    while pattern and pattern[0] == "*":
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            # The error for a trailing backslash is reported by _match_chunk.
            if i + 1 < n:
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str, pattern: str) -> tuple[str, bool]:
    """Match ``chunk`` at the start of ``s``; return (rest, ok).

    After a mismatch the chunk is still scanned to the end so that a malformed class or
    escape raises (Go's ``failed`` flag).
    """
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r = s[0]
                s = s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk and chunk[0] == "^":
                negated = True
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk and chunk[0] == "]" and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk, pattern)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:], pattern)
                # Go compares runes; when failed, r is rune 0 and the result is unused.
                if r and lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == SEPARATOR:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern(pattern)
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return "", False
    return s, True


def _get_esc(chunk: str, pattern: str) -> tuple[str, str]:
    """One (possibly escaped) class character; a class must not end right after it."""
    if not chunk or chunk[0] == "-" or chunk[0] == "]":
        raise BadPattern(pattern)
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern(pattern)
    r = chunk[0]
    chunk = chunk[1:]
    if not chunk:
        raise BadPattern(pattern)
    return r, chunk
