"""One worker pool per aggregation (spec §3 Worker pool), with ``aggr_limit`` as a real
semaphore: a job is popped only after a slot is held, so the cap is never exceeded, not
even briefly (the original counted workers inside the new goroutine)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from pazari.downloader import store as st
from pazari.downloader.job import Aggregation, Job
from pazari.downloader.ratelimit import TokenBucket
from pazari.runtime import get_logger

#: Seconds a pool stays after its queue ran empty (the original's workers idled 5 s).
IDLE_GRACE = 1.0

if TYPE_CHECKING:
    from pazari.downloader.processor import Processor


class Pool:
    def __init__(self, proc: Processor, aggr: Aggregation) -> None:
        self.proc = proc
        self.aggr = aggr
        self.limit = max(1, aggr.limit)
        self.slots = asyncio.Semaphore(self.limit)
        self.bucket = TokenBucket(aggr.rate) if aggr.rate > 0 else None
        self.active: set[asyncio.Task[None]] = set()
        self.log = get_logger(f"downloader.processor.pool:{aggr.id}")
        self.started = time.monotonic()
        self.downloads = 0

    async def run(self) -> None:
        """Pop and dispatch until the queue has been empty for ``IDLE_GRACE`` s and no
        download is running. The lease is renewed by the processor for all its pools at once
        (a busy aggregation keeps its lease: the original renewed only when idle,
        limitation 4)."""
        try:
            await self._loop()
        except asyncio.CancelledError:
            for t in self.active:
                t.cancel()
            raise
        finally:
            if self.active:
                await asyncio.gather(*self.active, return_exceptions=True)
            self.proc.leased.discard(self.aggr.id)
            try:
                await self.proc.store.release_aggregation(self.aggr.id)
            except RedisError as exc:
                self.log.warning("could not release aggregation: %s", exc)
            self.log.debug("Bye! (lifetime:%.1fs,downloads:%d)",
                           time.monotonic() - self.started, self.downloads)

    async def _loop(self) -> None:
        proc = self.proc
        poll = proc.cfg.poll_interval
        idle_since: float | None = None
        while True:
            wait = proc.aggregation_wait(self.aggr.id)
            if wait > 0:
                await asyncio.sleep(wait)  # a server's Retry-After (processor._failed)
                continue
            n = await self._acquire_slots()
            try:
                jobs = await proc.store.pop_downloads(self.aggr.id, n, proc.cfg.inflight_lease)
            except (st.Empty, st.RetryLater, RedisError) as exc:
                self._release(n)
                if isinstance(exc, st.Empty) and not self.active:
                    # A short grace before closing: jobs trickling in (a client posting
                    # while we download) would otherwise cost a release, a scan and a new
                    # lease per lull. The pops of idle pools share one script call.
                    now = time.monotonic()
                    if idle_since is None:
                        idle_since = now
                    if now - idle_since >= IDLE_GRACE:
                        return
                else:
                    idle_since = None
                if isinstance(exc, RedisError):
                    self.log.warning("pop failed: %s", exc)
                    proc.stats.incr("failures")
                await asyncio.sleep(poll)
                continue
            idle_since = None
            self._release(n - len(jobs))
            for job in jobs:
                self.downloads += 1
                task = asyncio.create_task(self._perform(job))
                self.active.add(task)
                task.add_done_callback(self._done)

    async def _acquire_slots(self) -> int:
        """Wait for one slot (aggregation, then global, then a rate token), then take every
        other slot free right now: one pop fetches as many jobs as may start."""
        proc = self.proc
        await self.slots.acquire()
        await proc.global_slots.acquire()
        if self.bucket is not None:
            await self.bucket.take()
            return 1  # rate-limited: one token, one job
        n = 1
        while not self.slots.locked() and not proc.global_slots.locked():
            await self.slots.acquire()
            await proc.global_slots.acquire()
            n += 1
        return n

    def _release(self, n: int = 1) -> None:
        for _ in range(n):
            self.slots.release()
            self.proc.global_slots.release()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.active.discard(task)
        self._release()

    async def _perform(self, job: Job) -> None:
        proc = self.proc
        proc.started_download(job.id)
        try:
            await proc.perform(job, self.aggr)
        except RedisError as exc:
            # The outcome was not written: the job stays in flight and its lease brings it
            # back (at-least-once), so nothing is lost.
            proc.stats.incr("failures")
            self.log.warning("could not record the outcome of %s: %s", job.id, exc)
        finally:
            proc.finished_download(job.id)
