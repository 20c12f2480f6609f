"""Errors shared by the compiled event encoder and its pure-Python twin."""

from __future__ import annotations


class EventError(ValueError):
    """An event that breaks a limit of the spec ("The event": key ≤ 128 bytes, value ≤ 4 KiB,
    ≤ 256 params, event ≤ 32 KiB) or carries a value that cannot be encoded.

    ``str(exc)`` is the reason a client gets with its 400 (identical in both twins).
    """
