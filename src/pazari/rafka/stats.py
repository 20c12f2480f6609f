"""Counters of the server: the original's three global stats (spec §1.6, ``HGETALL stats``),
and the Prometheus view of everything else.

The hot path only bumps plain ints; a custom collector turns them into metric families when
``/metrics`` is scraped, so a command costs no prometheus_client call.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pazari.rafka.consumer import Consumer


class Stats:
    def __init__(self) -> None:
        # The original's process-global counters, in HGETALL order (spec §1.6).
        self.unflushed_messages = 0
        self.delivery_errors = 0
        self.unknown_events = 0
        # Ours.
        self.connections = 0
        self.connections_total = 0
        self.rejected_connections = 0
        self.output_limit_disconnects = 0
        self.commands: Counter[str] = Counter()
        self.command_errors: Counter[str] = Counter()
        self.protocol_errors = 0
        self.produced = 0
        self.produce_errors = 0
        self.consumed = 0
        self.consume_errors = 0
        self.acks = 0
        self.ack_errors = 0
        self.consumers = 0
        # Issue 18: open consumers by id (their assignment and how long they have waited for
        # one), stalls noticed and librdkafka consumers re-created to recover from them.
        self.open_consumers: dict[str, Consumer] = {}
        self.assignment_timeouts = 0
        self.consumer_recreations = 0
        #: When a consumer of each group was last re-created (monotonic seconds).
        self.group_recreated: dict[str, float] = {}
        # Latest librdkafka statistics (statistics.interval.ms) per client name.
        self.librdkafka: dict[str, dict[str, Any]] = {}

    def note_group_recreation(self, group: str) -> None:
        if len(self.group_recreated) >= 10_000:  # bounded: a client may invent group ids
            self.group_recreated.clear()
        self.group_recreated[group] = time.monotonic()

    def original(self) -> list[tuple[bytes, int]]:
        """The three counters of ``HGETALL stats``, in the original's order."""
        return [
            (b"producer.unflushed.messages", self.unflushed_messages),
            (b"producer.delivery.errors", self.delivery_errors),
            (b"producer.unknown.events", self.unknown_events),
        ]

    def reset_original(self) -> None:
        """``DEL stats`` (issue #47 of the original): monitoring acknowledges and resets."""
        self.unflushed_messages = 0
        self.delivery_errors = 0
        self.unknown_events = 0

    def vars(self) -> dict[str, Any]:
        return {
            "producer.unflushed.messages": self.unflushed_messages,
            "producer.delivery.errors": self.delivery_errors,
            "producer.unknown.events": self.unknown_events,
            "connections": self.connections,
            "consumers": self.consumers,
            "produced": self.produced,
            "consumed": self.consumed,
            "acks": self.acks,
            "rejected_connections": self.rejected_connections,
            "output_limit_disconnects": self.output_limit_disconnects,
            "commands": dict(self.commands),
            "consumer_assignment_timeouts": self.assignment_timeouts,
            "consumer_recreations": self.consumer_recreations,
            "consumer_groups": self.consumer_view(),
            "command_errors": dict(self.command_errors),
        }

    def consumer_view(self) -> dict[str, Any]:
        """Each open consumer's assignment, lag and wait for an assignment, by id."""
        return {cid: c.describe() for cid, c in sorted(self.open_consumers.items())}


class StatsCollector(Collector):
    """Exposes :class:`Stats` as Prometheus metrics at scrape time."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily("rafka_connections", "Open client connections", s.connections)
        yield CounterMetricFamily(
            "rafka_connections", "Client connections accepted", s.connections_total
        )
        yield GaugeMetricFamily("rafka_consumers", "Kafka consumers open", s.consumers)
        commands = CounterMetricFamily(
            "rafka_commands", "Commands received, by command", labels=["command"]
        )
        for name, n in sorted(s.commands.items()):
            commands.add_metric([name], n)
        yield commands
        errors = CounterMetricFamily(
            "rafka_command_errors", "Error replies, by command", labels=["command"]
        )
        for name, n in sorted(s.command_errors.items()):
            errors.add_metric([name], n)
        yield errors
        for name, doc, value in (
            ("rafka_rejected_connections", "Connections refused past max_clients",
             s.rejected_connections),
            ("rafka_output_limit_disconnects",
             "Clients closed past client_output_buffer_limit", s.output_limit_disconnects),
            ("rafka_protocol_errors", "Connections closed on a protocol error", s.protocol_errors),
            ("rafka_produced_messages", "Messages handed to librdkafka", s.produced),
            ("rafka_produce_errors", "RPUSHX answered with an error", s.produce_errors),
            ("rafka_delivery_errors", "Messages librdkafka failed to deliver", s.delivery_errors),
            ("rafka_unflushed_messages", "Messages still queued at close", s.unflushed_messages),
            ("rafka_unknown_events", "Non-message librdkafka events", s.unknown_events),
            ("rafka_consumed_messages", "Messages returned by BLPOP/BLMPOP", s.consumed),
            ("rafka_consume_errors", "BLPOP answered with a CONS error", s.consume_errors),
            ("rafka_acks", "Offsets stored by RPUSH acks", s.acks),
            ("rafka_ack_errors", "RPUSH acks answered with an error", s.ack_errors),
        ):
            yield CounterMetricFamily(name, doc, value)
        yield from self._consumers()
        yield from self._librdkafka()

    def _consumers(self) -> Iterator[Metric]:
        s = self.stats
        unassigned = GaugeMetricFamily(
            "rafka_consumer_unassigned_seconds",
            "Seconds an open consumer has been without a partition assignment (0: assigned)",
            labels=["group", "consumer"],
        )
        assigned = GaugeMetricFamily(
            "rafka_consumer_assigned_partitions", "Partitions assigned to an open consumer",
            labels=["group", "consumer"],
        )
        for cid, consumer in sorted(s.open_consumers.items()):
            unassigned.add_metric([consumer.group, cid], consumer.unassigned_for())
            assigned.add_metric([consumer.group, cid], float(len(consumer.assignment or ())))
        yield unassigned
        yield assigned
        yield CounterMetricFamily(
            "rafka_consumer_assignment_timeouts",
            "Consumers noticed without an assignment after rafka.assignment_timeout",
            s.assignment_timeouts,
        )
        yield CounterMetricFamily(
            "rafka_consumer_recreations",
            "librdkafka consumers re-created (left and rejoined) to recover an assignment",
            s.consumer_recreations,
        )

    def _librdkafka(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "rafka_kafka_queue_messages", "Messages in librdkafka queues", labels=["client"]
        )
        rtt = GaugeMetricFamily(
            "rafka_kafka_broker_rtt_seconds", "Average broker round-trip time",
            labels=["client", "broker"],
        )
        lag = GaugeMetricFamily(
            "rafka_kafka_consumer_lag", "Consumer lag per partition",
            labels=["client", "topic", "partition"],
        )
        for client, doc in sorted(self.stats.librdkafka.items()):
            queue.add_metric([client], float(doc.get("msg_cnt", 0)))
            for broker, b in (doc.get("brokers") or {}).items():
                avg = (b.get("rtt") or {}).get("avg", 0)
                rtt.add_metric([client, broker], avg / 1e6)
            for topic, t in (doc.get("topics") or {}).items():
                for part, p in (t.get("partitions") or {}).items():
                    if part == "-1" or p.get("consumer_lag", -1) < 0:
                        continue
                    lag.add_metric([client, topic, part], float(p["consumer_lag"]))
        yield queue
        yield rtt
        yield lag
