"""The ``kafka`` sink: an idempotent confluent-kafka producer (acks=all), a topic per tenant,
the visitor id as key so that a visitor's events stay in order (spec "Persistence").

A batch counts as delivered when every message got its delivery report; any error fails the
batch (the forwarder retries it, so a message may reach Kafka twice, never zero times) and
the producer is rebuilt: after a broker restart (tansu keeps topics in memory) the old
producer id and sequence numbers mean nothing to the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import confluent_kafka

from pazari.runtime.logs import get_logger
from pazari.scratchd.config import SinkConfig
from pazari.scratchd.sinks.base import Sink
from pazari.scratchd.spool import Record

log = get_logger("scratchd.sink.kafka")

DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "message.timeout.ms": 10_000,
    "socket.timeout.ms": 5_000,
    "log.connection.close": False,
}


class DeliveryFailed(Exception):
    pass


class KafkaSink(Sink):
    def __init__(self, name: str, config: SinkConfig) -> None:
        super().__init__(name, config)
        self.conf = {**DEFAULTS, **config.kafka, "enable.idempotence": True, "acks": "all"}
        self.producer: confluent_kafka.Producer | None = None
        self.timeout = float(self.conf["message.timeout.ms"]) / 1000 + 5

    async def start(self) -> None:
        self.producer = confluent_kafka.Producer(self.conf)

    async def deliver(self, records: Sequence[Record]) -> None:
        if self.producer is None:
            self.producer = confluent_kafka.Producer(self.conf)
        producer = self.producer
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        template = self.config.topic
        for r in records:
            while True:
                try:
                    producer.produce(template.format(tenant=r.tenant), r.event, r.key,
                                     on_delivery=report)
                    break
                except BufferError:
                    await asyncio.to_thread(producer.poll, 0.05)
        remaining = await asyncio.to_thread(producer.flush, self.timeout)
        if remaining or errors:
            detail = errors[0] if errors else f"{remaining} messages undelivered"
            await self._rebuild()
            raise DeliveryFailed(f"{len(errors) or remaining} of {len(records)}: {detail}")

    async def ping(self) -> None:
        if self.producer is None:
            self.producer = confluent_kafka.Producer(self.conf)
        # Metadata from a broker: raises KafkaException when none answers.
        await asyncio.to_thread(self.producer.list_topics, timeout=5)

    async def _rebuild(self) -> None:
        old, self.producer = self.producer, None
        if old is not None:
            await asyncio.to_thread(old.purge)
            await asyncio.to_thread(old.flush, 0)

    async def close(self) -> None:
        if self.producer is not None:
            await asyncio.to_thread(self.producer.flush, 5)
            self.producer = None
