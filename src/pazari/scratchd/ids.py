"""Event ids: UUIDv7 (RFC 9562 §5.7), time-ordered within a process. The generator lives with
the event encoder (compiled, or the pure twin under ``PAZARI_NO_EXTENSIONS=1``)."""

from __future__ import annotations

from pazari.event import Uuid7, new_id

__all__ = ["Uuid7", "new_id", "timestamp_ms"]


def timestamp_ms(uuid: str) -> int:
    """The Unix ms timestamp of a UUIDv7 string."""
    return int(uuid[:8] + uuid[9:13], 16)
