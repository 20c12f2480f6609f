"""The sink interface the forwarder drives."""

from __future__ import annotations

from collections.abc import Sequence

from pazari.scratchd.config import SinkConfig
from pazari.scratchd.spool import Record


class Sink:
    """Base class: ``deliver`` raises on failure and may be called again with the same
    records (at-least-once; consumers de-duplicate by event ``id``)."""

    def __init__(self, name: str, config: SinkConfig) -> None:
        self.name = name
        self.config = config

    async def start(self) -> None:
        """Connect or open; must not fail when the backend is down (deliver retries)."""

    async def deliver(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        """Raise when the backend is unreachable. The forwarder asks when records keep
        failing: a sink that answers is up, so the records themselves are rejected."""

    async def sync(self) -> None:
        """Make everything delivered so far durable (before its cursor is persisted)."""

    async def close(self) -> None:
        """Release connections and files."""
