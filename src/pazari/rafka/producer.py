"""Producing to Kafka through confluent-kafka (spec §1.5).

By default one librdkafka producer is shared by every connection: thousands of short-lived
producer connections then cost no producer threads or queues each, which fixes the original's
issue #39 (RSS "skyrockets" with forking clients). ``"producers": "per-connection"`` keeps the
original's one producer per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
import orjson

from pazari.rafka.stats import Stats
from pazari.runtime.logs import get_logger

log = get_logger("rafka.producer")

#: How often the event loop serves librdkafka's callbacks (seconds).
POLL_INTERVAL = 0.05


class ProduceError(Exception):
    """A local produce error; ``str()`` is librdkafka's text (replied as ``-PROD <text>``)."""


class QueueFull(ProduceError):
    """librdkafka's local queue is full (``queue.buffering.max.messages``)."""


class Producer:
    """One librdkafka producer, with a thread serving its delivery reports."""

    _counter = 0

    def __init__(self, conf: dict[str, Any], stats: Stats, tracked: bool = False) -> None:
        Producer._counter += 1
        self.name = f"producer-{Producer._counter}"
        self.stats = stats
        #: Messages accepted by produce() (the hot path adds its own).
        self.accepted = 0
        #: Reports every delivery, so that a connection can count its own messages (DUMP);
        #: only connections that DUMP produce here (success reports cost the hot path).
        self.tracked = tracked
        conf = dict(conf)
        if tracked:
            conf["delivery.report.only.error"] = False
        conf.setdefault("client.id", f"rafka-{self.name}")
        conf["error_cb"] = self._on_error
        conf["on_delivery"] = self._on_delivery
        if "statistics.interval.ms" in conf:
            conf["stats_cb"] = self._on_stats
        self._producer = confluent_kafka.Producer(conf)
        #: librdkafka's produce, unwrapped, for the hot path: (topic, value, key).
        self.produce_raw = self._producer.produce
        # Delivery reports (failures only) and error/stats callbacks reach Python through
        # poll(). The event loop polls without blocking every POLL_INTERVAL: a polling thread
        # would contend for the GIL with the loop and put its switch interval into the tail
        # latency of every reply.
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            POLL_INTERVAL, self._poll_tick
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-flush")
        log.info("Started working...", extra={"producer": self.name})

    def produce(
        self, topic: str, value: bytes, key: bytes | None,
        on_delivery: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Enqueue one message (asynchronous); raises ProduceError on a local error."""
        try:
            if on_delivery is None:
                self._producer.produce(topic, value, key)
            else:
                self._producer.produce(topic, value, key, on_delivery=on_delivery)
            self.accepted += 1
        except BufferError:
            raise QueueFull("Local: Queue full") from None
        except confluent_kafka.KafkaException as exc:
            raise ProduceError(kafka_text(exc)) from None
        except (TypeError, ValueError) as exc:
            raise ProduceError(str(exc)) from None

    def outstanding(self) -> int:
        return len(self._producer)

    def finished(self) -> int:
        """Messages accepted that are no longer queued (delivered or failed)."""
        return self.accepted - len(self._producer)

    def poll(self) -> None:
        """Serve pending delivery reports now."""
        self._producer.poll(0)

    async def flush(self, timeout: float) -> int:
        """Wait until the queue is empty or ``timeout`` passes; return what is outstanding."""
        loop = asyncio.get_running_loop()
        return int(await loop.run_in_executor(self._executor, self._producer.flush, timeout))

    async def close(self, timeout: float) -> int:
        """Flush for up to ``timeout`` seconds, then stop; the remainder counts as unflushed."""
        left = await self.flush(timeout)
        if left:
            log.warning("Error flushing: %d unflushed events", left, extra={"producer": self.name})
            self.stats.unflushed_messages += left
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._producer.poll(0)
        self._executor.shutdown(wait=False)
        self.stats.librdkafka.pop(self.name, None)
        log.info("Bye", extra={"producer": self.name})
        return left

    def list_topics(self, timeout: float) -> list[str]:
        """Names of all topics (blocking: call it from an executor)."""
        metadata = self._producer.list_topics(timeout=timeout)
        return list(metadata.topics)

    def _poll_tick(self) -> None:
        self._producer.poll(0)
        self._timer = self._loop.call_later(POLL_INTERVAL, self._poll_tick)

    def on_delivery(self, err: Any, msg: Any) -> None:
        """The producer-wide delivery report: failures are logged and counted."""
        self._on_delivery(err, msg)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            return
        self.stats.delivery_errors += 1
        value = msg.value()
        log.warning(
            "Error delivering `%s` to %s: %s",
            value[:200].decode("utf-8", "replace") if value else "",
            f"{msg.topic()}[{msg.partition()}]",
            err.str(),
            extra={"producer": self.name},
        )

    def _on_error(self, err: Any) -> None:
        text = err.str()
        # PR #90 of the original: a peer closing an idle connection is not worth counting.
        if "Connection reset by peer" in text:
            return
        self.stats.unknown_events += 1
        log.warning("librdkafka event: %s", text, extra={"producer": self.name})

    def _on_stats(self, doc: str) -> None:
        self.stats.librdkafka[self.name] = orjson.loads(doc)


def kafka_text(exc: BaseException) -> str:
    """The text a client sees for a librdkafka failure: the KafkaError's own string (e.g.
    ``Local: Queue full``), or the exception's message for anything else."""
    err = exc.args[0] if exc.args else exc
    return str(err.str()) if hasattr(err, "str") else str(err)
