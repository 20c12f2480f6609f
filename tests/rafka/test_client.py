"""pazari.rafka.client against a real rafka console script and tansu: rafka-rb's semantics
(spec §4) in both flavours. Every test runs with the blocking client and with the asyncio
client (driven through `Blocking`, so one test body covers both)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pazari.rafka import client as sync_client
from pazari.rafka.client import (
    CommitError,
    ConsumeError,
    MalformedMessageError,
    Message,
    ProduceError,
)
from pazari.rafka.client import asyncio as async_client
from pazari.rafka.client._core import parse_message, wrap_error
from tests.rafka.conftest import Rafka, StartRafka
from tests.support.daemon import DaemonFactory
from tests.support.ports import wait_for


class Blocking:
    """The asyncio client's coroutines run to completion on a private loop: the same
    calls as the blocking client, so one test body checks both flavours."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name in ("consuming", "consuming_batch"):
            return lambda *a, **kw: self._sync_cm(attr(*a, **kw))
        if callable(attr):
            # Coroutine functions, and consume(), which returns an awaitable that is also
            # an async context manager.
            def call(*a: Any, **kw: Any) -> Any:
                result = attr(*a, **kw)
                if inspect.isawaitable(result):
                    return self._loop.run_until_complete(result)
                return result

            return call
        return attr

    @contextlib.contextmanager
    def _sync_cm(self, acm: Any) -> Iterator[Any]:
        value = self._loop.run_until_complete(acm.__aenter__())
        try:
            yield value
        except BaseException as exc:
            if not self._loop.run_until_complete(acm.__aexit__(type(exc), exc, None)):
                raise
        else:
            self._loop.run_until_complete(acm.__aexit__(None, None, None))


Make = Callable[..., Any]


@pytest.fixture(params=["sync", "asyncio"])
def flavour(request: pytest.FixtureRequest) -> Iterator[tuple[Make, Make]]:
    """(make_producer, make_consumer) for one flavour; everything made is closed after."""
    made: list[Any] = []
    if request.param == "sync":
        def producer(server: Rafka, **kw: Any) -> Any:
            made.append(sync_client.Producer(host=server.host, port=server.port, **kw))
            return made[-1]

        def consumer(server: Rafka, *args: Any, **kw: Any) -> Any:
            made.append(sync_client.Consumer(*args, host=server.host, port=server.port, **kw))
            return made[-1]

        yield producer, consumer
        for obj in made:
            obj.close()
        return
    loop = asyncio.new_event_loop()

    def aproducer(server: Rafka, **kw: Any) -> Any:
        made.append(Blocking(async_client.Producer(host=server.host, port=server.port, **kw),
                             loop))
        return made[-1]

    def aconsumer(server: Rafka, *args: Any, **kw: Any) -> Any:
        made.append(Blocking(
            async_client.Consumer(*args, host=server.host, port=server.port, **kw), loop))
        return made[-1]

    yield aproducer, aconsumer
    for obj in made:
        obj.close()
    loop.close()


def sync_producer(server: Rafka, **kw: Any) -> sync_client.Producer:
    return sync_client.Producer(host=server.host, port=server.port, **kw)


def produce(make_producer: Make, server: Rafka, topic: str, values: list[str],
            key: str | None = "k") -> None:
    producer = make_producer(server)
    for value in values:
        assert producer.produce(topic, value, key=key) == 1
    assert producer.flush(10_000) == 0
    producer.close()


