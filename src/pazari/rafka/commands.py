"""The command table (spec §1.2 - §1.6, and the issue's additions).

A handler takes the connection and the arguments (command name removed) and either writes
its reply to ``conn.writer`` and returns None, or returns an awaitable that writes it later
(the commands that wait on Kafka). Error texts are the original's, byte for byte.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pazari.rafka import RAFKA_COMPAT_VERSION
from pazari.rafka.config import client_key_allowed, to_librdkafka
from pazari.rafka.consumer import ConsumeError, Consumer, Shutdown, client_list
from pazari.rafka.goparse import GoParseError, decode_config_map, parse_int
from pazari.rafka.producer import ProduceError, Producer, QueueFull, kafka_text

if TYPE_CHECKING:
    from pazari.rafka.connection import Connection

Args = list[bytes]
Handler = Callable[["Connection", Args], Awaitable[None] | None]

SHUTDOWN = b"CONS Server shutdown"
REPLY_EXTENDED = "rafka.reply"


def dispatch(conn: Connection, command: list[bytes | None]) -> Awaitable[None] | None:
    if not command:
        conn.command = "empty"
        # `*-1` / `*0`: the original dereferenced a nil command and crashed (spec §1.1).
        conn.error(b"ERR Protocol error: empty command")
        return None
    name = (command[0] or b"").upper()
    # A null bulk argument arrives as nil; Go turned it into "" (spec §1.1).
    args = [a if a is not None else b"" for a in command[1:]]
    stats = conn.server.stats
    handler = TABLE.get(name)
    if handler is None:
        conn.command = "unknown"
        stats.commands["unknown"] += 1
        conn.error(b"Command not supported: " + name)
        return None
    conn.command = _LABELS[name]
    stats.commands[conn.command] += 1
    if not conn.authenticated and name not in _NO_AUTH:
        conn.error(b"NOAUTH Authentication required.")
        return None
    return handler(conn, args)


# -- connection identity (spec §1.2) -------------------------------------------------------


def client(conn: Connection, args: Args) -> None:
    sub = args[0].upper() if args else b""
    w = conn.writer
    if sub == b"SETNAME":
        # The original read only argument 2 (command.Get(2)): a missing name is "" (so
        # `Cannot parse group.id`) and extra arguments are ignored.
        error = set_name(conn, args[1].decode("utf-8", "replace") if len(args) > 1 else "")
        if error:
            conn.error(error.encode())
        else:
            w.bulk(b"OK")  # a bulk string, not +OK (spec §1.2)
    elif sub == b"GETNAME":
        w.bulk(conn.client_id.encode())
    elif sub == b"SETINFO":
        # redis-py >= 5 sends CLIENT SETINFO LIB-NAME/LIB-VER on connect.
        w.simple(b"OK")
    elif sub == b"ID":
        w.integer(id(conn) & 0x7FFFFFFF)
    elif sub == b"LIST":
        w.bulk(client_list(conn.server.connections).encode())
    else:
        conn.error(b"Command not supported: " + sub)


def set_name(conn: Connection, new_id: str) -> str | None:
    """CLIENT SETNAME (and HELLO SETNAME); returns the error text, or None on success."""
    server = conn.server
    if new_id in server.clients:
        return f"CONS id {new_id} is already taken"
    if conn.named:
        return f"CONS Client ID is already set to {conn.client_id}"
    if ":" not in new_id:
        return "CONS Cannot parse group.id"
    server.rename(conn, new_id)
    conn.named = True
    return None


def hello(conn: Connection, args: Args) -> None:
    w = conn.writer
    proto = 3 if w.resp3 else 2
    i = 0
    if args:
        try:
            proto = int(args[0])
        except ValueError:
            conn.error(b"ERR Protocol version is not an integer or out of range")
            return
        if proto not in (2, 3):
            conn.error(b"NOPROTO unsupported protocol version")
            return
        i = 1
    name: str | None = None
    while i < len(args):
        opt = args[i].upper()
        if opt == b"AUTH" and i + 2 < len(args):
            if not _check_password(conn, args[i + 2]):
                conn.error(_WRONGPASS)
                return
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(args):
            name = args[i + 1].decode("utf-8", "replace")
            i += 2
        else:
            conn.error(b"ERR Syntax error in HELLO option '" + args[i] + b"'")
            return
    if not conn.authenticated:
        conn.error(b"NOAUTH HELLO must be called with the client already authenticated, "
                b"otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                b"authenticate the client and select the RESP protocol version at the same time")
        return
    if name is not None:
        error = set_name(conn, name)
        if error:
            conn.error(error.encode())
            return
    w.resp3 = proto == 3
    fields: list[tuple[bytes, Any]] = [
        (b"server", b"rafka"),
        (b"version", RAFKA_COMPAT_VERSION.encode()),
        (b"proto", proto),
        (b"id", id(conn) & 0x7FFFFFFF),
        (b"mode", b"standalone"),
        (b"role", b"master"),
        (b"modules", []),
    ]
    w.map(len(fields))
    for key, value in fields:
        w.bulk(key)
        if isinstance(value, int):
            w.integer(value)
        elif isinstance(value, list):
            w.array(0)
        else:
            w.bulk(value)


_WRONGPASS = b"WRONGPASS invalid username-password pair or user is disabled."


def _check_password(conn: Connection, given: bytes) -> bool:
    expected = conn.server.options.password
    if expected is None:
        return False
    ok = hmac.compare_digest(given, expected.encode())
    conn.authenticated = conn.authenticated or ok
    return ok


def auth(conn: Connection, args: Args) -> None:
    w = conn.writer
    if not args or len(args) > 2:
        conn.error(b"ERR wrong number of arguments for 'auth' command")
    elif conn.server.options.password is None:
        conn.error(b"ERR AUTH <password> called without any password configured for the default "
                b"user. Are you sure your configuration is correct?")
    elif _check_password(conn, args[-1]):
        w.simple(b"OK")
    else:
        conn.error(_WRONGPASS)


# -- consuming (spec §1.3) -----------------------------------------------------------------


class _TopicsKey:
    def __init__(self, topics: list[str], conf: dict[str, Any], extended: bool) -> None:
        self.topics = topics
        self.conf = conf
        self.extended = extended


#: The process-wide caches (parsed BLPOP keys, RPUSHX routes) keep no key longer than this
#: and at most CACHE_ENTRIES keys each, so a client inventing keys costs at most a few MB
#: (issue 12: a 32 MB key was kept for ever).
CACHE_KEY_MAX = 1024
CACHE_ENTRIES = 4096


def remember(cache: dict[Any, Any], key: bytes, value: Any) -> None:
    """Keep ``key`` in a process-wide cache, within CACHE_KEY_MAX and CACHE_ENTRIES."""
    if len(key) > CACHE_KEY_MAX:
        return
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def _parse_topics_key(conn: Connection, arg: bytes) -> _TopicsKey | str:
    """Parse the BLPOP key; valid keys are remembered (clients repeat the same one)."""
    cache = conn.server.topic_keys
    cached = cache.get(arg)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    parsed = _parse_topics_key_text(arg)
    if isinstance(parsed, _TopicsKey):
        remember(cache, arg, parsed)
    return parsed


def _parse_topics_key_text(arg: bytes) -> _TopicsKey | str:
    text = arg.decode("utf-8", "replace")
    parts = text.split(":", 2)
    if len(parts) < 2 or parts[0] != "topics" or any(t == "" for t in parts[1].split(",")):
        return f"CONS Cannot parse topics from `{text}`"
    conf: dict[str, Any] = {}
    if len(parts) == 3 and parts[2]:
        # Decoded as the original did (json.NewDecoder + UseNumber into a kafka.ConfigMap):
        # Go's error texts, the first value only, numbers kept as written.
        try:
            first, kind = decode_config_map(parts[2])
        except GoParseError as exc:
            return f"CONS Error parsing configuration from '{parts[2]}'; {exc}"
        if kind == "object":
            conf = json.loads(first, parse_int=str, parse_float=str)
    extended = conf.pop(REPLY_EXTENDED, None) == "extended"
    return _TopicsKey(parts[1].split(","), conf, extended)


def _timeout(conn: Connection, raw: bytes | None) -> float | None:
    """BLPOP timeout in seconds; floats accepted, 0 (or less) waits forever.

    The original took whole seconds with Atoi, fell back to 5 s on anything else, and
    crashed on 0 (spec §1.3). None means no timeout.
    """
    default = conn.server.options.blpop_default_timeout
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    if value != value or value in (float("inf"), float("-inf")):
        return default
    return None if value <= 0 else value


def _consumer_for(conn: Connection, key: _TopicsKey) -> Consumer | str:
    server = conn.server
    if server.stopping.is_set():
        return SHUTDOWN.decode()
    if not conn.named:
        return "CONS Connection not ready. Identify yourself using `CLIENT SETNAME` first"
    cid = f"{conn.client_id}|{','.join(key.topics)}"
    if conn.consumer is not None:
        if conn.consumer.cid != cid:
            return (f"CONS Client '{conn.client_id}' has Consumer '{conn.consumer.cid}' "
                    f"registered (new consID: '{cid}')")
        return conn.consumer
    allow = server.options.client_config_allow
    for k in key.conf:
        if not client_key_allowed(k, allow):
            return f"CONS Config key not allowed: {k}"
    group, _, rest = conn.client_id.partition(":")
    conf = dict(server.consumer_conf)
    for k, v in key.conf.items():
        conf[k] = to_librdkafka(v)
    conf["group.id"] = group
    conf["client.id"] = rest.split(":")[0]
    if server.options.static_membership:
        conf["group.instance.id"] = rest
    try:
        consumer = Consumer(cid, key.topics, conf, server.stats, server.options.prefetch,
                            key.extended, server.options.assignment_timeout)
    except Exception as exc:
        server.log.info("consumer %s failed: %s", cid, exc)
        return f"CONS Failed to register Consumer '{cid}' for Client '{conn.client_id}'"
    conn.consumer = consumer
    server.on_consumer(conn)
    return consumer


def _consumer_from_key(conn: Connection, raw_key: bytes) -> Consumer | None:
    """The connection's consumer for a `topics:...` key; None once the error is replied."""
    key = _parse_topics_key(conn, raw_key)
    consumer = key if isinstance(key, str) else _consumer_for(conn, key)
    if isinstance(consumer, str):
        _consume_error(conn, consumer)
        return None
    return consumer


