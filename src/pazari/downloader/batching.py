"""Coalesce per-job work into batches: Redis writes (one script call per batch instead of one
MULTI per job) and file finishing (one worker-thread hop per batch instead of one per job).

Submitters await their own result; the items submitted while a batch is being handled (or
during the loop iteration that submitted the first one) make up the next batch, so batches
grow with the load and a lone item still goes out on the next loop iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: ``handle`` returns one entry per item: a result, or an exception for that item only.
Handler = Callable[[list[T]], Awaitable[list[R | BaseException]]]
#: Called (in the batch's task) with a result whose submitter was cancelled meanwhile.
Orphan = Callable[[R], Awaitable[None]]


class Coalescer(Generic[T, R]):
    """Hand the items submitted together to ``handle`` as one list, at most ``parallel``
    lists at a time and ``max_batch`` items per list."""

    def __init__(self, handle: Handler[T, R], *, max_batch: int = 500, parallel: int = 1,
                 name: str = "batch", orphan: Orphan[R] | None = None) -> None:
        self._handle = handle
        self._orphan = orphan
        self._max_batch = max_batch
        self._parallel = parallel
        self._name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runners: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result (or its exception)."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if len(self._runners) < self._parallel:
            task = asyncio.create_task(self._run(), name=self._name)
            self._runners.add(task)
        return await fut

    async def _run(self) -> None:
        try:
            await self._run_batches()
        finally:
            # Synchronously with the last look at _pending (no await in between): a submit
            # that comes after this starts a new runner instead of waiting on a dead one.
            self._runners.discard(asyncio.current_task())

    async def _run_batches(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            # A cancelled submitter's item is still handled: the work (an outcome write)
            # must not depend on the waiter being alive.
            try:
                results = await self._handle([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:  # every waiter sees the batch's failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    if self._orphan is not None and not isinstance(result, BaseException):
                        await self._orphan(result)
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def drain(self) -> None:
        """Wait until every submitted item has been handled."""
        while self._runners:
            await asyncio.gather(*self._runners, return_exceptions=True)


def isolating(handle: Handler[T, R], errors: tuple[type[Exception], ...]) -> Handler[T, R]:
    """``handle``, except that a batch failing with one of ``errors`` (the server refused
    something, e.g. WRONGTYPE on one job's key) is retried item by item, so that only the
    offending item fails, as it would have without batching. The batched writes are
    idempotent per item, which makes the replay of the items before the failure harmless."""

    async def run(items: list[T]) -> list[R | BaseException]:
        try:
            return await handle(items)
        except errors:
            if len(items) == 1:
                raise
        out: list[R | BaseException] = []
        for item in items:
            try:
                out.extend(await handle([item]))
            except errors as exc:
                out.append(exc)
        return out

    return run