def first(consumer: Any, timeout: float = 60.0) -> Message:
    """The next message (the first BLPOPs return nil while the group rebalances)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.consume(1)
        if msg is not None:
            return msg  # type: ignore[no-any-return]
    raise AssertionError(f"no message within {timeout}s")


def first_in(cm_factory: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cm = cm_factory()
        value = cm.__enter__()
        if value:
            return cm, value
        cm.__exit__(None, None, None)
    raise AssertionError(f"no message within {timeout}s")


class Boom(Exception):
    pass


def test_produce_and_consume_extended_message(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, ["one", "two"], key="user-7")
    consumer = make_consumer(rafka, kafka_topic, group)
    msg = first(consumer)
    assert (msg.topic, msg.value, msg.key) == (kafka_topic, b"one", b"user-7")
    assert msg.offset >= 0 and msg.partition >= 0
    assert msg.timestamp is not None and abs(msg.timestamp / 1000 - time.time()) < 600
    assert msg.headers == ()
    assert consumer.consume(5).value == b"two"
    started = time.monotonic()
    assert consumer.consume(0.5) is None
    assert time.monotonic() - started < 10


def test_extended_message_carries_kafka_headers(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_broker: Any, kafka_topic: str, group: str
) -> None:
    from confluent_kafka import Producer as KafkaProducer

    _, make_consumer = flavour
    producer = KafkaProducer({"bootstrap.servers": kafka_broker.bootstrap})
    producer.produce(kafka_topic, value=b"v", key=b"k", timestamp=1_700_000_000_123,
                     headers=[("trace", b"t-1"), ("empty", None)])
    assert producer.flush(30) == 0
    msg = first(make_consumer(rafka, kafka_topic, group))
    assert (msg.value, msg.key, msg.timestamp) == (b"v", b"k", 1_700_000_000_123)
    assert msg.headers == (("trace", b"t-1"), ("empty", None))


def test_plain_reply_has_no_key(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, ["x"], key="kk")
    msg = first(make_consumer(rafka, [kafka_topic], group, reply=None))
    assert (msg.value, msg.key, msg.timestamp) == (b"x", None, None)


def test_same_key_same_partition(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, [f"m{i}" for i in range(5)], key="same")
    consumer = make_consumer(rafka, kafka_topic, group)
    msgs = [first(consumer)] + [consumer.consume(5) for _ in range(4)]
    assert [m.value for m in msgs] == [f"m{i}".encode() for i in range(5)]
    assert len({m.partition for m in msgs}) == 1


@pytest.mark.parametrize("form", ["consuming", "callback"])
def test_block_form_acks_only_if_body_returned(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str, form: str
) -> None:
    """rafka-rb's block form: a body that raises leaves the message unacked, so the group
    gets it again; a body that returns acks it."""
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, ["a", "b"])

    def run_body(consumer: Any, body: Callable[[Message], None]) -> Message:
        if form == "callback":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                msg = consumer.consume(1, body)
                if msg is not None:
                    return msg  # type: ignore[no-any-return]
            raise AssertionError("no message")
        cm, msg = first_in(lambda: consumer.consuming(1))
        try:
            body(msg)
        except BaseException as exc:
            cm.__exit__(type(exc), exc, None)
            raise
        cm.__exit__(None, None, None)
        return msg  # type: ignore[no-any-return]

    def boom(msg: Message) -> None:
        raise Boom(msg.value)

    first_consumer = make_consumer(rafka, kafka_topic, group)
    with pytest.raises(Boom, match="a"):
        run_body(first_consumer, boom)
    first_consumer.close()
    second = make_consumer(rafka, kafka_topic, group)
    seen: list[bytes | None] = []
    assert run_body(second, lambda m: seen.append(m.value)).value == b"a"
    assert seen == [b"a"]
    second.close()
    third = make_consumer(rafka, kafka_topic, group)
    assert first(third).value == b"b"


async def test_asyncio_consume_is_a_context_manager_too(
    rafka: Rafka, kafka_topic: str, group: str
) -> None:
    """Issue 14's spelling, ``async with consumer.consume(timeout) as msg``: acked only if
    the body did not raise; ``await consumer.consume(timeout)`` still acks on receipt."""
    produce(sync_producer, rafka, kafka_topic, ["a", "b", "c"])

    def make() -> async_client.Consumer:
        return async_client.Consumer(kafka_topic, group, host=rafka.host, port=rafka.port)

    async def body_of_next(consumer: async_client.Consumer,
                           body: Callable[[Message], None]) -> Message:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with consumer.consume(1) as msg:
                if msg is not None:
                    body(msg)
                    return msg
        raise AssertionError("no message")

    def boom(msg: Message) -> None:
        raise Boom(msg.value)

    consumer = make()
    with pytest.raises(Boom, match="a"):
        await body_of_next(consumer, boom)
    await consumer.close()
    consumer = make()
    seen: list[Message] = []
    assert (await body_of_next(consumer, seen.append)).value == b"a"  # given again
    assert [m.value for m in seen] == [b"a"]
    assert (await consumer.consume(5)).value == b"b"  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        async with consumer.consume(1, seen.append):
            pass
    await consumer.close()
    consumer = make()
    msg = None
    deadline = time.monotonic() + 60
    while msg is None and time.monotonic() < deadline:
        msg = await consumer.consume(1)
    assert msg is not None and msg.value == b"c"  # a and b were acked
    await consumer.close()


def test_two_topics_and_an_explicit_id(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    other = f"{kafka_topic}-2"
    produce(make_producer, rafka, kafka_topic, ["one"])
    produce(make_producer, rafka, other, ["two"])
    consumer = make_consumer(rafka, [kafka_topic, other], group, id="worker-7")
    assert consumer.id == f"{group}:worker-7"
    msgs = [first(consumer), first(consumer)]
    assert sorted((m.topic, m.value) for m in msgs) == [(kafka_topic, b"one"), (other, b"two")]
    # The server knows the connection by that name, its consumer subscribed to both.
    listing = rafka.redis().execute_command("CLIENT", "LIST").decode()
    (line,) = [ln for ln in listing.splitlines() if f" name={group}:worker-7 " in ln]
    assert f"group={group}" in line and f"topics={kafka_topic},{other}" in line


def test_allowed_librdkafka_key_reaches_the_consumer(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    """``auto.offset.reset`` is on rafka's client allowlist (issue 12): ``latest`` makes a
    new group skip what was produced before it joined (the server's own is earliest)."""
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, ["old"])
    latest = make_consumer(rafka, kafka_topic, group,
                           librdkafka={"auto.offset.reset": "latest"})
    producer = make_producer(rafka)
    got = None
    deadline = time.monotonic() + 60
    for i in itertools.count():  # until it is assigned, what is produced may be skipped
        assert time.monotonic() < deadline, "no message"
        assert producer.produce(kafka_topic, f"new{i}", key="k") == 1
        assert producer.flush(10_000) == 0
        got = latest.consume(1)
        if got is not None:
            break
    assert got is not None and got.value.startswith(b"new")
    # The control: another new group without the key starts at the earliest.
    assert first(make_consumer(rafka, kafka_topic, f"{group}-earliest")).value == b"old"


