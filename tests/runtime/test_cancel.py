"""pazari.runtime.cancel: a stop that cancels its tasks ends even when a task loses a
cancellation (as redis-py 8.0-8.2's asyncio client does inside a command)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from pazari.runtime.cancel import cancel_and_wait


async def _obedient() -> None:
    await asyncio.sleep(3600)


async def _swallows_once() -> None:
    # What a library that eats a CancelledError does to its caller's loop.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)


async def _fails() -> None:
    raise ValueError("boom")


@pytest.mark.parametrize(("body", "warned"), [
    (_obedient, False),
    (_swallows_once, True),
    (_fails, False),
])
async def test_cancel_and_wait_ends_every_task(body: object, warned: bool,
                                               caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.create_task(body(), name="victim")  # type: ignore[operator]
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="pazari.runtime.cancel"):
        await asyncio.wait_for(cancel_and_wait([task]), timeout=10)
    assert task.done()
    assert ("task victim is still running after its cancellation" in caplog.text) is warned