def blpop(conn: Connection, args: Args) -> Awaitable[None] | None:
    if not args:
        conn.error(b"ERR wrong number of arguments for 'blpop' command")
        return None
    consumer = _consumer_from_key(conn, args[0])
    if consumer is None:
        return None
    # A message already at hand is answered at once, without a task (the common case of a
    # busy topic: BLPOP + ack round trips).
    try:
        msg = consumer.take_ready()
    except ConsumeError as exc:
        _consume_error(conn, f"CONS Poll {exc}")
        return None
    if msg is not None:
        conn.server.stats.consumed += 1
        _write_message(conn, consumer, msg)
        return None
    return _blpop(conn, consumer, _timeout(conn, args[-1] if len(args) > 1 else None))


async def _blpop(conn: Connection, consumer: Consumer, timeout: float | None) -> None:
    try:
        msg = await consumer.next_message(timeout, conn.server.stopping)
    except Shutdown:
        _consume_error(conn, SHUTDOWN.decode())
        return
    except ConsumeError as exc:
        _consume_error(conn, f"CONS Poll {exc}")
        return
    if msg is None:
        conn.writer.null_array()
        return
    conn.server.stats.consumed += 1
    _write_message(conn, consumer, msg)


def _write_message(conn: Connection, consumer: Consumer, msg: Any) -> None:
    w = conn.writer
    topic = msg.topic().encode()
    if not consumer.extended:
        w.message(topic, msg.partition(), msg.offset(), msg.value())
        return
    w.array(14)
    for name, value in ((b"topic", topic),):
        w.bulk(name)
        w.bulk(value)
    w.bulk(b"partition")
    w.integer(msg.partition())
    w.bulk(b"offset")
    w.integer(msg.offset())
    w.bulk(b"value")
    w.bulk(msg.value())
    w.bulk(b"key")
    w.bulk(msg.key())
    w.bulk(b"timestamp")
    _, ts = msg.timestamp()
    w.integer(ts)
    w.bulk(b"headers")
    headers = msg.headers() or []
    w.array(2 * len(headers))
    for hk, hv in headers:
        w.bulk(hk.encode() if isinstance(hk, str) else hk)
        w.bulk(hv)


