"""Consuming from Kafka through confluent-kafka (spec §1.3, §1.4).

One consumer per connection, created on the first BLPOP. Offsets are stored on ``RPUSH acks``
and committed by librdkafka's auto-commit and when the consumer closes: at-least-once.

Every blocking librdkafka call (poll, commit, close) runs on the consumer's own single worker
thread, so a close can never race a poll (the original's PR #77: Poll hung forever when Close
ran concurrently). Messages librdkafka already holds are taken without a thread hop, in
batches of ``prefetch``; a message never acked is never committed, so prefetching keeps the
at-least-once guarantee.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, TopicPartition

from pazari.rafka.config import masked
from pazari.rafka.stats import Stats
from pazari.runtime.logs import get_logger

log = get_logger("rafka.consumer")

#: Poll slice of the original (spec §5): short, so shutdown and timeouts are never blocked.
POLL_SLICE = 0.1

#: Errors that are logged and ignored rather than returned to the client: transient transport
#: errors (the original's issue #69) and, with librdkafka >= 1.5 (PR #2839), "Subscribed topic
#: not available" for topics that do not exist yet (clients subscribe to them on purpose).
_TRANSIENT = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._PARTITION_EOF,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)


class ConsumeError(Exception):
    """A poll error; ``str()`` is librdkafka's text (replied as ``-CONS Poll <text>``)."""


class Shutdown(Exception):
    """The server is shutting down while a BLPOP waits."""


class Consumer:
    def __init__(
        self,
        cid: str,
        topics: list[str],
        conf: dict[str, Any],
        stats: Stats,
        prefetch: int,
        extended: bool,
    ) -> None:
        self.cid = cid
        self.topics = topics
        self.stats = stats
        self.extended = extended
        self._prefetch = prefetch
        self._buffer: collections.deque[Any] = collections.deque()
        conf = dict(conf)
        conf["error_cb"] = self._on_error
        if "statistics.interval.ms" in conf:
            conf["stats_cb"] = self._on_stats
        self._consumer = confluent_kafka.Consumer(conf)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="consumer")
        self._closed = False
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        stats.consumers += 1
        log.info("Started working (%s)...", _public(conf), extra={"consumer": cid})

    def take_ready(self) -> Any | None:
        """A message that needs no waiting (prefetched or already fetched by librdkafka),
        or None. Raises ConsumeError like next_message."""
        if not self._buffer:
            for msg in self._consumer.consume(self._prefetch, 0):
                self._accept(msg)
        return self._buffer.popleft() if self._buffer else None

    async def next_message(self, timeout: float | None, stopping: asyncio.Event) -> Any | None:
        """The next message, or None once ``timeout`` seconds pass (None: wait forever).

        Raises Shutdown when the server stops, ConsumeError on a poll error.
        """
        if self._buffer:
            return self._buffer.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            if stopping.is_set():
                raise Shutdown
            # No worker call is running here (calls are serialised), so taking what librdkafka
            # already holds on the loop thread is safe and saves a thread hop.
            batch = self._consumer.consume(self._prefetch, 0)
            if not batch:
                left = POLL_SLICE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return None
                one = await loop.run_in_executor(
                    self._executor, self._consumer.poll, min(POLL_SLICE, left)
                )
                batch = [one] if one is not None else []
            for msg in batch:
                self._accept(msg)
            if self._buffer:
                return self._buffer.popleft()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    async def next_batch(
        self, count: int, timeout: float | None, stopping: asyncio.Event
    ) -> list[Any]:
        """Up to ``count`` messages: wait for the first, then take what is at hand."""
        first = await self.next_message(timeout, stopping)
        if first is None:
            return []
        out = [first]
        if len(out) < count and not self._buffer:
            for msg in self._consumer.consume(min(self._prefetch, count), 0):
                self._accept(msg)
        while self._buffer and len(out) < count:
            out.append(self._buffer.popleft())
        return out

    def _accept(self, msg: Any) -> None:
        err = msg.error()
        if err is None:
            self._buffer.append(msg)
            return
        if err.code() in _TRANSIENT:
            log.info("Consumer: Poll: Transient error: %s", err.str(), extra={"consumer": self.cid})
            return
        raise ConsumeError(err.str())

    def store(self, topic: str, partition: int, offset: int) -> None:
        """Store ``offset`` (the next one to consume); auto-commit sends it to Kafka."""
        try:
            self._consumer.store_offsets(offsets=[TopicPartition(topic, partition, offset)])
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            if err.code() in (KafkaError._STATE, KafkaError._UNKNOWN_PARTITION):
                # Newer librdkafka rejects offsets of partitions this consumer does not own
                # (e.g. after a rebalance): _STATE, or _UNKNOWN_PARTITION in librdkafka 2.x;
                # the original (librdkafka 0.11) accepted them silently. Logged and answered
                # :1 so clients do not fail on a rebalance (spec §1.4).
                log.warning(
                    "ack for unassigned partition %s[%d]@%d ignored", topic, partition, offset,
                    extra={"consumer": self.cid},
                )
                return
            raise

    async def commit(self) -> None:
        """Commit the stored offsets now (SAVE); nothing stored is not an error."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._commit_sync)
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def _commit_sync(self) -> None:
        self._consumer.commit(asynchronous=False)

    async def close(self) -> None:
        """Leave the group; librdkafka commits the stored offsets on close."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._consumer.close)
        except Exception as exc:
            log.warning("close failed: %s", exc, extra={"consumer": self.cid})
        finally:
            self._executor.shutdown(wait=False)
            self.stats.consumers -= 1
            self.stats.librdkafka.pop(self.cid, None)
            log.info("Bye", extra={"consumer": self.cid})

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _tps(partitions), extra={"consumer": self.cid})

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Prefetched messages of revoked partitions now belong to another consumer.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._buffer = collections.deque(
            m for m in self._buffer if (m.topic(), m.partition()) not in revoked
        )
        log.info("revoked %s", _tps(partitions), extra={"consumer": self.cid})

    def _on_error(self, err: Any) -> None:
        log.info("librdkafka event: %s", err.str(), extra={"consumer": self.cid})

    def _on_stats(self, doc: str) -> None:
        import orjson

        self.stats.librdkafka[self.cid] = orjson.loads(doc)


def _tps(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def _public(conf: dict[str, Any]) -> dict[str, Any]:
    """The config as logged: callbacks dropped and secrets masked."""
    return masked(conf)
