"""Every Redis key, script and score of the downloader, in one place (spec §2); the hash
encodings are in :mod:`pazari.downloader.codec`, the Lua in :mod:`pazari.downloader.scripts`.

Layout (the original's, so an existing Redis keeps working):

- ``job:<id>`` HASH, fields as in :class:`~pazari.downloader.job.Job`;
- ``aggr:<aggr_id>`` HASH ``ID Limit Proxy ExpiresAt`` (+ ``Rate`` when asked for);
- ``jobs:<aggr_id>`` ZSET, member id, score = unix seconds when eligible;
- ``CallbackQueue`` ZSET, ``JobDeletionQueue`` ZSET (score = now + deletion_interval);
- ``stats:processor`` / ``stats:notifier`` STRING (JSON, TTL 2 * interval).

Added to fix the original's job loss on a crash (limitation 2): ``DownloadsInFlight`` and
``CallbacksInFlight`` ZSETs (member id, score = lease expiry in unix seconds). A pop moves
the id atomically (Lua) from its queue to the in-flight set; finishing removes it in the
same atomic step that writes the outcome; any processor/notifier moves expired entries back.

Per-job writes of concurrent jobs (enqueue, pop, outcome, delivered callback) are coalesced
into one script call per batch (:mod:`pazari.downloader.batching`); each job's writes stay
atomic, a batch is simply several of them in one round trip.
Scores are compared as numbers (the original's Lua compared strings).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, MasterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pazari.downloader import scripts
from pazari.downloader.batching import Coalescer, isolating
from pazari.downloader.codec import (
    decode_aggr,
    decode_hash,
    decode_job,
    encode_aggr,
    encode_job,
    job_pairs,
    outcome_pairs,
    pairs,
    to_str,
)
from pazari.downloader.job import PENDING, Aggregation, Job

CALLBACK_QUEUE = "CallbackQueue"
DELETION_QUEUE = "JobDeletionQueue"
DOWNLOADS_INFLIGHT = "DownloadsInFlight"
CALLBACKS_INFLIGHT = "CallbacksInFlight"
JOBS_PREFIX = "jobs:"
SCAN_COUNT = 1000


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def aggr_key(aggr_id: str) -> str:
    return f"aggr:{aggr_id}"


def jobs_key(aggr_id: str) -> str:
    return f"{JOBS_PREFIX}{aggr_id}"


def stats_key(component: str) -> str:
    return f"stats:{component}"


def now() -> int:
    return int(time.time())


class Empty(Exception):
    """The queue has no member."""


class RetryLater(Exception):
    """The queue's first member is not eligible yet."""


class BeingProcessed(Exception):
    """Another processor holds the aggregation's lease."""


def _raise_pop_error(exc: ResponseError) -> None:
    text = str(exc)
    if text.startswith("EMPTY"):
        raise Empty from None
    if text.startswith("RETRYLATER"):
        raise RetryLater from None
    if text.startswith("BEINGPROCESSED"):
        raise BeingProcessed from None
    raise exc


OUTCOME_RETRIES = 12
#: Errors a failover answers with until a replica has taken over: connection loss, and on
#: Redis Cluster CLUSTERDOWN / TRYAGAIN / MASTERDOWN (issue 16).
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError,
             MasterDownError)


async def _retrying(op: Callable[[], Awaitable[Any]]) -> Any:
    """Run an idempotent outcome write (HSET/ZREM/ZADD/DEL in one MULTI) until Redis takes it,
    for about 20 s: a Redis restart must not turn finished work into a lease expiry and a
    second download (the lease still covers a longer outage)."""
    delay = 0.05
    for attempt in range(OUTCOME_RETRIES):
        try:
            return await op()
        except TRANSIENT:
            if attempt == OUTCOME_RETRIES - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


