"""Spec §1 through real clients: redis-py speaking RESP2 (`protocol=2`) and the Debian
`redis-cli`, as operators and rafka's users drive the server."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import redis

from tests.rafka.conftest import Rafka
from tests.support.services import KafkaBroker, consume_all, require_binary


def cli(rafka: Rafka, *args: str, stdin: str | None = None) -> str:
    binary = require_binary("redis-cli", "apt-get install -y redis-tools")
    done = subprocess.run(
        [binary, "-h", rafka.host, "-p", str(rafka.port), *args],
        capture_output=True, text=True, timeout=60, input=stdin,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_redis_py_client_name_commands(rafka: Rafka) -> None:
    client = rafka.redis(single_connection_client=True)
    before = client.client_getname()
    assert before is not None and before.startswith("127.0.0.1:")  # not nil, as the original
    name = f"grp:{time.monotonic_ns()}"
    assert client.client_setname(name) is True
    assert client.client_getname() == name
    already = f"^CONS Client ID is already set to {re.escape(name)}$"
    with pytest.raises(redis.ResponseError, match=already):
        client.client_setname(name + "2")
    other = rafka.redis(single_connection_client=True)
    with pytest.raises(redis.ResponseError, match=f"^CONS id {re.escape(name)} is already taken$"):
        other.client_setname(name)
    with pytest.raises(redis.ResponseError, match=r"^CONS Cannot parse group\.id$"):
        other.client_setname("nogroup")


def test_redis_py_stats(rafka: Rafka) -> None:
    client = rafka.redis()
    assert client.delete("stats") == 1
    assert client.hgetall("stats") == {
        b"producer.unflushed.messages": b"0",
        b"producer.delivery.errors": b"0",
        b"producer.unknown.events": b"0",
    }
    with pytest.raises(redis.ResponseError, match=r"^Expected key to be 'stats', got OTHER$"):
        client.hgetall("other")
    with pytest.raises(redis.ResponseError, match=r"^Command not supported: GET$"):
        client.get("x")
    assert client.ping() is True


def test_redis_py_produce_dump_and_keys(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    client = rafka.redis(single_connection_client=True)
    assert client.execute_command("DUMP", "100") == 0  # no producer yet
    for i in range(20):
        assert client.rpushx(f"topics:{kafka_topic}", f"v{i}") == 1
    with pytest.raises(redis.ResponseError, match=r"^PROD DUMP accepts 1 argument, got 0$"):
        client.execute_command("DUMP")
    with pytest.raises(redis.ResponseError, match=r"^PROD DUMP accepts 1 argument, got 2$"):
        client.execute_command("DUMP", "1", "2")
    for bad in ("NaN", "1.5", "x"):
        with pytest.raises(redis.ResponseError, match=r"^PROD NaN$"):
            client.execute_command("DUMP", bad)
    assert client.execute_command("DUMP", "10000") == 0  # everything delivered
    records = consume_all(kafka_broker.bootstrap, kafka_topic, 20)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(20))

    def listed() -> bool:
        return f"topics:{kafka_topic}".encode() in client.keys("topics:")

    deadline = time.monotonic() + 20
    while not listed():
        assert time.monotonic() < deadline, "KEYS topics: never listed the new topic"
        time.sleep(0.1)


def test_rpushx_keys_and_the_unchecked_prefix(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    client = rafka.redis()
    for i in range(12):
        assert client.rpushx(f"topics:{kafka_topic}:same-key", f"k{i}") == 1
    # parts[0] is not checked: `topic:foo:bar` produces to foo with key bar (the Go tests).
    assert client.rpushx(f"topic:{kafka_topic}:bar", "unchecked") == 1
    assert client.execute_command("DUMP", "10000") == 0
    records = consume_all(kafka_broker.bootstrap, kafka_topic, 13)
    keyed = [r for r in records if r.key == b"same-key"]
    assert [r.value for r in keyed] == [f"k{i}".encode() for i in range(12)]
    assert len({r.partition for r in keyed}) == 1  # the same key goes to one partition
    assert [(r.key, r.value) for r in records if r.key == b"bar"] == [(b"bar", b"unchecked")]


def test_redis_cli_commands(rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    assert cli(rafka, "PING") == "PONG\n"
    assert cli(rafka, "RPUSHX", f"topics:{kafka_topic}", "from-cli") == "1\n"
    assert cli(rafka, "DEL", "stats") == "1\n"
    assert cli(rafka, "HGETALL", "stats") == (
        "producer.unflushed.messages\n0\nproducer.delivery.errors\n0\n"
        "producer.unknown.events\n0\n"
    )
    # redis-cli prints an error reply followed by an empty line (as against redis-server).
    assert cli(rafka, "SET", "a", "b") == "Command not supported: SET\n\n"
    assert cli(rafka, "CLIENT", "SETNAME", "nogroup") == "CONS Cannot parse group.id\n\n"
    assert cli(rafka, "DUMP", "1000") == "0\n"  # a new connection has no producer
    records = consume_all(kafka_broker.bootstrap, kafka_topic, 1)
    assert [r.value for r in records] == [b"from-cli"]


def test_redis_cli_interactive_consume(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    """One redis-cli session (stdin): name, produce, consume until a message, ack, quit."""
    script = [f"CLIENT SETNAME {group}:cli", f"RPUSHX topics:{kafka_topic} hello-cli",
              "DUMP 5000", f"BLPOP topics:{kafka_topic} 0"]  # 0: until a message arrives
    out = cli(rafka, stdin="\n".join(script) + "\nQUIT\n")
    lines = out.splitlines()
    assert lines[:3] == ["OK", "1", "0"]
    assert lines[-1] == "hello-cli", out
    at = len(lines) - 1
    assert lines[at - 7 : at] == ["topic", kafka_topic, "partition", lines[at - 4], "offset",
                                  lines[at - 2], "value"]
    ack = f"{kafka_topic}:{lines[at - 4]}:{lines[at - 2]}"
    out = cli(rafka, stdin=f"CLIENT SETNAME {group}:cli2\nRPUSH acks {ack}\nSAVE\n")
    assert out.splitlines()[:2] == ["OK", f"CONS No consumer registered for Client {group}:cli2"]


def test_monitor_with_redis_py(rafka: Rafka) -> None:
    sender = rafka.redis(single_connection_client=True)
    name = f"mon:{time.monotonic_ns()}"
    with rafka.redis().monitor() as mon:
        sender.client_setname(name)
        sender.ping()
        seen = []
        for event in mon.listen():
            seen.append(event)
            if event["command"] == "PING":
                break
    assert seen[-1]["client_address"] == name.split(":")[0]
    assert any(e["command"] == f"CLIENT SETNAME {name}" for e in seen)