def blmpop(conn: Connection, args: Args) -> Awaitable[None] | None:
    """``BLMPOP <timeout> 1 topics:<t>[:<json>] LEFT|RIGHT [COUNT n]``: up to n messages."""
    if len(args) < 4:
        conn.error(b"ERR wrong number of arguments for 'blmpop' command")
        return None
    try:
        timeout = float(args[0])
        numkeys = int(args[1])
    except ValueError:
        conn.error(b"ERR timeout is not a float or out of range")
        return None
    if timeout < 0:
        conn.error(b"ERR timeout is negative")
        return None
    if numkeys != 1:
        conn.error(b"ERR rafka serves exactly one topics key per BLMPOP (numkeys must be 1)")
        return None
    rest = args[3:]
    if not rest or rest[0].upper() not in (b"LEFT", b"RIGHT"):
        conn.error(b"ERR syntax error")
        return None
    count = 1
    if len(rest) == 3 and rest[1].upper() == b"COUNT":
        try:
            count = int(rest[2])
        except ValueError:
            count = 0
        if count < 1:
            conn.error(b"ERR count should be greater than 0")
            return None
    elif len(rest) != 1:
        conn.error(b"ERR syntax error")
        return None
    consumer = _consumer_from_key(conn, args[2])
    if consumer is None:
        return None
    return _blmpop(conn, consumer, args[2], None if timeout == 0 else timeout, count)


