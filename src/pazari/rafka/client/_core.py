"""What both flavours share: messages, errors, the commands' arguments and reply shapes.

Everything here is pure (no I/O), so the sync and asyncio clients cannot drift apart: they
differ only in how they wait. The semantics are rafka-rb's (spec §4), ported from
skroutz/rafka-rb 0.5.0 ``lib/rafka.rb`` and ``lib/rafka/consumer.rb``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

#: rafka-rb's REDIS_DEFAULTS: rafka listens on 6380, not Redis' 6379.
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 6380

#: rafka-rb's RETRIABLE_ERRORS (0.5.0, PR #27): a restarting server answers this to every
#: waiting BLPOP and then closes the connection.
SHUTDOWN_TEXT = "CONS Server shutdown"


class RafkaError(Exception):
    """Base of every error this client raises (rafka-rb ``Rafka::Error``)."""


class MalformedMessageError(RafkaError):
    """A BLPOP/BLMPOP reply that is not a rafka message."""

    def __init__(self, reply: object) -> None:
        super().__init__(f"The message {reply!r} could not be parsed")
        self.reply = reply


class CommandError(RafkaError):
    """An error reply without a known prefix (rafka-rb ``Rafka::CommandError``)."""


class ProduceError(CommandError):
    """A ``PROD`` error reply (prefix stripped), or a produce the server would misroute."""


class ConsumeError(CommandError):
    """A ``CONS`` error reply to BLPOP/BLMPOP (prefix stripped), or shutdown retries spent."""


class CommitError(ConsumeError):
    """An ack (``RPUSH acks``) the server refused; a ConsumeError, as in rafka-rb."""


def wrap_error(exc: ResponseError, commit: bool = False) -> CommandError:
    """rafka-rb ``Rafka.wrap_errors``: the prefix picks the type and is stripped."""
    text = str(exc)
    if text.startswith("PROD "):
        return ProduceError(text[5:])
    if text.startswith("CONS "):
        return CommitError(text[5:]) if commit else ConsumeError(text[5:])
    return CommitError(text) if commit else CommandError(text)


def is_shutdown(exc: ResponseError) -> bool:
    return str(exc) == SHUTDOWN_TEXT


@dataclass(frozen=True)
class Message:
    """One consumed message. key, timestamp (ms) and headers need ``reply="extended"``."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    # The connection this message came through: an ack is only meaningful on it (a new
    # connection is a new server-side consumer, which may not own the partition).
    _epoch: int = field(default=0, repr=False, compare=False)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_message(reply: Any, epoch: int) -> Message:
    """A Message from the 8-element (or extended 14-element) BLPOP reply."""
    if isinstance(reply, Mapping):
        fields = {_text(k): v for k, v in reply.items()}
    elif isinstance(reply, (list, tuple)) and len(reply) in (8, 14):
        fields = {_text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    else:
        raise MalformedMessageError(reply)
    try:
        headers_raw = fields.get("headers") or []
        if isinstance(headers_raw, Mapping):
            headers_raw = [x for kv in headers_raw.items() for x in kv]
        headers = tuple(
            (_text(headers_raw[i]), headers_raw[i + 1]) for i in range(0, len(headers_raw), 2)
        )
        ts = fields.get("timestamp")
        return Message(
            topic=_text(fields["topic"]),
            partition=int(fields["partition"]),
            offset=int(fields["offset"]),
            value=fields["value"],
            key=fields.get("key"),
            timestamp=None if ts is None else int(ts),
            headers=headers,
            _epoch=epoch,
        )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise MalformedMessageError(reply) from exc


def parse_batch(reply: Any, epoch: int) -> list[Message]:
    """The messages of a BLMPOP reply ``[key, [msg, ...]]`` (None on timeout)."""
    if reply is None:
        return []
    if not isinstance(reply, (list, tuple)) or len(reply) != 2:
        raise MalformedMessageError(reply)
    items = reply[1]
    if not isinstance(items, (list, tuple)):
        raise MalformedMessageError(reply)
    return [parse_message(item, epoch) for item in items]


def topics_key(topics: str | Sequence[str], librdkafka: Mapping[str, Any] | None,
               reply: str | None) -> str:
    """The BLPOP key: ``topics:<t1>[,<t2>][:<json>]`` (spec §1.3; rafka-rb ``blpop_arg``)."""
    names = [topics] if isinstance(topics, str) else list(topics)
    if not names or any(not t or ":" in t or "," in t for t in names):
        raise ValueError(f"bad topic list {names!r}: names must be non-empty, without : or ,")
    conf = dict(librdkafka or {})
    if reply is not None:
        if reply != "extended":
            raise ValueError(f"reply must be 'extended' or None, not {reply!r}")
        conf["rafka.reply"] = reply
    key = "topics:" + ",".join(names)
    if conf:
        key += ":" + json.dumps(conf, separators=(",", ":"))
    return key


def produce_key(topic: str, key: str | bytes | None) -> str:
    """The RPUSHX key. The server splits on every ``:`` (spec §1.5), so a topic or key with
    one would be misrouted: refuse it here rather than produce to the wrong place."""
    if not topic or ":" in topic:
        raise ProduceError(f"invalid topic {topic!r}: must be non-empty, without ':'")
    if key is None:
        return f"topics:{topic}"
    text = key.decode() if isinstance(key, bytes) else key
    if ":" in text:
        raise ProduceError(f"invalid key {text!r}: must not contain ':'")
    return f"topics:{topic}:{text}"


def client_id(group: str, id: str | None) -> str:
    """``<group>:<id>`` (rafka-rb: ``SecureRandom.hex`` when no id is given)."""
    if not group or ":" in group:
        raise ValueError(f"bad group {group!r}: must be non-empty, without ':'")
    return f"{group}:{id or secrets.token_hex(16)}"


def offsets_to_ack(msgs: Iterable[Message]) -> dict[str, dict[int, int]]:
    """rafka-rb ``prepare_for_commit``: the highest offset per topic and partition."""
    tp: dict[str, dict[int, int]] = {}
    for msg in msgs:
        parts = tp.setdefault(msg.topic, {})
        if msg.offset >= parts.get(msg.partition, -1):
            parts[msg.partition] = msg.offset
    return tp


def check_batch_args(batch_size: int, batching_max_sec: float) -> None:
    if batch_size < 0 or batching_max_sec < 0:
        raise ValueError("batch_size and batching_max_sec must not be negative")
    if batch_size == 0 and batching_max_sec == 0:
        raise ValueError("one of batch_size or batching_max_sec must be greater than 0")


def connection_options(
    host: str, port: int, password: str | None, name: str | None, extra: Mapping[str, Any],
) -> dict[str, Any]:
    """redis-py connection options shared by both flavours.

    Each client holds one connection (a blocking pool of one, so it connects lazily, as
    redis-rb does), because rafka keeps the consumer and its group membership on the
    connection. redis-py's own retries are off: re-sending an ack or a produce on a new
    connection behind the caller's back would hide what the caller must know.
    socket_timeout is None so a BLPOP may block as long as its own timeout says; pass one
    to bound it.
    """
    options: dict[str, Any] = {
        "host": host, "port": port, "password": password, "client_name": name,
        "protocol": 2, "retry": Retry(NoBackoff(), 0), "socket_timeout": None,
        "socket_connect_timeout": 10.0, "driver_info": None,
    }  # fmt: skip
    options.update(extra)
    return options


def timeout_arg(seconds: float) -> str:
    """A BLPOP/BLMPOP timeout: whole seconds as an integer (what the original parses),
    fractions as a float (pazari); never rounded down to 0, which blocks forever."""
    if seconds < 0:
        raise ValueError(f"timeout must not be negative, got {seconds}")
    if seconds == int(seconds):
        return str(int(seconds))
    return f"{max(seconds, 0.001):.3f}"
