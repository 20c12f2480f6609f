"""Pure-Python twin of the compiled RPUSHX hot path (ext/rafka/_fastpath.pyx)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def produce_run(
    batch: list[Any],
    i: int,
    names: frozenset[bytes],
    routes: dict[bytes | None, tuple[str, bytes | None]],
    produce: Callable[[str, bytes, bytes | None], object],
    reply: Callable[[int], object],
) -> int:
    """Produce the run of RPUSHX commands from ``batch[i]``; the index where it stopped."""
    n = len(batch)
    i = max(i, 0)
    while i < n:
        command = batch[i]
        if command.__class__ is not list or len(command) != 3 or command[0] not in names:
            break
        route = routes.get(command[1])
        value = command[2]
        if route is None or value is None:
            break
        try:
            produce(route[0], value, route[1])
        except BaseException:
            break
        reply(1)
        i += 1
    return i
