"""Errors shared by the compiled RESP parser and its pure-Python twin.

The texts are the exact ones go-redisproto (rev 14323b2) produces; rafka writes them back as
``-<text>\\r\\n`` before closing the connection (../shared/specs/rafka.md §1.1), so they are
part of the wire contract.
"""

from __future__ import annotations

from typing import Final

EXPECT_NUMBER: Final = "Expect Number"
EXPECT_NEWLINE: Final = "Expect Newline"
EXPECT_TYPECHAR: Final = "Expect TypeChar"
TOO_MANY_ARG: Final = "TooManyArg"
INVALID_BULK_SIZE: Final = "Invalid bulk size"
LINE_TOO_LONG: Final = "LineTooLong"

ERROR_TEXTS: Final = (
    EXPECT_NUMBER,
    EXPECT_NEWLINE,
    EXPECT_TYPECHAR,
    TOO_MANY_ARG,
    INVALID_BULK_SIZE,
    LINE_TOO_LONG,
)


class ProtocolError(Exception):
    """A malformed request; ``str(exc)`` is the exact error text to send as ``-<text>``."""