def test_plain_consume_acks_on_receipt_and_manual_commit(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, ["a", "b", "c"])
    manual = make_consumer(rafka, kafka_topic, group, auto_commit=False)
    a = first(manual)
    b = manual.consume(5)
    assert (a.value, b.value) == (b"a", b"b")
    # Only the highest offset per topic and partition is sent (rafka-rb prepare_for_commit).
    assert manual.commit(b, a) == {kafka_topic: {a.partition: b.offset}}
    manual.close()
    auto = make_consumer(rafka, kafka_topic, group)
    assert first(auto).value == b"c"
    auto.close()
    # c was acked on receipt: a new member has nothing left.
    produce(make_producer, rafka, kafka_topic, ["d"])
    assert first(make_consumer(rafka, kafka_topic, group)).value == b"d"


def test_consume_batch(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    produce(make_producer, rafka, kafka_topic, [f"m{i}" for i in range(7)])
    consumer = make_consumer(rafka, kafka_topic, group)
    with pytest.raises(ValueError, match="one of batch_size or batching_max_sec"):
        consumer.consume_batch()
    got: list[Message] = []
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        got = consumer.consume_batch(batch_size=5, timeout=1, batching_max_sec=2)
    while len(got) < 5:
        got += consumer.consume_batch(batch_size=5 - len(got), timeout=1)
    assert [m.value for m in got] == [f"m{i}".encode() for i in range(5)]
    # A raising batch body acks nothing: the group gets m5 and m6 again.
    with pytest.raises(Boom):
        consumer.consume_batch(batch_size=2, timeout=1, callback=lambda msgs: _raise(Boom()))
    consumer.close()
    again = make_consumer(rafka, kafka_topic, group)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 2 and time.monotonic() < deadline:
        with again.consuming_batch(batch_size=2 - len(got), timeout=1,
                                   batching_max_sec=2) as msgs:
            got += msgs
    assert [m.value for m in got] == [b"m5", b"m6"]
    # batching_max_sec bounds an idle batch.
    started = time.monotonic()
    assert again.consume_batch(batching_max_sec=0.5, timeout=5) == []
    assert time.monotonic() - started < 5


def _raise(exc: Exception) -> None:
    raise exc


def test_typed_errors(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str
) -> None:
    make_producer, make_consumer = flavour
    bad = make_consumer(rafka, kafka_topic, group, librdkafka={"foo": "bar"})
    # rafka refuses librdkafka keys outside its client allowlist (issue 12).
    with pytest.raises(ConsumeError, match=r"^Config key not allowed: foo"):
        bad.consume(1)
    # An ack on a connection with no consumer is the server's CONS error, as CommitError.
    idle = make_consumer(rafka, kafka_topic, f"{group}-idle")
    with pytest.raises(CommitError, match=r"^No consumer registered for Client"):
        idle.commit(Message(kafka_topic, 0, 3, b"x"))
    producer = make_producer(rafka)
    # The server splits RPUSHX keys on every ':' (spec §1.5): refused before sending.
    for topic, key in ((f"{kafka_topic}:x", None), (kafka_topic, "a:b"), ("", None)):
        with pytest.raises(ProduceError):
            producer.produce(topic, "v", key=key)
    assert producer.flush(100) == 0
    with pytest.raises(ValueError):
        make_consumer(rafka, "a:b", group)
    with pytest.raises(ValueError):
        make_consumer(rafka, kafka_topic, "g:x")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (as tests/rafka/test_security.py makes)."""
    from tests.support.services import require_binary

    openssl = require_binary("openssl", "apt-get install -y openssl")
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_and_password(
    start_rafka: StartRafka, certificate: tuple[Path, Path], flavour: tuple[Make, Make],
    kafka_topic: str, group: str,
) -> None:
    make_producer, make_consumer = flavour
    cert, key = certificate
    server = start_rafka({"tls_cert": str(cert), "tls_key": str(key), "password": "pw"})
    tls = {"ssl": True, "ssl_cert_reqs": "none", "password": "pw"}
    producer = make_producer(server, **tls)
    assert producer.produce(kafka_topic, "secure", key="k") == 1
    assert producer.flush(10_000) == 0
    msg = first(make_consumer(server, kafka_topic, group, **tls))
    assert (msg.value, msg.key) == (b"secure", b"k")
    wrong = {**tls, "password": "nope"}
    with pytest.raises(redis.AuthenticationError):
        make_producer(server, **wrong).produce(kafka_topic, "x")
    started = time.monotonic()
    with pytest.raises(redis.AuthenticationError):  # not retried like a restart
        make_consumer(server, kafka_topic, group, reconnect_timeout=60, **wrong).consume(1)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("PROD Local: Unknown topic", ProduceError, "Local: Unknown topic"),
        ("CONS Server shutdown", ConsumeError, "Server shutdown"),
        ("Command not supported: GET", sync_client.CommandError, "Command not supported: GET"),
    ],
)
def test_wrap_errors_strips_prefix(text: str, kind: type[Exception], message: str) -> None:
    err = wrap_error(redis.ResponseError(text))
    assert type(err) is kind and str(err) == message


@pytest.mark.parametrize(
    "reply",
    [None, [b"topic"], [b"topic", b"t", b"partition", b"x", b"offset", 1, b"value", b"v"], 42],
    ids=["nil", "short", "partition_not_int", "not_array"],
)
def test_malformed_message(reply: Any) -> None:
    with pytest.raises(MalformedMessageError):
        parse_message(reply, 0)


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    flavour, port, topic, group = sys.argv[1:]
    def body(msg):
        print("GOT", msg.value.decode(), flush=True)
        time.sleep(3600)
    if flavour == "sync":
        from pazari.rafka.client import Consumer
        c = Consumer(topic, group, port=int(port), host="127.0.0.1")
        while c.consume(1, body) is None:
            pass
    else:
        from pazari.rafka.client.asyncio import Consumer
        async def main():
            c = Consumer(topic, group, port=int(port), host="127.0.0.1")
            while await c.consume(1, body) is None:
                pass
        asyncio.run(main())
""")


