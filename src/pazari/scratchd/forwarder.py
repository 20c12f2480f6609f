"""Forwarders: one task per sink reads the spool from that sink's cursor and delivers the
records of the tenants routed to it (spec "Persistence"). A failing sink retries with
exponential backoff and only grows its own lag: the others read on independently.

One bad tenant cannot stop the others (issue 12): once a batch has failed ``max_attempts``
times the forwarder isolates it, per tenant (per record when the batch has one tenant). If
nothing gets through and the backend does not answer ``Sink.ping`` either, the sink is down:
back off and retry, the spool grows, nothing is set aside. Otherwise the sink is up and
what it still rejects after ``max_attempts`` more tries goes to the sink's dead-letter file
(``deadletter.py``) and the cursor moves on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter

from pazari.runtime.logs import get_logger
from pazari.scratchd import deadletter
from pazari.scratchd.sinks.base import Sink
from pazari.scratchd.spool import Record, Spool
from pazari.scratchd.stats import SinkStats

log = get_logger("scratchd.forwarder")

READ_BYTES = 1 << 20
_TENANT = attrgetter("tenant")
# A forwarder that caught up waits this long before reading again, so that it delivers the
# events of many group commits at once instead of waking for each (the commits of the pixel
# benchmark come every few hundred microseconds; one read + one sink call each showed as
# ~12% of the process in the profile). Issue 17: at 5 ms the forwarder (a spool read, a
# sink write and a flush per wake-up, each taking the GIL from the pixel path) was still 8%
# of the pixel benchmark's samples; 20 ms delivers ~4x the events per wake-up, and delivery
# latency stays well under the cursor interval (200 ms).
COALESCE = 0.02


class Forwarder:
    def __init__(self, sink: Sink, spool: Spool, tenants: set[str], stats: SinkStats) -> None:
        self.sink = sink
        self.name = sink.name
        self.spool = spool
        self.tenants = tenants
        self.stats = stats
        self.cursor = spool.cursors[sink.name]
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        # Lag in events (issue 12): records past the cursor when we started, plus those
        # written since, minus those read past (delivered, dead-lettered or not routed here).
        self._backlog = spool.count_records(self.cursor, spool.end)
        self._written_base = spool.events_written
        self._passed = 0
        stats.lag = self.lag

    def lag(self) -> tuple[int, int]:
        """(bytes, events) in the spool this sink has not processed yet."""
        spool = self.spool
        events = self._backlog + spool.events_written - self._written_base - self._passed
        return spool.end - self.cursor, max(events, 0)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"forward-{self.name}")

    async def run(self) -> None:
        while not (self.stopping and self.cursor >= self.spool.end):
            records = self.spool.read(self.cursor, READ_BYTES)
            if not records:
                if self.stopping:
                    return
                if self.cursor < self.spool.end:  # only a partial record: never spin
                    await asyncio.sleep(0.01)
                await self.spool.wait_beyond(self.cursor, 0.5)
                continue
            mine = [r for r in records if r.tenant in self.tenants]
            batch = max(1, self.sink.config.batch)
            for i in range(0, len(mine), batch):
                await self._deliver(mine[i:i + batch])
                self.cursor = mine[min(i + batch, len(mine)) - 1].end
            self.cursor = records[-1].end
            self._passed += len(records)
            self.stats.lag_bytes = self.spool.end - self.cursor
            if not self.stopping and self.cursor >= self.spool.end:
                await asyncio.sleep(COALESCE)

    async def _deliver(self, chunk: Sequence[Record]) -> None:
        config = self.sink.config
        delay = config.retry_initial
        attempts = 0
        while True:
            try:
                await self.sink.deliver(chunk)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                attempts += 1
                if config.max_attempts and attempts >= config.max_attempts:
                    if await self._isolate(chunk, str(exc)):
                        return
                    attempts = 0  # nothing got through: an outage, not a bad record
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.retry_max)
                continue
            self._delivered(chunk)
            return

    def _failed(self, exc: BaseException) -> None:
        self.stats.failures += 1
        if self.stats.up:
            log.warning("sink %s: delivery failed, retrying: %s", self.name, exc)
        self.stats.up = False
        self.stats.lag_bytes = self.spool.end - self.cursor

    def _delivered(self, chunk: Sequence[Record]) -> None:
        if not self.stats.up:
            log.info("sink %s: delivering again", self.name)
        self.stats.up = True
        delivered = self.stats.delivered
        for tenant, n in Counter(map(_TENANT, chunk)).items():
            delivered[tenant] += n

    async def _isolate(self, chunk: Sequence[Record], error: str) -> bool:
        """Deliver ``chunk`` in parts (module docstring). False: nothing got through (the
        sink is down); True: every record was delivered or set aside as a dead letter."""
        config = self.sink.config
        parts: list[list[Record]] = []
        for _, run in groupby(chunk, _TENANT):
            parts.append(list(run))
        if len(parts) == 1 and len(chunk) > 1:
            parts = [[r] for r in chunk]
        rejected: list[list[Record]] = []
        for part in parts:
            try:
                await self.sink.deliver(part)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failures += 1
                rejected.append(part)
                error = str(exc)
                continue
            self._delivered(part)
        if len(rejected) == len(parts):
            try:
                await self.sink.ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("sink %s: down (%s), not the records", self.name, exc)
                return False
        aside: list[tuple[list[Record], str]] = []
        for part in rejected:
            for _ in range(max(config.max_attempts - 1, 0)):
                await asyncio.sleep(config.retry_initial)
                try:
                    await self.sink.deliver(part)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stats.failures += 1
                    error = str(exc)
                    continue
                self._delivered(part)
                break
            else:
                aside.append((part, error))
        if aside:
            # One append for the whole chunk, all or nothing: a part written before a
            # failed one would be set aside again by the next round.
            try:
                await asyncio.to_thread(deadletter.append_parts, self.spool.dir, self.name,
                                        aside)
            except OSError as exc:
                # Not set aside (a full disk): the cursor must not pass them; the next
                # round tries again, the spool keeps them meanwhile.
                log.error("sink %s: cannot write dead letters: %s", self.name, exc)
                return False
            for part, why in aside:
                self.stats.dead_letters += len(part)
                log.error("sink %s: %d event(s) of tenant %s rejected %d times, set aside in "
                          "%s: %s", self.name, len(part), part[0].tenant, config.max_attempts,
                          deadletter.path_for(self.spool.dir, self.name).name, why)
        return True

    async def drain(self, deadline: float) -> bool:
        """Deliver everything spooled until ``deadline`` (monotonic); True when caught up."""
        self.stopping = True
        if self.task is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            log.warning("sink %s: %d bytes left undelivered at shutdown (kept in the spool)",
                        self.name, self.spool.end - self.cursor)
            return False
        return True


async def persist_loop(spool: Spool, forwarders: Sequence[Forwarder], interval: float) -> None:
    """Every ``interval``: sync each sink that moved, then persist its cursor."""
    while True:
        await asyncio.sleep(interval)
        await persist_once(spool, forwarders)


async def persist_once(spool: Spool, forwarders: Sequence[Forwarder]) -> None:
    moved = False
    for fwd in forwarders:
        target = fwd.cursor
        if target == spool.cursors.get(fwd.name):
            continue
        try:
            await fwd.sink.sync()
        except Exception as exc:
            log.warning("sink %s: sync failed: %s", fwd.name, exc)
            continue
        spool.cursors[fwd.name] = target
        moved = True
    if moved:
        try:
            await asyncio.to_thread(spool.write_cursors)
        except OSError as exc:
            # A full or failing disk: the cursors stay where they were persisted (at worst a
            # restart delivers some events again) and the next round tries again.
            log.warning("cursors not persisted: %s", exc)
        spool.drop_segments()