async def _blmpop(
    conn: Connection, consumer: Consumer, key: bytes, timeout: float | None, count: int
) -> None:
    try:
        batch = await consumer.next_batch(count, timeout, conn.server.stopping)
    except Shutdown:
        _consume_error(conn, SHUTDOWN.decode())
        return
    except ConsumeError as exc:
        _consume_error(conn, f"CONS Poll {exc}")
        return
    w = conn.writer
    if not batch:
        w.null_array()
        return
    conn.server.stats.consumed += len(batch)
    w.array(2)
    w.bulk(key)
    w.array(len(batch))
    for msg in batch:
        _write_message(conn, consumer, msg)


def _consume_error(conn: Connection, text: str) -> None:
    conn.server.stats.consume_errors += 1
    conn.error(text.encode())


# -- acks (spec §1.4) ----------------------------------------------------------------------


def rpush(conn: Connection, args: Args) -> None:
    w = conn.writer
    stats = conn.server.stats
    if not args or args[0].upper() != b"ACKS":
        stats.ack_errors += 1
        conn.error(b"CONS You can only RPUSH to the 'acks' key")
        return
    # A missing value is "" to the original (command.Get(2)): `Cannot parse ack: ''`.
    for raw in args[1:] or [b""]:
        error = _ack(conn, raw.decode("utf-8", "replace"))
        if error:
            stats.ack_errors += 1
            conn.error(error.encode())
            return
    w.integer(1)


def _ack(conn: Connection, value: str) -> str | None:
    parts = value.split(":", 2)
    if len(parts) != 3:
        return f"CONS Cannot parse ack: '{value}'"
    try:
        partition = parse_int(parts[1], 10, 32)
        offset = parse_int(parts[2], 0, 64)
    except GoParseError as exc:
        return f"CONS {exc}"
    if conn.consumer is None:
        return f"CONS No consumer registered for Client {conn.client_id}"
    if offset + 1 < 0:
        return f"CONS offset cannot be negative, got {offset + 1}"
    try:
        conn.consumer.store(parts[0], partition, offset + 1)
    except Exception as exc:
        return f"CONS {kafka_text(exc)}"
    conn.server.stats.acks += 1
    return None


