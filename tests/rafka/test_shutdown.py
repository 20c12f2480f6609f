"""SIGTERM and the graceful shutdown sequence of the original (spec §2.3): waiting consumers
get `-CONS Server shutdown`, producers keep working while consumers close, stored offsets are
committed, everything acknowledged to a producer reaches Kafka, and the process exits 0."""

from __future__ import annotations

import signal
import threading
import time

from tests.rafka.conftest import StartRafka, consume_values, encode
from tests.support.daemon import DaemonFactory
from tests.support.ports import wait_for
from tests.support.services import KafkaBroker, consume_all, produce_messages

SHUTDOWN = b"-CONS Server shutdown\r\n"


def test_graceful_shutdown_sequence(
    start_rafka: StartRafka,
    daemon_factory: DaemonFactory,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    group: str,
) -> None:
    server = start_rafka({"client_config_allow": ["auto.commit.interval.ms"]})
    produce_messages(kafka_broker.bootstrap, kafka_topic, [f"m{i}" for i in range(6)], key="k")
    # A consumer that acks m0..m3; with auto-commit effectively off only the close commits.
    acker = server.redis(single_connection_client=True)
    acker.client_setname(f"{group}:acker")
    key = f'topics:{kafka_topic}:{{"auto.commit.interval.ms":600000}}'
    msgs = consume_values(acker, key, 6, ack=False)
    assert [m[7] for m in msgs] == [f"m{i}".encode() for i in range(6)]
    for msg in msgs[:4]:
        acker.execute_command("RPUSH", "acks", f"{kafka_topic}:{msg[3]}:{msg[5]}")
    # A consumer blocked in BLPOP 0 (wait forever) on another topic.
    waiter = server.raw()
    waiter.call("CLIENT", "SETNAME", f"{group}-w:waiter")
    waiter.cmd("BLPOP", f"topics:{kafka_topic}-idle", "0")
    # A producer-only client, producing without pause from before the signal until the
    # server closes it.
    producer = server.raw()
    assert producer.call("RPUSHX", f"topics:{kafka_topic}-p", "before") == b":1\r\n"
    acked: list[tuple[str, float]] = []

    def produce_until_closed() -> None:
        for i in range(1_000_000):
            try:
                reply = producer.call("RPUSHX", f"topics:{kafka_topic}-p", f"during{i}")
            except OSError:
                return
            if reply != b":1\r\n":
                return
            acked.append((f"during{i}", time.monotonic()))

    producing = threading.Thread(target=produce_until_closed)
    producing.start()
    wait_for(lambda: len(acked) >= 10, 10, "the producer is producing")
    signalled = time.monotonic()
    server.daemon.send_signal(signal.SIGTERM)
    assert waiter.read_reply() == SHUTDOWN
    assert waiter.read_until_closed() == b""
    producing.join(30)
    assert not producing.is_alive()
    # The producer kept working after shutdown began, until the last phase.
    assert any(stamp > signalled for _, stamp in acked), "producer closed at the signal"
    assert server.daemon.wait_exit(30) == 0
    logs = server.daemon.logs()
    assert "Shutting down..." in logs
    # Spec §2.3: consumers close (step 2-3) before the producers flush and close (step 5).
    consumer_bye = logs.index(f"msg=Bye consumer={group}:acker")
    producer_bye = logs.index("msg=Bye producer=")
    assert consumer_bye < producer_bye
    # Every message acknowledged to the producer is in Kafka.
    records = consume_all(kafka_broker.bootstrap, f"{kafka_topic}-p", 1 + len(acked))
    assert {r.value for r in records} == {b"before", *(a.encode() for a, _ in acked)}
    # The close committed the stored offsets: the group resumes at m4.
    server.close_clients()
    server.restart(daemon_factory)
    again = server.redis(single_connection_client=True)
    again.client_setname(f"{group}:acker")
    rest = consume_values(again, f"topics:{kafka_topic}", 2)
    assert [m[7] for m in rest] == [b"m4", b"m5"]


def test_new_blpop_during_shutdown_and_no_hang_on_idle_clients(
    start_rafka: StartRafka, kafka_topic: str, group: str
) -> None:
    server = start_rafka()
    idle = [server.raw() for _ in range(20)]  # connected, never sent anything
    consumer = server.raw()
    consumer.call("CLIENT", "SETNAME", f"{group}:c")
    consumer.cmd("BLPOP", f"topics:{kafka_topic}", "30")
    start = time.monotonic()
    server.daemon.send_signal(signal.SIGTERM)
    assert consumer.read_reply() == SHUTDOWN
    assert server.daemon.wait_exit(30) == 0
    assert time.monotonic() - start < 15
    for raw in idle:
        assert raw.read_until_closed() == b""


def test_sigterm_right_after_10000_rpushx_replies(
    start_rafka: StartRafka, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    server = start_rafka()
    raw = server.raw()
    n = 10_000
    raw.send(b"".join(encode("RPUSHX", f"topics:{kafka_topic}", f"v{i:05}") for i in range(n)))
    for _ in range(n):
        assert raw.read_reply() == b":1\r\n"
    server.daemon.send_signal(signal.SIGTERM)
    assert server.daemon.wait_exit(30) == 0
    records = consume_all(kafka_broker.bootstrap, kafka_topic, n, timeout=60)
    assert len({r.value for r in records}) == n
