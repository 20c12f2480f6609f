"""Consuming (spec §1.3, §1.4): BLPOP, acks, timeouts, consumer errors, BLMPOP, extended
replies and SAVE, through redis-py (RESP2, as rafka-rb's redis-rb speaks it) against a real
tansu broker."""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.rafka.conftest import Rafka, consume_values
from tests.support.services import KafkaBroker, produce_messages


def named(rafka: Rafka, group: str, name: str = "c1", **kw: Any) -> redis.Redis:
    client = rafka.redis(**kw)
    assert client.execute_command("CLIENT", "SETNAME", f"{group}:{name}") == b"OK"
    return client


def committed(broker: KafkaBroker, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        consumer.close()


def test_blpop_reply_shape_acks_and_save(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    placed = produce_messages(kafka_broker.bootstrap, kafka_topic,
                              [f"m{i}" for i in range(5)], key="k")
    partition = placed[0][0]
    client = named(rafka, group)
    msgs = consume_values(client, f"topics:{kafka_topic}", 5, ack=False)
    for i, msg in enumerate(msgs):
        assert msg == [b"topic", kafka_topic.encode(), b"partition", partition,
                       b"offset", placed[i][1], b"value", f"m{i}".encode()]
    # Ack the first three only; SAVE commits synchronously.
    for msg in msgs[:3]:
        assert client.execute_command("RPUSH", "acks", f"{kafka_topic}:{partition}:{msg[5]}") == 1
    assert client.execute_command("SAVE") is True  # +OK
    assert committed(kafka_broker, group, kafka_topic) == {partition: placed[2][1] + 1}
    client.execute_command("QUIT")
    # The same group sees the unacked messages again (at-least-once), not the acked ones.
    again = named(rafka, group, "c2")
    redelivered = consume_values(again, f"topics:{kafka_topic}", 2)
    assert [m[7] for m in redelivered] == [b"m3", b"m4"]


def test_close_commits_stored_offsets(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    produce_messages(kafka_broker.bootstrap, kafka_topic, ["a", "b"], key="k")
    client = named(rafka, group)
    msgs = consume_values(client, f"topics:{kafka_topic}", 2)  # acked, never SAVEd
    client.close()
    partition, last = msgs[-1][3], msgs[-1][5]

    def stored() -> bool:
        return committed(kafka_broker, group, kafka_topic).get(partition) == last + 1

    deadline = time.monotonic() + 30
    while not stored():
        assert time.monotonic() < deadline, "offsets not committed after the consumer closed"
        time.sleep(0.2)


def test_consumer_errors(rafka: Rafka, kafka_topic: str, group: str) -> None:
    client = rafka.raw()
    name = f"{group}:e1"
    assert client.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"
    # An unknown key is refused before librdkafka sees it (issue 12's allowlist).
    assert client.call("BLPOP", f'topics:{kafka_topic}:{{"foo":"bar"}}', "1") == (
        b"-CONS Config key not allowed: foo\r\n"
    )
    for conf in ('{"fetch.foo":"bar"}', '{"session.timeout.ms":true}'):
        assert client.call("BLPOP", f"topics:{kafka_topic}:{conf}", "1") == (
            f"-CONS Failed to register Consumer '{name}|{kafka_topic}' for Client "
            f"'{name}'\r\n".encode()
        )
    assert client.call("BLPOP", f"topics:{kafka_topic}:", "0.1") == b"*-1\r\n"
    # Later config is ignored, even an invalid one; another topic list is an error.
    assert client.call("BLPOP", f'topics:{kafka_topic}:{{"foo":"bar"}}', "0.1") == b"*-1\r\n"
    assert client.call("BLPOP", f"topics:{kafka_topic},other", "0.1") == (
        f"-CONS Client '{name}' has Consumer '{name}|{kafka_topic}' registered (new consID: "
        f"'{name}|{kafka_topic},other')\r\n".encode()
    )
    assert client.call("RPUSH", "acks", f"{kafka_topic}:0:-5") == (
        b"-CONS offset cannot be negative, got -4\r\n"
    )
    assert client.call("RPUSH", "acks", f"{kafka_topic}:0:-1") == b":1\r\n"
    # An ack for a partition this consumer does not own is logged and answered :1.
    assert client.call("RPUSH", "acks", "never-assigned-topic:3:5") == b":1\r\n"
    assert client.call("RPUSH", "ACKS", f"{kafka_topic}:1:0x10") == b":1\r\n"


def test_save_without_consumer(rafka: Rafka) -> None:
    raw = rafka.raw()
    peer = raw.peer
    assert raw.call("SAVE") == f"-CONS No consumer registered for Client {peer}\r\n".encode()


def _timed_blpop(rafka: Rafka, group: str, topic: str, *args: str) -> tuple[float, bytes]:
    raw = rafka.raw()
    raw.call("CLIENT", "SETNAME", f"{group}:{'-'.join(args) or 'none'}")
    start = time.monotonic()
    reply = raw.call("BLPOP", f"topics:{topic}", *args)
    return time.monotonic() - start, reply


@pytest.mark.parametrize(
    ("args", "low", "high"),
    [
        pytest.param(("0.3",), 0.25, 3.0, id="float"),
        pytest.param(("1",), 0.9, 4.0, id="integer"),
    ],
)
def test_blpop_timeout(
    rafka: Rafka, group: str, kafka_topic: str, args: tuple[str, ...], low: float, high: float
) -> None:
    elapsed, reply = _timed_blpop(rafka, group, kafka_topic, *args)
    assert reply == b"*-1\r\n"
    assert low <= elapsed <= high, elapsed


def test_blpop_default_timeout_is_5s(rafka: Rafka, group: str, kafka_topic: str) -> None:
    """A non-integer (or missing) timeout falls back to the server default of 5 s."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda args: _timed_blpop(rafka, group, kafka_topic, *args),
                             [("abc",), ()]))
    for elapsed, reply in runs:
        assert reply == b"*-1\r\n"
        assert 4.8 <= elapsed <= 10.0, elapsed


def test_blpop_zero_blocks_until_a_message_arrives(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    raw = rafka.raw(timeout=60)
    raw.call("CLIENT", "SETNAME", f"{group}:zero")
    raw.cmd("BLPOP", f"topics:{kafka_topic}", "0")
    raw.sock.settimeout(2.0)  # the original crashed on 0; now nothing comes back yet
    with pytest.raises(TimeoutError):
        raw.read_reply()
    raw.sock.settimeout(60)
    produce_messages(kafka_broker.bootstrap, kafka_topic, ["late"])
    assert raw.read_reply().endswith(b"$5\r\nvalue\r\n$4\r\nlate\r\n")


def test_topic_created_after_subscribing(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    client = named(rafka, group)
    for _ in range(2):  # not an error, only nothing yet
        assert client.execute_command("BLPOP", f"topics:{kafka_topic}", 0.5) is None
    produce_messages(kafka_broker.bootstrap, kafka_topic, ["first"])
    assert consume_values(client, f"topics:{kafka_topic}", 1)[0][7] == b"first"


def test_multiple_topics_and_client_config(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    one, two = f"{kafka_topic}-a", f"{kafka_topic}-b"
    produce_messages(kafka_broker.bootstrap, one, ["1"])
    produce_messages(kafka_broker.bootstrap, two, ["2"])
    client = named(rafka, group)
    conf = json.dumps({"fetch.wait.max.ms": 50, "queued.min.messages": 1000})
    key = f"topics:{one},{two}:{conf}"
    got = consume_values(client, key, 2)
    assert sorted((m[1], m[7]) for m in got) == [(one.encode(), b"1"), (two.encode(), b"2")]


def test_blmpop_returns_up_to_count(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    produce_messages(kafka_broker.bootstrap, kafka_topic, [f"v{i}" for i in range(10)], key="k")
    client = named(rafka, group)
    key = f"topics:{kafka_topic}"
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(values) < 10:
        assert time.monotonic() < deadline, values
        reply = client.blmpop(1, 1, key, direction="LEFT", count=4)
        if reply is None:
            continue
        assert reply[0] == key.encode()
        assert 1 <= len(reply[1]) <= 4
        for msg in reply[1]:
            assert msg[0::2] == [b"topic", b"partition", b"offset", b"value"]
            values.append(msg[7])
            client.execute_command("RPUSH", "acks", f"{kafka_topic}:{msg[3]}:{msg[5]}")
    assert values == [f"v{i}".encode() for i in range(10)]
    assert client.blmpop(0.2, 1, key, direction="LEFT", count=4) is None
    with pytest.raises(redis.ResponseError, match="count should be greater than 0"):
        client.execute_command("BLMPOP", 1, 1, key, "LEFT", "COUNT", 0)


def test_extended_reply_has_key_timestamp_and_headers(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(kafka_topic, b"hello", key=b"the-key", timestamp=1_700_000_000_123,
                     headers=[("h1", b"v1"), ("h2", b"")])
    producer.produce(kafka_topic, None, key=b"the-key")  # a null value arrives as $-1
    assert producer.flush(30) == 0
    client = named(rafka, group)
    key = f'topics:{kafka_topic}:{{"rafka.reply":"extended"}}'
    first, second = consume_values(client, key, 2)
    assert first[:6] == [b"topic", kafka_topic.encode(), b"partition", first[3], b"offset", 0]
    assert first[6:] == [b"value", b"hello", b"key", b"the-key", b"timestamp",
                         1_700_000_000_123, b"headers", [b"h1", b"v1", b"h2", b""]]
    assert second[6:8] == [b"value", None]
    assert second[8:12:2] == [b"key", b"timestamp"] and second[13] == []
    assert second[11] > 1_700_000_000_123


def test_plain_reply_without_opt_in_is_8_elements(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(kafka_topic, b"x", key=b"k", headers=[("h", b"v")])
    assert producer.flush(30) == 0
    client = named(rafka, group)
    (msg,) = consume_values(client, f'topics:{kafka_topic}:{{"rafka.reply":"plain"}}', 1)
    assert len(msg) == 8 and msg[7] == b"x"


def test_concurrent_group_members_share_the_work(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    values = [f"w{i}" for i in range(40)]
    produce_messages(kafka_broker.bootstrap, kafka_topic, values)

    def member(name: str) -> list[bytes]:
        client = named(rafka, group, name)
        seen: list[bytes] = []
        deadline = time.monotonic() + 45
        idle = 0
        while time.monotonic() < deadline and idle < 4:
            reply = client.execute_command("BLPOP", f"topics:{kafka_topic}", 1)
            if reply is None:
                idle += 1 if seen else 0
                continue
            idle = 0
            seen.append(reply[7])
            client.execute_command("RPUSH", "acks", f"{kafka_topic}:{reply[3]}:{reply[5]}")
        return seen

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(member, ["m1", "m2"]))
    seen = results[0] + results[1]
    assert set(seen) == {v.encode() for v in values}