def save(conn: Connection, args: Args) -> Awaitable[None] | None:
    """SAVE: commit the stored offsets synchronously (beyond the original)."""
    if conn.consumer is None:
        conn.error(f"CONS No consumer registered for Client {conn.client_id}".encode())
        return None
    return _save(conn, conn.consumer)


async def _save(conn: Connection, consumer: Consumer) -> None:
    try:
        await consumer.commit()
    except Exception as exc:
        conn.error(f"CONS {kafka_text(exc)}".encode())
        return
    conn.writer.simple(b"OK")


# -- producing (spec §1.5) -----------------------------------------------------------------


def rpushx(conn: Connection, args: Args) -> Awaitable[None] | None:
    w = conn.writer
    stats = conn.server.stats
    if len(args) != 2:
        stats.produce_errors += 1
        conn.error(f"PROD RPUSHX accepts 2 arguments, got {len(args)}".encode())
        return None
    parts = args[0].split(b":")
    if len(parts) not in (2, 3):
        stats.produce_errors += 1
        conn.error(b"PROD First argument must be in the form of 'topics:<topic>' or "
                b"'topics:<topic>:<key>'")
        return None
    producer = conn.producer or conn.server.producer_for(conn)
    if isinstance(producer, str):
        stats.produce_errors += 1
        conn.error(f"PROD Error spawning producer: {producer}".encode())
        return None
    topic = parts[1].decode("utf-8", "replace")
    key = parts[2] if len(parts) == 3 else None
    try:
        producer.produce(topic, args[1], key, conn.on_delivery)
    except QueueFull:
        # Backpressure instead of the original's immediate `-PROD Local: Queue full`: this
        # connection waits (its later commands stay parked) while librdkafka drains.
        return _rpushx_when_room(conn, producer, args[0], topic, args[1], key)
    except ProduceError as exc:
        stats.produce_errors += 1
        conn.error(f"PROD {exc}".encode())
        return None
    remember(conn.server.routes, args[0], (topic, key))
    _count_produced(conn, producer)
    w.integer(1)
    return None


def _count_produced(conn: Connection, producer: Producer) -> None:
    conn.server.stats.produced += 1
    if producer.tracked:
        conn.unreported += 1
    else:
        conn.untracked_sent += 1


async def _rpushx_when_room(
    conn: Connection, producer: Producer, target: bytes, topic: str, value: bytes,
    key: bytes | None,
) -> None:
    stats = conn.server.stats
    deadline = time.monotonic() + conn.server.options.queue_full_timeout
    while True:
        # librdkafka signals no "room again" event; its queue drains in milliseconds.
        await asyncio.sleep(0.002)
        try:
            producer.produce(topic, value, key, conn.on_delivery)
        except QueueFull as exc:
            if time.monotonic() < deadline:
                continue
            stats.produce_errors += 1
            conn.error(f"PROD {exc}".encode())
            return
        except ProduceError as exc:
            stats.produce_errors += 1
            conn.error(f"PROD {exc}".encode())
            return
        remember(conn.server.routes, target, (topic, key))
        _count_produced(conn, producer)
        conn.writer.integer(1)
        return


RPUSHX_NAMES = frozenset({b"RPUSHX", b"rpushx", b"RPushX", b"Rpushx"})


def dump(conn: Connection, args: Args) -> Awaitable[None] | None:
    w = conn.writer
    if conn.producer is None:
        w.integer(0)
        return None
    if len(args) != 1:
        conn.error(f"PROD DUMP accepts 1 argument, got {len(args)}".encode())
        return None
    try:
        timeout_ms = int(args[0])
    except ValueError:
        conn.error(b"PROD NaN")
        return None
    return _dump(conn, max(timeout_ms, 0) / 1000)


async def _dump(conn: Connection, timeout: float) -> None:
    producer = conn.producer
    assert producer is not None
    if conn.server.options.producers == "per-connection":
        conn.writer.integer(await producer.flush(timeout))
        return
    # A shared producer holds every connection's messages: count only this one's (the
    # original had a producer per connection, so a client looping until DUMP answers 0
    # finished while others kept producing). From its first DUMP on, the connection
    # produces on the tracked producer, which reports each delivery.
    untracked = producer if not producer.tracked else None
    if untracked is not None:
        conn.track_deliveries()
    deadline = time.monotonic() + timeout
    while True:
        if untracked is not None:
            untracked.poll()
        conn.server.tracked_producer().poll()
        left = conn.unreported + _untracked_left(conn, untracked)
        if left == 0 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(0.005, max(deadline - time.monotonic(), 0)))
    conn.writer.integer(left)


