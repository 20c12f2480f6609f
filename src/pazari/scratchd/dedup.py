"""Drop events a client sent twice (the browser tracker resends what it could not confirm).

An event that carries ``event_id`` (a client-made id, 8-64 characters) is recorded once per
tenant within ``window`` seconds: a resend of an id already spooled in that window is
skipped, neither accepted nor rejected. The memory is bounded (oldest ids go first), per
process: with ``--workers N`` a resend that lands on another worker is not caught, and the
sinks keep at-least-once delivery, so consumers should still de-duplicate by id.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

FIELD = "event_id"
WINDOW = 600.0
MAX_IDS = 200_000


class RecentIds:
    """Ids seen within the window, oldest first."""

    def __init__(self, window: float = WINDOW, max_ids: int = MAX_IDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.max_ids = max_ids
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    @staticmethod
    def key_of(tenant: str, item: dict[str, Any]) -> tuple[str, str] | None:
        value = item.get(FIELD)
        if type(value) is not str or not 8 <= len(value) <= 64:
            return None
        return tenant, value

    def seen(self, key: tuple[str, str]) -> bool:
        self._expire()
        return key in self._seen

    def remember(self, keys: list[tuple[str, str]]) -> None:
        now = self.clock()
        for key in keys:
            self._seen[key] = now
            self._seen.move_to_end(key)
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)

    def _expire(self) -> None:
        cutoff = self.clock() - self.window
        while self._seen:
            key, stamp = next(iter(self._seen.items()))
            if stamp >= cutoff:
                return
            del self._seen[key]
