"""Cancel tasks and wait for them, again and again if a cancellation gets lost.

redis-py 8.0-8.2's asyncio client can swallow a task's cancellation inside a command: a loop
cancelled while it waits on Redis goes on running (measured: 100-150 of 300 cancelled
``await r.get(...)`` loops, against 0 of 300 on 7.4.1). A daemon's stop that cancelled its
loops once and gathered them then waited for ever (make test-race: the downloader processor
and notifier hung at SIGTERM about 1 run in 12). redis-py 7.4.1 has no such bug but fails
the cluster failover (NOSCRIPT on a promoted replica), so the stop copes instead: a task
still running ``RECANCEL_EVERY`` seconds after its cancel is cancelled again, and named in
the log, so the lost cancellation stays visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from pazari.runtime.logs import get_logger

log = get_logger("runtime.cancel")

RECANCEL_EVERY = 2.0  # longer than any cleanup a cancelled task awaits (a shielded requeue)


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and return once every one has ended (their results and exceptions
    retrieved); a task that swallowed its cancellation is cancelled again."""
    tasks = list(tasks)  # walked twice: a generator would be empty the second time
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        for task in pending:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.warning("task %s is still running after its cancellation: cancelling again",
                        name)
            task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: its end is the stop's business, not an error
