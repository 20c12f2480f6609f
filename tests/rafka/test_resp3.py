"""HELLO and RESP3 (the issue: redis-py 8 sends HELLO 3 and CLIENT SETINFO on connect).

RESP2 clients see the original's replies; once HELLO 3 is negotiated, HGETALL stats and HELLO
are maps and a BLPOP timeout is the RESP3 null `_`."""

from __future__ import annotations

import time

import pytest
import redis

from tests.rafka.conftest import Rafka, consume_values
from tests.support.services import KafkaBroker, produce_messages

STATS_MAP = (
    b"%3\r\n$27\r\nproducer.unflushed.messages\r\n$1\r\n0\r\n"
    b"$24\r\nproducer.delivery.errors\r\n$1\r\n0\r\n$23\r\nproducer.unknown.events\r\n$1\r\n0\r\n"
)


def test_hello_3_switches_replies_to_resp3(rafka: Rafka) -> None:
    raw = rafka.raw()
    hello = raw.call("HELLO", "3")
    assert hello.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nrafka\r\n$7\r\nversion\r\n$5\r\n0.6.2\r\n"
                            b"$5\r\nproto\r\n:3\r\n")
    assert raw.call("DEL", "stats") == b":1\r\n"
    assert raw.call("HGETALL", "stats") == STATS_MAP
    raw.call("CLIENT", "SETNAME", f"r3:{time.monotonic_ns()}")
    assert raw.call("BLPOP", "topics:t-resp3-none", "0.1") == b"_\r\n"
    # Back to RESP2 on the same connection.
    assert raw.call("HELLO", "2").startswith(b"*14\r\n$6\r\nserver\r\n")
    assert raw.call("BLPOP", "topics:t-resp3-none", "0.1") == b"*-1\r\n"
    assert raw.call("HGETALL", "stats").startswith(b"*6\r\n")


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        pytest.param(("HELLO", "4"), b"-NOPROTO unsupported protocol version\r\n", id="proto-4"),
        pytest.param(("HELLO", "x"), b"-ERR Protocol version is not an integer or out of range"
                     b"\r\n", id="proto-nan"),
        pytest.param(("HELLO", "3", "FOO"), b"-ERR Syntax error in HELLO option 'FOO'\r\n",
                     id="bad-option"),
        pytest.param(("HELLO", "3", "SETNAME", "nocolon"), b"-CONS Cannot parse group.id\r\n",
                     id="setname-no-group"),
        pytest.param(("HELLO", "3", "AUTH", "default", "pw"), b"-WRONGPASS invalid "
                     b"username-password pair or user is disabled.\r\n", id="auth-no-password"),
        pytest.param(("CLIENT", "SETINFO", "LIB-NAME", "x"), b"+OK\r\n", id="client-setinfo"),
    ],
)
def test_hello_errors_leave_resp2(rafka: Rafka, args: tuple[str, ...], reply: bytes) -> None:
    raw = rafka.raw()
    assert raw.call(*args) == reply
    assert raw.call("HGETALL", "stats").startswith(b"*6\r\n")  # still RESP2


def test_hello_setname_names_the_connection(rafka: Rafka) -> None:
    raw = rafka.raw()
    name = f"hs:{time.monotonic_ns()}"
    assert raw.call("HELLO", "2", "SETNAME", name).startswith(b"*14\r\n")
    assert raw.call("CLIENT", "GETNAME") == b"$%d\r\n%s\r\n" % (len(name), name.encode())
    assert raw.call("HELLO").startswith(b"*14\r\n")  # no version: stays RESP2


def test_default_redis_py_client_negotiates_resp3(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    """A default `redis.Redis()` (HELLO 3 + CLIENT SETINFO on connect) does all of rafka."""
    client = redis.Redis(host=rafka.host, port=rafka.port, socket_timeout=30)
    rafka._clients.append(client)
    assert client.ping() is True
    stats = client.hgetall("stats")
    assert set(stats) == {b"producer.unflushed.messages", b"producer.delivery.errors",
                          b"producer.unknown.events"}
    consumer = rafka.redis(protocol=3, single_connection_client=True)
    assert consumer.client_setname(f"{group}:r3") is True
    assert consumer.blpop([f"topics:{kafka_topic}"], 0.1) is None  # `_` is None
    assert client.rpushx(f"topics:{kafka_topic}", "r3") == 1
    assert client.execute_command("DUMP", 10000) == 0
    (msg,) = consume_values(consumer, f"topics:{kafka_topic}", 1)
    assert msg == [b"topic", kafka_topic.encode(), b"partition", msg[3], b"offset", 0,
                   b"value", b"r3"]
    hello = consumer.execute_command("HELLO", "3")
    assert hello[b"proto"] == 3 and hello[b"server"] == b"rafka"


def test_resp3_blmpop_and_timeouts(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    produce_messages(kafka_broker.bootstrap, kafka_topic, ["a", "b", "c"], key="k")
    client = rafka.redis(protocol=3, single_connection_client=True)
    client.client_setname(f"{group}:m")
    key = f"topics:{kafka_topic}"
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < 3:
        assert time.monotonic() < deadline
        reply = client.blmpop(1, 1, key, direction="LEFT", count=10)
        if reply is not None:
            assert reply[0] == key.encode()
            got.extend(m[7] for m in reply[1])
    assert got == [b"a", b"b", b"c"]
    assert client.blmpop(0.1, 1, key, direction="LEFT", count=10) is None
