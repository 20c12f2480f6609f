"""The downloader's ``mime_type`` checks (spec § job fields, processing step 7).

``mime_type`` is split on ``,``; each part is trimmed and an optional ``!`` negates it. Every
check must pass (AND), so ``image/png,image/jpeg`` can never pass (limitation 6): that is kept
for compatibility, as is the empty pattern a trailing comma adds (it never matches). Beyond the
original, ``mime_type_any`` lists patterns of which one must pass (OR).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import glob
from .errors import BadPattern, InvalidMimePattern


@dataclass(frozen=True, slots=True)
class MimeCheck:
    """One trimmed pattern; ``negated`` when it came with a ``!`` prefix."""

    pattern: str
    negated: bool

    def passes(self, mime: str) -> bool:
        return glob.match(self.pattern, mime) != self.negated

    def failure(self, mime: str) -> str:
        # The original's exact texts, including the asymmetric punctuation.
        if self.negated:
            return f"Expected mime-type not to be ({self.pattern}) found - ({mime})"
        return f"Expected mime-type to be ({self.pattern}), found ({mime})"


@dataclass(frozen=True, slots=True)
class MimeSpec:
    """A parsed ``mime_type``: all checks must pass. No checks (``""``) always passes."""

    checks: tuple[MimeCheck, ...]

    def check(self, mime: str) -> str | None:
        """None when every check passes, else the failure text of the first failing check."""
        for c in self.checks:
            if not c.passes(mime):
                return c.failure(mime)
        return None

    def __bool__(self) -> bool:
        return bool(self.checks)


@dataclass(frozen=True, slots=True)
class MimeAnySpec:
    """A parsed ``mime_type_any``: one check must pass. No checks always passes."""

    checks: tuple[MimeCheck, ...]

    def check(self, mime: str) -> str | None:
        if not self.checks or any(c.passes(mime) for c in self.checks):
            return None
        listed = ", ".join(("!" if c.negated else "") + c.pattern for c in self.checks)
        return f"Expected mime-type to be one of ({listed}), found ({mime})"

    def __bool__(self) -> bool:
        return bool(self.checks)


def parse_mime_patterns(spec: str) -> MimeSpec:
    """Parse and validate ``mime_type``; raise InvalidMimePattern (the API's 400 text)."""
    if spec == "":
        return MimeSpec(())
    return MimeSpec(tuple(_parse_one(part) for part in spec.split(",")))


def parse_mime_any(patterns: Iterable[str]) -> MimeAnySpec:
    """Parse and validate ``mime_type_any`` (each entry like one ``mime_type`` part)."""
    return MimeAnySpec(tuple(_parse_one(p) for p in patterns))


def check_any(patterns: Sequence[str], mime: str) -> str | None:
    """OR semantics: None if any pattern passes (or the list is empty), else a failure text."""
    return parse_mime_any(patterns).check(mime)


def _parse_one(part: str) -> MimeCheck:
    # Go strings.TrimSpace trims Unicode white space, as str.strip() does.
    pattern = part.strip()
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:]
    try:
        glob.validate(pattern)
    except BadPattern:
        raise InvalidMimePattern(pattern) from None
    return MimeCheck(pattern, negated)