def test_consumer_killed_in_body_gets_message_redelivered(
    rafka: Rafka, flavour: tuple[Make, Make], kafka_topic: str, group: str,
    request: pytest.FixtureRequest,
) -> None:
    make_producer, make_consumer = flavour
    kind = request.node.callspec.params["flavour"]
    produce(make_producer, rafka, kafka_topic, ["precious"])
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(rafka.port), kafka_topic, group],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "GOT precious"
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    assert first(make_consumer(rafka, kafka_topic, group)).value == b"precious"


def _consumed(server: Rafka) -> float:
    found = re.search(r"^rafka_consumed_messages_total (\S+)$", server.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def _restart_after_sigterm(server: Rafka, daemon_factory: DaemonFactory) -> None:
    server.daemon.send_signal(signal.SIGTERM)
    assert server.daemon.wait_exit(30) == 0
    server.restart(daemon_factory)


@pytest.mark.slow
def test_shutdown_during_batch_reconnects_and_acks_each_once(
    start_rafka: StartRafka, daemon_factory: DaemonFactory, flavour: tuple[Make, Make],
    kafka_topic: str, group: str,
) -> None:
    """`-CONS Server shutdown` in the middle of a batch: the client reconnects, the messages
    of the dead connection go back to the group (never acked, never handed to the body
    twice), and the finished batch is acked once."""
    make_producer, make_consumer = flavour
    server = start_rafka()
    produce(make_producer, server, kafka_topic, [f"m{i}" for i in range(4)])
    consumer = make_consumer(server, kafka_topic, group, reconnect_timeout=60)
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(consumer.consume_batch(batch_size=8, timeout=1))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, name="batch-consumer")
    thread.start()
    try:
        wait_for(lambda: _consumed(server) >= 4, 60, "the batch holds m0..m3")
        _restart_after_sigterm(server, daemon_factory)
        # The asyncio flavour's loop is busy in the thread: produce with the blocking client.
        produce(sync_producer, server, kafka_topic, [f"m{i}" for i in range(4, 8)])
        thread.join(90)
    finally:
        if thread.is_alive():
            server.daemon.send_signal(signal.SIGTERM)
            thread.join(60)
    assert not isinstance(result[0], BaseException), result
    assert [m.value for m in result[0]] == [f"m{i}".encode() for i in range(8)]
    consumer.close()
    produce(make_producer, server, kafka_topic, ["m8"])
    assert first(make_consumer(server, kafka_topic, group)).value == b"m8"


@pytest.mark.slow
def test_shutdown_while_body_runs_never_acks_it(
    start_rafka: StartRafka, daemon_factory: DaemonFactory, flavour: tuple[Make, Make],
    kafka_topic: str, group: str,
) -> None:
    """The server restarts while a body runs: its ack would land on a new connection (a new
    group member), so it is not sent, and the message comes back after the reconnect."""
    make_producer, make_consumer = flavour
    server = start_rafka()
    produce(make_producer, server, kafka_topic, ["only"])
    consumer = make_consumer(server, kafka_topic, group, reconnect_timeout=60)
    cm, msg = first_in(lambda: consumer.consuming(1))
    assert msg.value == b"only"
    _restart_after_sigterm(server, daemon_factory)
    cm.__exit__(None, None, None)
    assert first(consumer).value == b"only"
