"""``downloader notifier`` (spec §4): pops callbacks into an in-flight set with a lease,
delivers them over HTTP or Kafka, retries with backoff, and on delivery deletes the job hash
and schedules the file for deletion. At-least-once: a crashed notifier's callbacks are
reclaimed when their lease expires."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from pazari.downloader import store as st
from pazari.downloader.backends import Backend, DeliveryError, build
from pazari.downloader.config import Config, test_time
from pazari.downloader.job import FAILED, PENDING, SUCCESS, Job
from pazari.downloader.redisconn import connect_config
from pazari.downloader.signing import Secrets, signature
from pazari.downloader.stats import Stats, report_loop
from pazari.runtime import Service, get_logger
from pazari.runtime.cancel import cancel_and_wait

log = get_logger("downloader.notifier")

GATHER_SLOTS = 25  # freed delivery slots worth one pop
GATHER_WAIT = 0.005  # seconds a pop waits for more slots to free


class NotifierService(Service):
    name = "downloader-notifier"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.cfg = config.notifier
        self.stats = Stats("notifier")
        self.stats.register(self.registry)
        self.backends: dict[str, Backend] = {}
        self.secrets = Secrets(self.cfg.signing_secrets)
        self.store: st.Store | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.inflight: set[str] = set()
        self.deliveries: set[asyncio.Task[None]] = set()
        self.backoff_unit = 0.2 if test_time() else self.cfg.retry_backoff
        # Free delivery slots, and the event that wakes the dispatcher when enough are free.
        self._free = self.cfg.concurrency
        self._gather_at = max(1, min(GATHER_SLOTS, self.cfg.concurrency // 4))
        self._room = asyncio.Event()  # a slot is free
        self._enough = asyncio.Event()  # _gather_at slots are free

    async def start(self) -> None:
        for name, settings in self.config.enabled_backends().items():
            backend = build(name, settings, self.cfg)
            await backend.start()
            self.backends[name] = backend
        self.store = st.Store(connect_config(self.config.redis, "notifier",
                                         20 + self.cfg.concurrency))
        # Named: /debug/pprof/tasks and the race checker list tasks by name (issue 13).
        self.tasks = [asyncio.create_task(self._dispatcher(), name="notifier-dispatcher"),
                      asyncio.create_task(self._keeper(), name="notifier-keeper"),
                      asyncio.create_task(report_loop(self.stats, self.store,
                                                      self.cfg.stats_interval),
                                          name="notifier-report-loop")]

    async def stop(self) -> None:
        await cancel_and_wait([*self.tasks, *self.deliveries])
        for backend in self.backends.values():
            try:
                await backend.stop()
            except Exception as exc:
                log.error("backend stop: %s", exc)
        if self.store is not None:
            await self.store.drain()
            await self.store.r.aclose()

    def vars(self) -> Mapping[str, Any]:
        return {"Notifier": self.stats.snapshot()}

    async def _keeper(self) -> None:
        """Renew our leases; move expired ones (a crashed peer's) back to the queue."""
        assert self.store is not None
        lease = self.cfg.inflight_lease
        while True:
            try:
                await self.store.renew_inflight(st.CALLBACKS_INFLIGHT, list(self.inflight),
                                                lease)
                n = await self.store.reclaim_callbacks()
                if n:
                    log.info("Queued %d rogue callbacks", n)
            except RedisError as exc:
                log.warning("lease keeper: %s", exc)
            await asyncio.sleep(min(1.0, lease / 3))

    async def _dispatcher(self) -> None:
        """One poller: pops as many due callbacks as there are free workers (``concurrency``
        deliveries at most), so an idle notifier costs one Redis call per poll interval.
        Freed slots are gathered into one pop (up to GATHER_SLOTS of them, or whatever is
        free after GATHER_WAIT): a pop per finished callback cost more than the callback."""
        assert self.store is not None
        while True:
            if self._free == 0:
                self._room.clear()
                await self._room.wait()
            if self._free < self._gather_at:
                self._enough.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GATHER_WAIT):
                        await self._enough.wait()
            n = self._free
            try:
                jobs = await self.store.pop_callbacks(n, self.cfg.inflight_lease)
            except (st.Empty, st.RetryLater, RedisError) as exc:
                if isinstance(exc, RedisError):
                    log.warning("pop failed: %s", exc)
                await asyncio.sleep(self.cfg.poll_interval)
                continue
            except Exception:
                # A popped hash that does not decode (a malformed field written by another
                # client): the only poller must not die of it, or every callback stops
                # while the daemon looks healthy (issue 11). The batch's callbacks come
                # back when their lease expires.
                log.exception("pop failed")
                await asyncio.sleep(self.cfg.poll_interval)
                continue
            self._free -= len(jobs)
            for job in jobs:
                self.inflight.add(job.id)
                task = asyncio.create_task(self._deliver(job))
                self.deliveries.add(task)
                task.add_done_callback(functools.partial(self._delivered, job.id))

    def _delivered(self, job_id: str, task: asyncio.Task[None]) -> None:
        self.deliveries.discard(task)
        self.inflight.discard(job_id)
        self._free += 1
        self._room.set()
        if self._free >= self._gather_at:
            self._enough.set()

    async def _deliver(self, job: Job) -> None:
        try:
            await self._deliver_callback(job)
        except RedisError as exc:
            # The outcome was not written; the lease brings the callback back.
            log.warning("callback %s: %s", job.id, exc)
        except Exception as exc:
            # Anything else is a bug or a job nobody anticipated (a malformed field written
            # by another client, a destination some parser chokes on). Left alone it would
            # end this task and keep the callback in CallbacksInFlight, reclaimed and raised
            # again with no end (RECLAIM_CALLBACKS has no cap): fail it instead, not
            # retriably (the same job raises the same way), naming the error, as the
            # processor's perform does for downloads (issue 11).
            self.stats.incr("internalCallbackErrors")
            log.exception("unexpected error while delivering the callback of %s", job.id)
            try:
                await self._mark_failed(
                    job, f"Error while delivering callback, {type(exc).__name__}: {exc}")
            except RedisError as redis_exc:
                log.warning("callback %s: %s", job.id, redis_exc)

    async def _deliver_callback(self, job: Job) -> None:
        """spec §4 per job; CallbackCount/InProgress were set by the pop."""
        assert self.store is not None
        if job.download_state not in (SUCCESS, FAILED):
            await self._mark_failed(job, f"Invalid job download state: '{job.download_state}'")
            return
        kind, dst = job.destination()
        backend = self.backends.get(kind)
        if backend is None:
            self.stats.incr("undefinedBackendWithCallback")
            await self._retry_or_fail(job, f"Undefined backend {kind} for job {job}")
            return
        payload = job.callback_payload()
        headers = {}
        secret = self.secrets.for_destination(dst)
        if secret is not None:
            ts = int(time.time())
            headers[self.cfg.timestamp_header] = str(ts)
            headers[self.cfg.signature_header] = signature(secret, ts, payload)
        try:
            await backend.notify(dst, payload, headers)
        except DeliveryError as exc:
            if "Unknown topic or partition" in str(exc):
                self.stats.incr("unknownTopicOrPartition")
            log.warning("Warn: Callback try no:%d failed for job:%s with: %s",
                        job.callback_count, job.id, exc)
            await self._retry_or_fail(job, str(exc))
            return
        self.stats.incr("successfulCallbacks")
        minutes = self.cfg.deletion_interval
        await self.store.callback_delivered(job.id, time.time() + minutes * 60)

    async def _retry_or_fail(self, job: Job, error: str) -> None:
        assert self.store is not None
        if job.callback_count >= self.cfg.max_attempts:
            await self._mark_failed(job, error)
            return
        job.callback_state = PENDING
        job.callback_meta = error
        delay = job.callback_count * self.backoff_unit
        await self.store.callback_outcome(job, retry_at=time.time() + delay)

    async def _mark_failed(self, job: Job, error: str) -> None:
        assert self.store is not None
        log.error("Error: Callback for %s failed: %s", job, error)
        self.stats.incr("failedCallbacks")
        job.callback_state = FAILED
        job.callback_meta = error
        await self.store.callback_outcome(job, retry_at=None)
