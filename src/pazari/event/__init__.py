"""The canonical analytics event (spec scratchd.md "The event" and "Encoding").

``encode_query`` / ``encode_fields`` (and ``frame_query``: ``encode_query`` framed as a
scratchd spool record), the ``Uuid7`` id generator and the spool's
``sync_loop`` (an fdatasync server that runs without the GIL) come from the compiled
``pazari.event._encoder`` (or the pure twin ``_encoder_py`` with ``PAZARI_NO_EXTENSIONS=1``);
daemons import this package, never a twin directly. Both raise :class:`EventError` with the
reason a client sees in its 400.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pazari._ext import select
from pazari.event._encoder_py import MAX_EVENT, MAX_KEY, MAX_PARAMS, MAX_VALUE, RESERVED
from pazari.event.errors import EventError

if TYPE_CHECKING:
    from pazari.event._encoder import (
        Uuid7,
        encode_fields,
        encode_query,
        frame_query,
        new_id,
        sync_loop,
    )
else:
    _impl = select("pazari.event._encoder", "pazari.event._encoder_py")
    encode_query = _impl.encode_query
    encode_fields = _impl.encode_fields
    frame_query = _impl.frame_query
    Uuid7 = _impl.Uuid7
    new_id = _impl.new_id
    sync_loop = _impl.sync_loop

COMPILED: bool = encode_query.__module__ == "pazari.event._encoder"

__all__ = [
    "COMPILED",
    "MAX_EVENT",
    "MAX_KEY",
    "MAX_PARAMS",
    "MAX_VALUE",
    "RESERVED",
    "EventError",
    "Uuid7",
    "encode_fields",
    "encode_query",
    "frame_query",
    "new_id",
    "sync_loop",
]
