"""Consuming from Kafka through confluent-kafka (spec §1.3, §1.4).

One consumer per connection, created on the first BLPOP. Offsets are stored on ``RPUSH acks``
and committed by librdkafka's auto-commit and when the consumer closes: at-least-once.

Every blocking librdkafka call (poll, commit, close) runs on the consumer's own single worker
thread, so a close can never race a poll (the original's PR #77: Poll hung forever when Close
ran concurrently). Messages librdkafka already holds are taken without a thread hop, in
batches of ``prefetch``; a message never acked is never committed, so prefetching keeps the
at-least-once guarantee.

A consumer that stays without an assignment is noticed and re-created (issue 18): tansu can
keep a departed member as the leader of a forming group, so the followers' SyncGroup answers
REBALANCE_IN_PROGRESS for ever and nothing errors. After ``assignment_timeout`` seconds of
polling without an assignment while its topics have partitions, the consumer logs a warning,
leaves the group and joins again with a new librdkafka consumer, backing off between tries.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
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


#: Re-creations back off: after the n-th consecutive one the next check waits
#: min(2**n, 2**_BACKOFF_MAX_SHIFT) x the timeout.
_BACKOFF_MAX_SHIFT = 3
#: The derived assignment timeout is never below this (tansu holds a JoinGroup for half a
#: session timeout and a rebalance with several joiners takes a few of those).
_MIN_ASSIGNMENT_TIMEOUT = 10.0


def derive_assignment_timeout(conf: dict[str, Any], configured: float | None) -> float:
    """``rafka.assignment_timeout``, or the default derived from the consumer's config:
    3 x ``session.timeout.ms`` (a member that never rejoins is evicted within one session
    timeout and the rebalance that follows takes about another), at least 10 s and at most
    ``max.poll.interval.ms`` (librdkafka's rebalance timeout: a broker may legitimately hold
    a rebalance that long)."""
    if configured is not None:
        return configured
    session = float(conf.get("session.timeout.ms", 45000)) / 1000
    poll_interval = float(conf.get("max.poll.interval.ms", 300000)) / 1000
    return min(max(3 * session, _MIN_ASSIGNMENT_TIMEOUT), poll_interval)


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
        assignment_timeout: float | None = None,
    ) -> None:
        self.cid = cid
        self.topics = topics
        self.group = str(conf.get("group.id", ""))
        self.stats = stats
        self.extended = extended
        self._prefetch = prefetch
        self._buffer: collections.deque[Any] = collections.deque()
        conf = dict(conf)
        conf["error_cb"] = self._on_error
        if "statistics.interval.ms" in conf:
            conf["stats_cb"] = self._on_stats
        self._conf = conf
        self.assignment_timeout = derive_assignment_timeout(conf, assignment_timeout)
        #: The partitions librdkafka assigned; None while this member is in no generation
        #: (joining, rebalancing). An empty list is a real assignment: a group with more
        #: members than partitions leaves some idle.
        self.assignment: list[tuple[str, int]] | None = None
        self._owned: set[tuple[str, int]] = set()
        #: Per partition, the offset after the last message handed to the client.
        self._delivered: dict[tuple[str, int], int] = {}
        self.registered_at = time.monotonic()
        #: Since when the consumer has had no assignment (across re-creations: what the
        #: metric shows); None while it has one.
        self.unassigned_since: float | None = self.registered_at
        #: Start of the current wait that the (backed-off) timeout is measured against.
        self._waiting_since = self.registered_at
        self.recreations = 0
        self._tries = 0  # re-creations since the last assignment (the backoff exponent)
        self._recreating: asyncio.Future[None] | None = None
        self._consumer = self._new_consumer()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="consumer")
        self._closed = False
        self._gone = False
        stats.consumers += 1
        stats.open_consumers[cid] = self
        log.info("Started working (%s)...", _public(conf), extra={"consumer": cid})

    def _new_consumer(self) -> Any:
        consumer = confluent_kafka.Consumer(self._conf)
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        return consumer

    def take_ready(self) -> Any | None:
        """A message that needs no waiting (prefetched or already fetched by librdkafka),
        or None. Raises ConsumeError like next_message."""
        if not self._buffer and self._recreating is None:
            for msg in self._consumer.consume(self._prefetch, 0):
                self._accept(msg)
        return self._hand() if self._buffer else None

    async def next_message(self, timeout: float | None, stopping: asyncio.Event) -> Any | None:
        """The next message, or None once ``timeout`` seconds pass (None: wait forever).

        Raises Shutdown when the server stops, ConsumeError on a poll error.
        """
        if self._buffer:
            return self._hand()
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            if stopping.is_set():
                raise Shutdown
            if self._recreating is not None:
                # The librdkafka consumer is being replaced: nothing to poll, answer nil at
                # the deadline as while any rebalance runs.
                left = POLL_SLICE if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return None
                await asyncio.wait([self._recreating], timeout=min(POLL_SLICE, left))
                continue
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
                if self.assignment is None:
                    # Checked right after a poll, which served any pending assignment.
                    self._check_assignment()
            for msg in batch:
                self._accept(msg)
            if self._buffer:
                return self._hand()
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
        if len(out) < count and not self._buffer and self._recreating is None:
            for msg in self._consumer.consume(min(self._prefetch, count), 0):
                self._accept(msg)
        while self._buffer and len(out) < count:
            out.append(self._hand())
        return out

    def _hand(self) -> Any:
        """The next buffered message, going to the client: its partition's lag counts from
        the offset after it."""
        msg = self._buffer.popleft()
        self._delivered[(msg.topic(), msg.partition())] = msg.offset() + 1
        return msg

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
        if self._recreating is not None:
            # Nothing is assigned while the consumer is replaced: as for any unassigned
            # partition, logged and answered :1.
            log.warning("ack for %s[%d]@%d ignored: consumer being re-created", topic,
                        partition, offset, extra={"consumer": self.cid})
            return
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
        if self.stats.open_consumers.get(self.cid) is self:
            # A reconnect may already have registered a new consumer under the same id.
            del self.stats.open_consumers[self.cid]
        loop = asyncio.get_running_loop()
        if self._recreating is not None:
            await asyncio.wait([self._recreating])
        try:
            if not self._gone:
                await loop.run_in_executor(self._executor, self._consumer.close)
        except Exception as exc:
            log.warning("close failed: %s", exc, extra={"consumer": self.cid})
        finally:
            self._executor.shutdown(wait=False)
            self.stats.consumers -= 1
            self.stats.librdkafka.pop(self.cid, None)
            log.info("Bye", extra={"consumer": self.cid})

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Called (on the polling thread) once the member's SyncGroup succeeded, also with an
        # empty list: the member is in a generation.
        # Eager rebalancing hands over the whole assignment, cooperative only the additions.
        self._owned |= {(tp.topic, tp.partition) for tp in partitions}
        self.assignment = sorted(self._owned)
        self.unassigned_since = None
        self._tries = 0
        log.info("assigned %s", _tps(partitions), extra={"consumer": self.cid})

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        # Prefetched messages of revoked partitions now belong to another consumer.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._buffer = collections.deque(
            m for m in self._buffer if (m.topic(), m.partition()) not in revoked
        )
        self._owned -= revoked
        for tp in revoked:
            self._delivered.pop(tp, None)
        if self._owned:  # cooperative: the member keeps the rest, it is still in a generation
            self.assignment = sorted(self._owned)
        else:
            self._unassigned()
        log.info("revoked %s", _tps(partitions), extra={"consumer": self.cid})

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # The session expired (e.g. no poll within max.poll.interval.ms): as a revoke.
        log.info("lost %s", _tps(partitions), extra={"consumer": self.cid})
        self._owned.clear()
        self._on_revoke(consumer, partitions)

    def _unassigned(self) -> None:
        if self.assignment is not None or self.unassigned_since is None:
            self.unassigned_since = self._waiting_since = time.monotonic()
        self.assignment = None

    # -- noticing and recovering a consumer that never gets an assignment (issue 18) --------

    def unassigned_for(self) -> float:
        """Seconds this consumer has been without an assignment (0 when it has one)."""
        since = self.unassigned_since
        return 0.0 if since is None else time.monotonic() - since

    def _threshold(self) -> float:
        return self.assignment_timeout * (1 << min(self._tries, _BACKOFF_MAX_SHIFT))

    def _check_assignment(self) -> None:
        if self._closed or self._recreating is not None:
            return
        # One member of a group at a time: after any re-creation in the group, the others
        # give it a full timeout to form. Re-creating them all at once would make the member
        # that is about to lead the new generation leave while the group forms, which is
        # what leaves tansu with a departed leader in the first place.
        since = max(self._waiting_since, self.stats.group_recreated.get(self.group, 0.0))
        if time.monotonic() - since < self._threshold():
            return
        self.stats.note_group_recreation(self.group)
        waited = self.unassigned_for()
        loop = asyncio.get_running_loop()
        self._recreating = loop.create_future()
        task = loop.create_task(self._recover(waited))
        task.add_done_callback(self._recovered)

    async def _recover(self, waited: float) -> None:
        loop = asyncio.get_running_loop()
        partitions = await loop.run_in_executor(self._executor, self._partition_count)
        if partitions == 0:
            # Topics that do not exist (yet) have nothing to assign: not a stall. Look again
            # one timeout later.
            self._waiting_since = time.monotonic()
            return
        self._tries += 1
        self.recreations += 1
        self.stats.assignment_timeouts += 1
        log.warning(
            "group %s: consumer %s has had no assignment for %.1fs although topics %s have %s "
            "partitions; leaving the group and joining again with a new librdkafka consumer "
            "(re-creation %d, next check in %.0fs)",
            self.group, self.cid, waited, ",".join(self.topics),
            "?" if partitions is None else partitions, self.recreations, self._threshold(),
            extra={"consumer": self.cid, "group": self.group, "topics": ",".join(self.topics)},
        )
        await loop.run_in_executor(self._executor, self._replace)
        self.stats.consumer_recreations += 1

    def _recovered(self, task: asyncio.Task[None]) -> None:
        fut, self._recreating = self._recreating, None
        if not task.cancelled() and task.exception() is not None:
            log.error("re-creating the consumer failed: %s", task.exception(),
                      extra={"consumer": self.cid})
            self._waiting_since = time.monotonic()
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _partition_count(self) -> int | None:
        """Partitions of the subscribed topics in the metadata (None: not known now)."""
        total = 0
        try:
            for topic in self.topics:
                meta = self._consumer.list_topics(topic, timeout=2.0).topics.get(topic)
                if meta is not None and meta.error is None:
                    total += len(meta.partitions)
        except Exception as exc:  # metadata unavailable: assume the topics have partitions
            log.info("metadata for %s failed: %s", self.topics, exc, extra={"consumer": self.cid})
            return None
        return total

    def _replace(self) -> None:
        """On the worker: leave the group with the old consumer, join with a new one."""
        old = self._consumer
        try:
            old.close()
        except Exception as exc:
            log.warning("close before re-creating failed: %s", exc, extra={"consumer": self.cid})
        self.assignment = None
        self._owned.clear()
        self._delivered.clear()
        # Nothing was assigned, so nothing is buffered; the total wait goes on, the timeout
        # is measured from the new consumer's start.
        self._waiting_since = time.monotonic()
        if self.unassigned_since is None:
            self.unassigned_since = self._waiting_since
        if self._closed:
            self._gone = True  # close() found it closing: nothing left to close
            return
        self._consumer = self._new_consumer()

    def describe(self) -> dict[str, Any]:
        """Assignment and lag of this consumer, for CLIENT LIST and /debug/vars."""
        lag: dict[str, int | None] = {}
        if self.assignment and self._recreating is None and not self._closed:
            lag = self._lag(self.assignment)
        return {
            "group": self.group,
            "topics": self.topics,
            "assigned": None if self.assignment is None else
            [f"{t}[{p}]" for t, p in self.assignment],
            "unassigned_seconds": round(self.unassigned_for(), 1),
            # The timeout in force (configured or derived), before any backoff.
            "assignment_timeout": self.assignment_timeout,
            "age_seconds": round(time.monotonic() - self.registered_at, 1),
            "recreations": self.recreations,
            "lag": lag,
        }

    def _lag(self, assignment: list[tuple[str, int]]) -> dict[str, int | None]:
        """Per assigned partition, messages not yet handed to a client: the high watermark
        from librdkafka's last fetch response (no broker round trip) minus the offset after
        the last message handed out (or librdkafka's position). None where not known yet:
        before the first message of a partition, or before its first fetch response."""
        out: dict[str, int | None] = {}
        try:
            positions = self._consumer.position([TopicPartition(t, p) for t, p in assignment])
            for tp in positions:
                name = f"{tp.topic}[{tp.partition}]"
                start = self._delivered.get((tp.topic, tp.partition), tp.offset)
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                out[name] = max(high - start, 0) if start >= 0 and high >= 0 else None
        except Exception:  # closed or rebalancing meanwhile: no lag to report
            return {}
        return out

    def _on_error(self, err: Any) -> None:
        log.info("librdkafka event: %s", err.str(), extra={"consumer": self.cid})

    def _on_stats(self, doc: str) -> None:
        import orjson

        self.stats.librdkafka[self.cid] = orjson.loads(doc)


def client_list(connections: Iterable[Any]) -> str:
    """``CLIENT LIST`` (issue 18): one line per connection in Redis's ``key=value`` form,
    with its consumer's group, topics, assignment (``-`` while it has none), seconds without
    one, lag per assigned partition and re-creations, so a stuck group shows without logs."""
    lines = []
    for conn in sorted(connections, key=lambda c: c.client_id):
        transport = conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        fields = [f"id={id(conn) & 0x7FFFFFFF}", f"addr={addr}",
                  f"name={conn.client_id if conn.named else ''}"]
        consumer = conn.consumer
        if consumer is not None:
            d = consumer.describe()
            assigned = d["assigned"]
            fields += [
                f"consumer={consumer.cid}", f"group={d['group']}",
                f"topics={','.join(d['topics'])}",
                f"assigned={'-' if assigned is None else ','.join(assigned)}",
                f"unassigned={d['unassigned_seconds']:.1f}",
                "lag=" + ",".join(f"{k}={'?' if v is None else v}" for k, v in d["lag"].items()),
                f"recreations={d['recreations']}",
            ]
        lines.append(" ".join(fields) + "\n")
    return "".join(lines)


def _tps(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def _public(conf: dict[str, Any]) -> dict[str, Any]:
    """The config as logged: callbacks dropped and secrets masked."""
    return masked(conf)