class Store:
    """The downloader's Redis operations, single-Redis layout (the original's).

    ``Store(client)`` with a Redis Cluster client gives a
    :class:`~pazari.downloader.clusterstore.ClusterStore` (the cluster layout, issue 16),
    chosen here once, so the single layout's methods carry no per-call branch."""

    def __new__(cls, client: aioredis.Redis) -> Store:
        if cls is Store and isinstance(client, RedisCluster):
            from pazari.downloader.clusterstore import ClusterStore

            return super().__new__(ClusterStore)
        return super().__new__(cls)

    def __init__(self, client: aioredis.Redis) -> None:
        self.r = client
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._pop_callbacks = client.register_script(scripts.POP_CALLBACKS)
        self._reclaim_downloads = client.register_script(scripts.RECLAIM_DOWNLOADS)
        self._reclaim_callbacks = client.register_script(scripts.RECLAIM_CALLBACKS)
        self._delaggr = client.register_script(scripts.DELAGGR)
        self._aggrpop = client.register_script(scripts.AGGRPOP)
        self._enqueue_many = client.register_script(scripts.ENQUEUE_MANY)
        self._finish_downloads = client.register_script(scripts.FINISH_DOWNLOADS)
        self._callbacks_delivered = client.register_script(scripts.CALLBACKS_DELIVERED)
        self._pop_downloads_many = client.register_script(scripts.POP_DOWNLOADS_MANY)
        self._renew_aggrs = client.register_script(scripts.RENEW_AGGRS)
        # Concurrent requests/jobs share one script call per batch (see batching.py): the
        # per-job Redis cost was most of the api's, processor's and notifier's CPU.
        # A job whose keys Redis refuses (ResponseError) fails alone, not its whole batch.
        refused = (ResponseError,)
        self._enqueues: Coalescer[list[Any], int] = Coalescer(
            isolating(self._run_enqueues, refused), name="enqueue-batch")
        self._outcomes: Coalescer[list[Any], None] = Coalescer(
            isolating(self._run_outcomes, refused), name="outcome-batch")
        self._deliveries: Coalescer[list[str], None] = Coalescer(
            isolating(self._run_deliveries, refused), name="delivered-batch")
        self._pops: Coalescer[list[str], list[Job]] = Coalescer(
            isolating(self._run_pops, refused), name="pop-batch",
            orphan=self._requeue_orphans)

    async def drain(self) -> None:
        """Wait for every batched write submitted so far (before closing the client)."""
        # Pops first: jobs popped for a pool that was stopped meanwhile are requeued
        # through the outcome batch.
        for batch in (self._pops, self._enqueues, self._outcomes, self._deliveries):
            await batch.drain()

    # ------------------------------------------------------------------------- api
    async def enqueue(self, job: Job, aggr: Aggregation) -> bool:
        """Create the aggregation if absent (a present one keeps its limit and proxy, as in
        the original) and queue the job Pending with score now; True if aggr was created."""
        job.download_state = PENDING
        a = pairs(encode_aggr(aggr))
        created = await self._enqueue(
            keys=[aggr_key(aggr.id), job_key(job.id), jobs_key(job.aggr_id)],
            args=[now(), len(a), *a, *pairs(encode_job(job))],
        )
        return bool(created)

    async def enqueue_new(self, job: Job, aggr: Aggregation) -> int:
        """``enqueue`` for a fresh id, batched with concurrent calls: 1 if the aggregation
        was created, 0 if only the job was queued, -1 if the id is taken (nothing written)."""
        job.download_state = PENDING
        return await self._enqueues.submit(
            [job.id, aggr.id, pairs(encode_aggr(aggr)), job_pairs(job), job.url, job.extra])

    async def _run_enqueues(self, items: list[list[Any]]) -> list[int | BaseException]:
        reply = await self._enqueue_many(args=[orjson.dumps(items), now()])
        return [int(x) for x in reply]

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(job_key(job_id))  # type: ignore[misc, unused-ignore]
        h = {to_str(k): to_str(v) for k, v in raw.items()}
        if not h.get("ID"):
            return None
        return decode_job(h)

    async def save_job(self, job: Job) -> None:
        await self.r.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type, misc, unused-ignore]

    async def queue_callback(self, job: Job, delay: float = 0) -> None:
        async with self.r.pipeline(transaction=True) as p:
            job.callback_state = PENDING
            p.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type, unused-ignore]
            p.zadd(CALLBACK_QUEUE, {job.id: int(time.time() + delay)})
            await p.execute()

    async def aggregation_sizes(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        async for key in self.r.scan_iter(match=f"{JOBS_PREFIX}*", count=SCAN_COUNT):
            name = to_str(key)
            try:
                size = int(await self.r.zcount(name, "-inf", "+inf"))
            except ResponseError:
                size = -1
            out.append((name, size))
        return out

    async def get_stats(self, component: str) -> bytes | None:
        value = await self.r.get(stats_key(component))
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    async def put_stats(self, component: str, doc: dict[str, Any], ttl_ms: int) -> None:
        await self.r.set(stats_key(component), orjson.dumps(doc), px=ttl_ms)

    # ------------------------------------------------------------------- processor
    async def aggregation_ids(self) -> list[str]:
        # The original's SCAN for jobs:* (spec §3). COUNT 1000: the keyspace is mostly job
        # hashes, and at COUNT 50 one scan of 10k keys took 200 round trips (a fifth of the
        # processor's Redis calls in the throughput gate).
        return [to_str(k)[len(JOBS_PREFIX):]
                async for k in self.r.scan_iter(match=f"{JOBS_PREFIX}*", count=SCAN_COUNT)]

    async def lease_aggregation(self, aggr_id: str, lease: int, default_limit: int
                                ) -> Aggregation:
        try:
            flat = await self._aggrpop(keys=[aggr_key(aggr_id)],
                                       args=[now(), lease, default_limit, aggr_id])
        except ResponseError as exc:
            _raise_pop_error(exc)
            raise
        return decode_aggr(decode_hash(flat))

    async def renew_aggregations(self, aggr_ids: list[str], lease: int) -> None:
        """Extend the leases of ``aggr_ids`` (scripts.RENEW_AGGRS: only leases still held)."""
        if aggr_ids:
            await self._renew_aggrs(args=[now() + lease, orjson.dumps(aggr_ids)])

    async def release_aggregation(self, aggr_id: str) -> None:
        """delaggr: delete the hash if the queue drained, else clear the lease so the next
        scan (here or on a peer) can take it at once."""
        await self._delaggr(keys=[jobs_key(aggr_id), aggr_key(aggr_id)])

    async def pop_downloads(self, aggr_id: str, n: int, lease: float) -> list[Job]:
        """Move up to ``n`` eligible jobs to the in-flight set, marked InProgress with their
        DownloadCount incremented (raises Empty/RetryLater when there is none). The pops of
        every pool with free slots right now share one script call."""
        return await self._pops.submit([aggr_id, str(n), str(int(time.time() + lease))])

    async def _requeue_orphans(self, jobs: list[Job]) -> None:
        """Jobs popped for a pool that stopped before taking them: back to their queue,
        the attempt not counted (as a stop does with a running download)."""
        for job in jobs:
            job.download_state = PENDING
            job.download_count = max(0, job.download_count - 1)
        await asyncio.gather(*(self.finish_download(job, requeue_at=time.time(),
                                                    callback=False, deletion_at=None)
                               for job in jobs), return_exceptions=True)

    async def _run_pops(self, items: list[list[str]]) -> list[list[Job] | BaseException]:
        replies = await self._pop_downloads_many(keys=[DOWNLOADS_INFLIGHT],
                                                 args=[now(), orjson.dumps(items)])
        out: list[list[Job] | BaseException] = []
        for reply in replies:
            status = reply[0]
            if status == b"EMPTY":
                out.append(Empty())
            elif status == b"RETRYLATER":
                out.append(RetryLater())
            else:
                out.append([decode_job(decode_hash(flat)) for flat in reply[1:]])
        return out

    async def pop_callbacks(self, n: int, lease: float) -> list[Job]:
        """Move up to ``n`` due callbacks to the in-flight set, marked InProgress with their
        CallbackCount incremented (raises Empty/RetryLater when there is none)."""
        return await self._pop_jobs(self._pop_callbacks, CALLBACK_QUEUE, CALLBACKS_INFLIGHT,
                                    n, lease)

    async def _pop_jobs(self, script: Any, queue: str, inflight: str, n: int, lease: float
                        ) -> list[Job]:
        t = time.time()
        try:
            reply = await script(keys=[queue, inflight], args=[int(t), int(t + lease), n])
        except ResponseError as exc:
            _raise_pop_error(exc)
            raise
        return [decode_job(decode_hash(flat)) for flat in reply]

    async def renew_inflight(self, key: str, ids: Iterable[str], lease: float) -> None:
        until = int(time.time() + lease)
        mapping = {i: until for i in ids}
        if mapping:
            await self.r.zadd(key, mapping, xx=True)

    async def reclaim_downloads(self, limit: int = 500) -> int:
        return int(await self._reclaim_downloads(keys=[DOWNLOADS_INFLIGHT],
                                                 args=[now(), limit]))

    async def finish_download(self, job: Job, *, requeue_at: float | None,
                              callback: bool, deletion_at: float | None) -> None:
        """Write the outcome and leave the in-flight set atomically (one script call shared
        with the concurrent outcomes): requeue (Pending, score ``requeue_at``), or terminal
        with the callback queued, or terminal without callback scheduled for deletion."""
        if callback and requeue_at is None:
            job.callback_state = PENDING
        target, score = "", 0
        if requeue_at is not None:
            # Rounded up: a job never becomes eligible before it was asked to (Retry-After).
            target, score = jobs_key(job.aggr_id), math.ceil(requeue_at)
        elif callback:
            target, score = CALLBACK_QUEUE, now()
        elif deletion_at is not None:
            target, score = DELETION_QUEUE, int(deletion_at)
        await self._outcomes.submit([job.id, outcome_pairs(job), target, str(score)])

    async def _run_outcomes(self, items: list[list[Any]]) -> list[BaseException | None]:
        body = orjson.dumps(items)
        await _retrying(lambda: self._finish_downloads(keys=[DOWNLOADS_INFLIGHT], args=[body]))
        return [None] * len(items)

    async def pop_deletion(self) -> str:
        """Reaper pop (spec §3 Reaper): raises Empty/RetryLater."""
        t = now()
        try:
            # The deletion queue needs no lease: a lost delete is retried by nobody in the
            # original either; here the id is popped only after the file is gone (see reaper).
            top: list[Any] = await self.r.zrange(DELETION_QUEUE, 0, 0, withscores=True)
        except ResponseError as exc:
            _raise_pop_error(exc)
            raise
        if not top:
            raise Empty
        member, score = top[0]
        if float(score) > t:
            raise RetryLater
        return to_str(member)

    async def drop_deleted(self, job_id: str) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.zrem(DELETION_QUEUE, job_id)
            p.delete(job_key(job_id))
            await p.execute()

    # -------------------------------------------------------------------- notifier
    async def reclaim_callbacks(self, limit: int = 500) -> int:
        return int(await self._reclaim_callbacks(
            keys=[CALLBACKS_INFLIGHT, CALLBACK_QUEUE], args=[now(), limit]))

    async def callback_delivered(self, job_id: str, deletion_at: float) -> None:
        """spec §4: delete the hash and schedule the file for deletion."""
        await self._deliveries.submit([job_id, str(int(deletion_at))])

    async def _run_deliveries(self, items: list[list[str]]) -> list[BaseException | None]:
        body = orjson.dumps(items)
        await _retrying(lambda: self._callbacks_delivered(
            keys=[CALLBACKS_INFLIGHT, DELETION_QUEUE], args=[body]))
        return [None] * len(items)

    async def callback_outcome(self, job: Job, retry_at: float | None) -> None:
        """Save a failed (terminal) or retried callback and leave the in-flight set."""
        await _retrying(lambda: self._callback_outcome(job, retry_at))

    async def _callback_outcome(self, job: Job, retry_at: float | None) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type, unused-ignore]
            p.zrem(CALLBACKS_INFLIGHT, job.id)
            if retry_at is not None:
                p.zadd(CALLBACK_QUEUE, {job.id: int(retry_at)})
            await p.execute()
