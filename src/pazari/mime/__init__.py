"""MIME sniffing and the downloader's ``mime_type`` pattern checks.

``sniff`` comes from the compiled ``pazari.mime._sniff`` (or its pure twin ``_sniff_py`` with
``PAZARI_NO_EXTENSIONS=1``); daemons import this package, never the compiled module.
"""

from __future__ import annotations

from .._ext import select
from .errors import BadPattern, InvalidMimePattern, MimeError
from .glob import match, validate
from .patterns import (
    MimeAnySpec,
    MimeCheck,
    MimeSpec,
    check_any,
    parse_mime_any,
    parse_mime_patterns,
)

_impl = select("pazari.mime._sniff", "pazari.mime._sniff_py")

sniff = _impl.sniff
EMPTY: str = _impl.EMPTY
OCTET_STREAM: str = _impl.OCTET_STREAM
SNIFF_LEN = 1024  # the downloader reads and sniffs the first 1 KiB (spec step 7)
COMPILED: bool = _impl.__name__ == "pazari.mime._sniff"

__all__ = [
    "COMPILED",
    "EMPTY",
    "OCTET_STREAM",
    "SNIFF_LEN",
    "BadPattern",
    "InvalidMimePattern",
    "MimeAnySpec",
    "MimeCheck",
    "MimeError",
    "MimeSpec",
    "check_any",
    "match",
    "parse_mime_any",
    "parse_mime_patterns",
    "sniff",
    "validate",
]
