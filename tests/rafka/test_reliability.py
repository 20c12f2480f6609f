"""Reliability against a real broker: at-least-once across `kill -9`, and clients sending
garbage cannot affect other clients."""

from __future__ import annotations

import random
import threading
import time

import redis

from tests.rafka.conftest import Rafka, Raw, StartRafka, encode
from tests.support.daemon import DaemonFactory
from tests.support.ports import wait_for
from tests.support.services import KafkaBroker, produce_messages


def _consume_until(
    client: redis.Redis, topic: str, seen: set[bytes], stop_at: int, deadline: float
) -> int:
    """BLPOP + ack until `stop_at` messages were consumed in this call; returns the count."""
    consumed = 0
    while consumed < stop_at:
        assert time.monotonic() < deadline, f"stalled with {len(seen)} distinct values seen"
        reply = client.execute_command("BLPOP", f"topics:{topic}", 1)
        if reply is None:
            continue
        seen.add(reply[7])
        consumed += 1
        assert client.execute_command("RPUSH", "acks", f"{topic}:{reply[3]}:{reply[5]}") == 1
    return consumed


def test_at_least_once_across_kill_9(
    start_rafka: StartRafka,
    daemon_factory: DaemonFactory,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    group: str,
) -> None:
    n = 2000
    values = {f"v{i:04}".encode() for i in range(n)}
    produce_messages(kafka_broker.bootstrap, kafka_topic, sorted(values))
    server = start_rafka()
    seen: set[bytes] = set()
    deadline = time.monotonic() + 150
    client = server.redis(single_connection_client=True)
    client.client_setname(f"{group}:worker")
    _consume_until(client, kafka_topic, seen, n // 2, deadline)
    assert server.daemon.kill9() == -9  # mid-stream: acked offsets may not be committed yet
    server.close_clients()
    server.restart(daemon_factory)
    client = server.redis(single_connection_client=True)
    client.client_setname(f"{group}:worker")  # the same id is free on the new process
    while seen != values:
        _consume_until(client, kafka_topic, seen, 1, deadline)
    assert seen == values


def _garbage(rng: random.Random) -> bytes:
    choices = [
        lambda: rng.randbytes(rng.randint(1, 4096)),
        lambda: b"*%d\r\n" % rng.randint(-5, 100),
        lambda: b"*2\r\n$99999999999\r\n",
        lambda: b"*1\r\n$5\r\nab",  # a partial frame, then the connection goes away
        lambda: b"*3\r\n$6\r\nRPUSHX\r\n$9\r\ntopics:x\r\n:1\r\n",
        lambda: b"PING " * 30 + b"\r\n",
        lambda: b"\x00\xff" * 40_000,
        lambda: encode("BLPOP", "topics:" + "x" * 100, "0.01") + b"$" * 10,
    ]
    return rng.choice(choices)()


def _garbage_client(server: Rafka, seed: int, stop: threading.Event, errors: list[str]) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            raw = Raw(server.host, server.port, timeout=10)
            try:
                raw.send(_garbage(rng))
                if rng.random() < 0.5:
                    raw.read_until_closed(timeout=5)
            finally:
                raw.close()
        except OSError:
            pass  # a reset or closed connection is the expected answer to garbage
        except Exception as exc:
            errors.append(repr(exc))


def test_garbage_clients_do_not_affect_others(
    start_rafka: StartRafka, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    server = start_rafka()
    good = server.raw()
    stop = threading.Event()
    errors: list[str] = []
    threads = [
        threading.Thread(target=_garbage_client, args=(server, seed, stop, errors), daemon=True)
        for seed in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        batch = encode("PING") + encode("RPUSHX", f"topics:{kafka_topic}", "g") + encode(
            "HGETALL", "stats")
        until = time.monotonic() + 5
        rounds = 0
        while time.monotonic() < until:
            good.send(batch * 20)
            for _ in range(20):
                assert good.read_reply() == b"+PONG\r\n"
                assert good.read_reply() == b":1\r\n"
                assert good.read_reply().startswith(b"*6\r\n$27\r\nproducer.unflushed")
            rounds += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors
    assert rounds > 5
    # Still serving after the storm, on the old connection and on new ones.
    assert good.call("PING") == b"+PONG\r\n"
    assert server.raw().call("PING") == b"+PONG\r\n"
    assert good.call("DUMP", "10000") == b":0\r\n"
    assert server.daemon.running
    # Every garbage connection was closed and released (only ours remain).
    wait_for(lambda: server.debug_vars()["rafka"]["clients"] <= 2, 10, "garbage clients gone")