def _untracked_left(conn: Connection, untracked: Producer | None) -> int:
    """This connection's messages sent before its first DUMP and maybe still queued: they
    are settled once the untracked producer finished as many messages as it had accepted
    at that DUMP (librdkafka reports no successes there; its queue drains in order)."""
    if not conn.untracked_sent:
        return 0
    producer = untracked or conn.server.shared_producer
    if producer is None:
        return 0
    behind = conn.untracked_barrier - producer.finished()
    if behind <= 0:
        conn.untracked_sent = 0
        return 0
    return min(conn.untracked_sent, behind)


def keys(conn: Connection, args: Args) -> Awaitable[None] | None:
    arg = args[0] if args else b""
    if arg != b"topics:":  # further arguments are ignored, as in the original
        conn.error(b"ERR Expected argument to be 'topics:', got " + arg)
        return None
    producer = conn.producer or conn.server.producer_for(conn)
    if isinstance(producer, str):
        conn.error(f"ERR Error spawning producer: {producer}".encode())
        return None
    return _keys(conn)


async def _keys(conn: Connection) -> None:
    assert conn.producer is not None
    loop = asyncio.get_running_loop()
    try:
        topics = await loop.run_in_executor(None, conn.producer.list_topics, 0.1)
    except Exception as exc:
        conn.error(f"ERR Error getting metadata: {kafka_text(exc)}".encode())
        return
    conn.writer.bulk_array([b"topics:" + t.encode() for t in topics])


# -- generic (spec §1.6) -------------------------------------------------------------------


def ping(conn: Connection, args: Args) -> None:
    conn.writer.simple(b"PONG")


def quit_(conn: Connection, args: Args) -> None:
    # Release the id before replying, so a client that reconnects at once can take it back
    # (spec §1.2).
    conn.server.release(conn)
    conn.writer.bulk(b"OK")
    conn.flush()
    conn.close()


def _stats_key(conn: Connection, args: Args) -> bool:
    key = args[0].upper() if args else b""
    if key != b"STATS":
        conn.error(b"ERR Expected key to be 'stats', got " + key)
        return False
    return True


def hgetall(conn: Connection, args: Args) -> None:
    if not _stats_key(conn, args):
        return
    w = conn.writer
    counters = conn.server.stats.original()
    w.map(len(counters))  # a flat array of 6 bulks in RESP2, a map in RESP3
    for name, value in counters:
        w.bulk(name)
        w.bulk(str(value).encode())


def del_(conn: Connection, args: Args) -> None:
    if not _stats_key(conn, args):
        return
    conn.server.stats.reset_original()
    conn.writer.integer(1)


def monitor(conn: Connection, args: Args) -> None:
    if args:
        conn.error(b"ERR command 'monitor' does not accept any extra arguments")
        return
    conn.writer.simple(b"OK")
    conn.server.add_monitor(conn)


def _command(conn: Connection, args: Args) -> None:
    # redis-cli asks `COMMAND DOCS` on start; an empty answer keeps it quiet.
    conn.writer.array(0)


TABLE: dict[bytes, Handler] = {
    b"CLIENT": client,
    b"HELLO": hello,
    b"AUTH": auth,
    b"BLPOP": blpop,
    b"BLMPOP": blmpop,
    b"RPUSH": rpush,
    b"SAVE": save,
    b"RPUSHX": rpushx,
    b"DUMP": dump,
    b"KEYS": keys,
    b"PING": ping,
    b"QUIT": quit_,
    b"HGETALL": hgetall,
    b"DEL": del_,
    b"MONITOR": monitor,
    b"COMMAND": _command,
}
_LABELS = {name: name.decode().lower() for name in TABLE}
_NO_AUTH = frozenset({b"AUTH", b"HELLO", b"QUIT"})
