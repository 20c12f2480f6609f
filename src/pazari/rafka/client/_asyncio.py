"""The asyncio flavour, on ``redis.asyncio.Redis``: ``_sync.py`` with every wait awaited.

Keep the two in step: same names, same arguments, same semantics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from pazari.rafka.client._core import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    CommandError,
    ConsumeError,
    Message,
    check_batch_args,
    client_id,
    connection_options,
    is_shutdown,
    offsets_to_ack,
    parse_batch,
    parse_message,
    produce_key,
    timeout_arg,
    topics_key,
    wrap_error,
)
from pazari.runtime.logs import get_logger

log = get_logger("rafka.client")
T = TypeVar("T")
Callback = Callable[[T], object] | Callable[[T], Awaitable[object]]
_BATCH_COUNT_CAP = 1000


def _redis(host: str, port: int, password: str | None, ssl: bool | None, name: str | None,
           extra: Mapping[str, Any]) -> redis.Redis:
    pool = redis.BlockingConnectionPool(
        max_connections=1, timeout=None,
        connection_class=redis.SSLConnection if ssl else redis.Connection,
        **connection_options(host, port, password, name, extra),
    )  # fmt: skip
    return redis.Redis(connection_pool=pool)


class Producer:
    """rafka-rb ``Rafka::Producer``: RPUSHX to produce, DUMP to flush (spec §1.5)."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 password: str | None = None, ssl: bool | None = None,
                 **redis_options: Any) -> None:
        self.redis = _redis(host, port, password, ssl, None, redis_options)

    async def _cmd(self, *args: Any) -> Any:
        return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def produce(self, topic: str, value: bytes | str, key: str | bytes | None = None,
                      ) -> int:
        """Enqueue one message; the key picks the partition (``topics:<t>:<key>``).

        Producing is asynchronous on the server: delivery errors only show in its stats, or
        as ``ProduceError("Local: Unknown topic")`` on a later produce.
        """
        try:
            return int(await self._cmd("RPUSHX", produce_key(topic, key), value))
        except ResponseError as exc:
            raise wrap_error(exc) from exc

    async def flush(self, timeout_ms: int = 5000) -> int:
        """Wait up to timeout_ms for the server's queue to drain; the number still outstanding."""
        try:
            return int(await self._cmd("DUMP", str(int(timeout_ms))))
        except ResponseError as exc:
            raise wrap_error(exc) from exc

    async def ping(self) -> bool:
        return bool(await self.redis.ping())  # type: ignore[misc, unused-ignore]

    async def close(self) -> None:
        """QUIT: the server flushes this connection's messages (up to 5 s) and closes."""
        with contextlib.suppress(redis.RedisError):
            await self._cmd("QUIT")
        await self.redis.connection_pool.disconnect()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Consumer:
    """rafka-rb ``Rafka::Consumer`` for one group and topic list (spec §4).

    The connection is named ``<group>:<id>`` (CLIENT SETNAME on every connect), and the
    server keeps one Kafka consumer for it. ``-CONS Server shutdown`` (and a lost
    connection) while waiting for messages makes the client reconnect and wait again, for
    up to ``reconnect_timeout`` seconds (rafka-rb 0.5: 15 tries a second apart). Messages
    received on a connection that is gone are never acked: the server committed what was
    acked when it closed, and Kafka hands the rest to the group again.
    """

    def __init__(
        self,
        topic: str | Sequence[str],
        group: str,
        id: str | None = None,
        auto_commit: bool = True,
        librdkafka: Mapping[str, Any] | None = None,
        reply: str | None = "extended",
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        password: str | None = None,
        ssl: bool | None = None,
        reconnect_timeout: float = 15.0,
        **redis_options: Any,
    ) -> None:
        self.id = client_id(group, id)
        self.group = group
        self.auto_commit = auto_commit
        self.blpop_arg = topics_key(topic, librdkafka, reply)
        self.reconnect_timeout = reconnect_timeout
        # Bumped on every connect (and every failure): messages carry the value they came
        # with. redis-py's pool reconnects by itself when it finds the socket closed, so
        # the connect hook is the one place that sees every new connection.
        self._epoch = 0
        self.redis = _redis(host, port, password, ssl, self.id,
                            {"redis_connect_func": self._on_connect, **redis_options})

    async def _cmd(self, *args: Any) -> Any:
        return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def _on_connect(self, connection: Any) -> None:
        self._epoch += 1
        await connection.on_connect_check_health(check_health=True)

    # -- waiting, with rafka-rb's retry on shutdown --------------------------------------

    async def _reset(self) -> None:
        self._epoch += 1
        await self.redis.connection_pool.disconnect()

    async def _blocking(self, command: Callable[[], Awaitable[T]]) -> T:
        deadline: float | None = None
        pause = 0.05
        while True:
            try:
                return await command()
            except ResponseError as exc:
                if not is_shutdown(exc):
                    raise wrap_error(exc) from exc
                why: Exception = exc
            except AuthenticationError:
                raise  # a wrong password does not get better by waiting
            except RedisConnectionError as exc:
                why = exc
            await self._reset()
            now = time.monotonic()
            deadline = deadline or now + self.reconnect_timeout
            if now >= deadline:
                raise ConsumeError(
                    f"no rafka to reconnect to within {self.reconnect_timeout}s: {why}"
                ) from why
            log.info("consumer %s reconnecting: %s", self.id, why)
            await asyncio.sleep(min(pause, max(0.0, deadline - now)))
            pause = min(pause * 2, 1.0)

    async def _consume_one(self, timeout: float) -> Message | None:
        arg = timeout_arg(timeout)
        reply = await self._blocking(
            functools.partial(self._cmd, "BLPOP", self.blpop_arg, arg))
        return None if reply is None else parse_message(reply, self._epoch)

    async def _consume_many(self, batch_size: int, timeout: float, batching_max_sec: float,
                      ) -> list[Message]:
        check_batch_args(batch_size, batching_max_sec)
        start = time.monotonic()
        msgs: list[Message] = []
        while not (batch_size and len(msgs) >= batch_size):
            elapsed = time.monotonic() - start
            if batching_max_sec and elapsed >= batching_max_sec:
                break
            wait = min(timeout, batching_max_sec - elapsed) if batching_max_sec else timeout
            count = batch_size - len(msgs) if batch_size else _BATCH_COUNT_CAP
            args = ("BLMPOP", timeout_arg(max(wait, 0.001)), 1, self.blpop_arg, "LEFT",
                    "COUNT", count)  # fmt: skip
            reply = await self._blocking(functools.partial(self._cmd, *args))
            # After a reconnect the messages of the old connection are the group's again.
            msgs = [m for m in msgs if m._epoch == self._epoch]
            msgs.extend(parse_batch(reply, self._epoch))
        return msgs

    # -- the public API ------------------------------------------------------------------

    def consume(self, timeout: float = 5, callback: Callback[Message] | None = None,
                ) -> Consumption:
        """``await consumer.consume(5)``: the next message, or None after ``timeout``
        seconds (0 waits forever). With ``callback``, it runs first and the message is
        acked only if it returned (rafka-rb's block form); without one, auto_commit acks it
        on receipt.

        ``async with consumer.consume(5) as msg:`` is the block form too: the message (or
        None) is acked only if the body did not raise (as ``consuming``).
        """
        return Consumption(self, timeout, callback)

    async def _consume(self, timeout: float, callback: Callback[Message] | None,
                       ) -> Message | None:
        msg = await self._consume_one(timeout)
        if msg is None:
            return None
        if callback is not None:
            await _run(callback, msg)
        if self.auto_commit:
            await self.commit(msg)
        return msg

    @contextlib.asynccontextmanager
    async def consuming(self, timeout: float = 5) -> AsyncIterator[Message | None]:
        """``async with consumer.consuming(5) as msg:``; acked only if the body did not raise."""
        msg = await self._consume_one(timeout)
        yield msg
        if msg is not None and self.auto_commit:
            await self.commit(msg)

    async def consume_batch(
        self, batch_size: int = 0, timeout: float = 1.0, batching_max_sec: float = 0,
        callback: Callback[list[Message]] | None = None,
    ) -> list[Message]:
        """Up to batch_size messages, or what arrives within batching_max_sec (BLMPOP).

        timeout bounds each wait. With ``callback`` the batch is acked only if it returned.
        """
        msgs = await self._consume_many(batch_size, timeout, batching_max_sec)
        if callback is not None:
            await _run(callback, msgs)
        if self.auto_commit:
            await self.commit(*msgs)
        return msgs

    @contextlib.asynccontextmanager
    async def consuming_batch(
        self, batch_size: int = 0, timeout: float = 1.0, batching_max_sec: float = 0,
    ) -> AsyncIterator[list[Message]]:
        """``async with consumer.consuming_batch(10) as msgs:``; acked only if the body did
        not raise."""
        msgs = await self._consume_many(batch_size, timeout, batching_max_sec)
        yield msgs
        if self.auto_commit:
            await self.commit(*msgs)

    async def commit(self, *msgs: Message) -> dict[str, dict[int, int]]:
        """Ack the highest offset per topic and partition (``RPUSH acks t:p:o``).

        The server stores it and commits it later (auto-commit, close). Messages from a
        connection that is gone are skipped and the result says what was acked.
        """
        # A Message made by hand (epoch 0) is sent as it is, as rafka-rb would.
        live = [m for m in msgs if m._epoch in (0, self._epoch)]
        if len(live) < len(msgs):
            log.warning("consumer %s: not acking %d messages of a closed connection; the "
                        "group receives them again", self.id, len(msgs) - len(live))
        acked: dict[str, dict[int, int]] = {}
        for topic, parts in offsets_to_ack(live).items():
            for partition, offset in parts.items():
                epoch = self._epoch
                try:
                    await self._cmd("RPUSH", "acks", f"{topic}:{partition}:{offset}")
                except (ResponseError, RedisConnectionError) as exc:
                    if isinstance(exc, ResponseError) and epoch in (0, self._epoch):
                        raise wrap_error(exc, commit=True) from exc
                    # The connection the message came through is gone (the RPUSH may
                    # even have reconnected, and a new connection has no consumer).
                    await self._reset()
                    log.warning("consumer %s: connection lost before the ack of %s:%d:%d (%s); "
                                "the group receives it again", self.id, topic, partition,
                                offset, exc)
                    return acked
                acked.setdefault(topic, {})[partition] = offset
        return acked

    async def ping(self) -> bool:
        return bool(await self.redis.ping())  # type: ignore[misc, unused-ignore]

    async def close(self) -> None:
        """Commit the acked offsets (SAVE, where the server has it) and QUIT; the server's
        close commits them too (spec §1.2)."""
        with contextlib.suppress(redis.RedisError, CommandError):
            try:
                await self._cmd("SAVE")
            except ResponseError as exc:
                # The original has no SAVE and a connection without a consumer has nothing
                # to commit; its close still commits.
                log.debug("consumer %s: SAVE: %s", self.id, exc)
            await self._cmd("QUIT")
        await self._reset()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class Consumption:
    """What ``Consumer.consume`` returns: awaitable (the message, acked on receipt with
    auto_commit) and an async context manager (acked when the body returns), as aiohttp's
    ``session.get()`` is both. Issue 14 asks for ``consume(timeout)`` as a context manager:
    only the asyncio flavour can offer it, because only here is the receive deferred until
    the caller says which form it uses; a blocking ``consume`` must return the message
    (or None, which cannot be a context manager) at once, so its block form is
    ``consuming(timeout)``."""

    __slots__ = ("_callback", "_consumer", "_msg", "_timeout")

    def __init__(self, consumer: Consumer, timeout: float,
                 callback: Callback[Message] | None) -> None:
        self._consumer = consumer
        self._timeout = timeout
        self._callback = callback
        self._msg: Message | None = None

    def __await__(self) -> Generator[Any, None, Message | None]:
        return self._consumer._consume(self._timeout, self._callback).__await__()

    async def __aenter__(self) -> Message | None:
        if self._callback is not None:
            raise TypeError("consume() with a callback is not a context manager")
        self._msg = await self._consumer._consume_one(self._timeout)
        return self._msg

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None and self._msg is not None and self._consumer.auto_commit:
            await self._consumer.commit(self._msg)


async def _run(callback: Callback[T], arg: T) -> None:
    result = callback(arg)
    if inspect.isawaitable(result):
        await result
