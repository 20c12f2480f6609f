"""The ``redis`` sink: ``XADD <key> MAXLEN ~ <maxlen> * event <json>`` (the stream stays
bounded at a cheap approximate length) or ``RPUSH <key> <json>...``; the key is a template
with ``{tenant}``. One pipeline round trip per batch."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from pazari.scratchd.config import SinkConfig
from pazari.scratchd.sinks.base import Sink
from pazari.scratchd.spool import Record


class RedisSink(Sink):
    def __init__(self, name: str, config: SinkConfig) -> None:
        super().__init__(name, config)
        self.client: aioredis.Redis | None = None

    async def start(self) -> None:
        self.client = aioredis.from_url(
            self.config.url, socket_timeout=5, socket_connect_timeout=2,
            health_check_interval=10,
        )

    async def deliver(self, records: Sequence[Record]) -> None:
        assert self.client is not None
        template = self.config.key
        async with self.client.pipeline(transaction=False) as pipe:
            if self.config.mode == "xadd":
                for r in records:
                    pipe.xadd(template.format(tenant=r.tenant), {"event": r.event},
                              maxlen=self.config.maxlen, approximate=True)
            else:
                by_key: dict[str, list[bytes]] = {}
                for r in records:
                    by_key.setdefault(template.format(tenant=r.tenant), []).append(r.event)
                for key, events in by_key.items():
                    pipe.rpush(key, *events)
            await pipe.execute()

    async def ping(self) -> None:
        assert self.client is not None
        await self.client.ping()  # type: ignore[misc, unused-ignore]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
