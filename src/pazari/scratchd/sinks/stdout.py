"""The ``stdout`` sink (debugging): one JSON line per event."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pazari.scratchd.sinks.base import Sink
from pazari.scratchd.spool import Record


class StdoutSink(Sink):
    async def deliver(self, records: Sequence[Record]) -> None:
        out = sys.stdout.buffer
        out.write(b"".join(r.event + b"\n" for r in records))
        out.flush()
