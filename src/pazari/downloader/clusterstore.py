"""The store on Redis Cluster (issue 16): the operations of
:class:`pazari.downloader.store.Store` on the sharded keys of
:mod:`pazari.downloader.layout`.

A batch of concurrent jobs (enqueues, pops, outcomes, deliveries) becomes one script call
per shard it touches, sent concurrently; a process-wide set is read or reclaimed shard by
shard. A job this process popped keeps its shard in ``_shard_of`` until its outcome is
written, so the id-only calls of the processor and notifier (lease renewal, delivered
callback, reaper) need no lookup.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from pazari.downloader import scripts
from pazari.downloader.batching import isolating
from pazari.downloader.codec import (
    decode_aggr,
    decode_hash,
    decode_job,
    encode_aggr,
    encode_job,
    outcome_pairs,
    pairs,
    to_str,
)
from pazari.downloader.job import PENDING, Aggregation, Job
from pazari.downloader.layout import DEFAULT_SHARDS, ClusterLayout
from pazari.downloader.store import (
    DOWNLOADS_INFLIGHT,
    JOBS_PREFIX,
    BeingProcessed,
    Empty,
    RetryLater,
    Store,
    _raise_pop_error,
    _retrying,
    now,
)

T = TypeVar("T")

#: How long an enqueue waits for a replica to acknowledge it (WAIT 1), milliseconds.
WAIT_MS = 200
R = TypeVar("R")


class ClusterStore(Store):
    """:class:`Store` on the cluster layout; made by ``Store(cluster_client)``."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.cluster = cast(RedisCluster, client)
        self.layout = ClusterLayout(int(getattr(client, "shards", DEFAULT_SHARDS)))
        self._shard_of: dict[str, int] = {}
        self._cursor = 0  # the shard the next callback or deletion pop starts at
        reg = client.register_script
        self._c_enqueue = reg(scripts.C_ENQUEUE)
        self._c_enqueue_many = reg(scripts.C_ENQUEUE_MANY)
        self._c_aggregations = reg(scripts.C_AGGREGATIONS)
        self._c_pop_downloads = reg(scripts.C_POP_DOWNLOADS_MANY)
        self._c_finish_downloads = reg(scripts.C_FINISH_DOWNLOADS)
        self._c_reclaim_downloads = reg(scripts.C_RECLAIM_DOWNLOADS)
        self._c_renew_aggrs = reg(scripts.C_RENEW_AGGRS)
        self._c_pop_callbacks = reg(scripts.C_POP_CALLBACKS)
        self._c_reclaim_callbacks = reg(scripts.C_RECLAIM_CALLBACKS)
        self._c_callbacks_delivered = reg(scripts.C_CALLBACKS_DELIVERED)
        self._c_queue_callback = reg(scripts.C_QUEUE_CALLBACK)
        self._c_callback_outcome = reg(scripts.C_CALLBACK_OUTCOME)
        self._c_drop_deleted = reg(scripts.C_DROP_DELETED)

    @property
    def _all(self) -> range:
        return range(self.layout.shards)

    async def _per_shard(self, items: list[T], shard: Callable[[T], int],
                         run: Callable[[int, list[T]], Awaitable[list[R | BaseException]]]
                         ) -> list[R | BaseException]:
        """``run`` once per shard on that shard's items, concurrently; results in item order.
        A shard whose call fails fails its own items only; a refused item (ResponseError)
        fails alone, as in the single layout (batching.isolating)."""
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(shard(item), []).append(i)

        async def one(k: int, idx: list[int]) -> list[R | BaseException]:
            def handle(its: list[T]) -> Awaitable[list[R | BaseException]]:
                return run(k, its)

            return await isolating(handle, (ResponseError,))([items[i] for i in idx])

        results = await asyncio.gather(*(one(k, idx) for k, idx in groups.items()),
                                       return_exceptions=True)
        out: list[R | BaseException] = [AssertionError("unset")] * len(items)
        for idx, res in zip(groups.values(), results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                for i in idx:
                    out[i] = res
            else:
                for i, r in zip(idx, res, strict=True):
                    out[i] = r
        return out

    async def _each_shard(self, call: Callable[[int], Awaitable[R]]) -> list[R]:
        return list(await asyncio.gather(*(call(k) for k in self._all)))

    async def _find_shard(self, job_id: str) -> int | None:
        """The shard holding ``job_id``'s hash: all shards asked in one pipeline."""
        pipe = self.r.pipeline()
        for k in self._all:
            pipe.exists(self.layout.job(k, job_id))
        found = await pipe.execute()
        return next((k for k, n in zip(self._all, found, strict=True) if n), None)

    # ------------------------------------------------------------------------- api
    async def enqueue(self, job: Job, aggr: Aggregation) -> bool:
        job.download_state = PENDING
        lay, k = self.layout, self.layout.shard(job.aggr_id)
        a = pairs(encode_aggr(aggr))
        created = await self._c_enqueue(
            keys=[lay.aggr(k, aggr.id), lay.job(k, job.id), lay.jobs(k, job.aggr_id),
                  lay.index(k)],
            args=[now(), job.aggr_id, len(a), *a, *pairs(encode_job(job))])
        return bool(created)

    async def _run_enqueues(self, items: list[list[Any]]) -> list[int | BaseException]:
        t = now()
        await self.cluster.initialize()  # the slot map, for the WAIT's node

        async def run(k: int, its: list[list[Any]]) -> list[int | BaseException]:
            key, body = self.layout.index(k), orjson.dumps(its)

            async def once() -> Any:
                # WAIT on the connection that wrote (one pipeline to the slot's master):
                # the api answers 201 once a replica has the jobs, so a master crashing
                # right after loses no acknowledged job (replication is asynchronous).
                # A slot with no live replica in the topology has nothing to wait for; a
                # replica that does not answer costs WAIT_MS, and the enqueue goes on.
                if self.cluster.get_node_from_key(key, replica=True) is None:
                    return await self._c_enqueue_many(keys=[key], args=[body, t])
                pipe = self.r.pipeline()
                pipe.execute_command("EVAL", scripts.C_ENQUEUE_MANY, 1, key, body, t)
                pipe.execute_command("WAIT", 1, WAIT_MS,
                                     target_nodes=self.cluster.get_node_from_key(key))
                return (await pipe.execute())[0]

            for attempt in range(3):
                try:
                    return [int(x) for x in await _retrying(once)]
                except ResponseError as exc:
                    # The slot moved (a failover) between our slot map and the WAIT: the
                    # jobs were written (EVAL followed the redirect); refresh and replay,
                    # which ENQUEUE_MANY answers as our own write.
                    if "WAIT cannot be used with replica" not in str(exc) or attempt == 2:
                        raise
                    await self.cluster.nodes_manager.initialize()
            raise AssertionError("unreachable")

        return await self._per_shard(items, lambda it: self.layout.shard(it[1]), run)

    async def get_job(self, job_id: str) -> Job | None:
        k = self._shard_of.get(job_id)
        shards: Sequence[int] = self._all if k is None else [k]
        pipe = self.r.pipeline()
        for k in shards:
            pipe.hgetall(self.layout.job(k, job_id))
        for raw in await pipe.execute():
            h = {to_str(a): to_str(b) for a, b in raw.items()}
            if h.get("ID"):
                return decode_job(h)
        return None

    async def save_job(self, job: Job) -> None:
        key = self.layout.job(self.layout.shard(job.aggr_id), job.id)
        await self.r.hset(key, mapping=encode_job(job))  # type: ignore[arg-type, misc, unused-ignore]

    async def queue_callback(self, job: Job, delay: float = 0) -> None:
        job.callback_state = PENDING
        lay, k = self.layout, self.layout.shard(job.aggr_id)
        await self._c_queue_callback(
            keys=[lay.job(k, job.id), lay.callback_queue(k)],
            args=[int(time.time() + delay), job.id, *pairs(encode_job(job))])

    async def aggregation_sizes(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for k, ids in zip(self._all, await self._each_shard(self._aggregations), strict=True):
            if not ids:
                continue
            pipe = self.r.pipeline()
            for aggr_id in ids:
                pipe.zcard(self.layout.jobs(k, aggr_id))
            sizes = await pipe.execute(raise_on_error=False)
            out.extend((f"{JOBS_PREFIX}{aggr_id}", -1 if isinstance(n, Exception) else int(n))
                       for aggr_id, n in zip(ids, sizes, strict=True))
        return out

    # ------------------------------------------------------------------- processor
    async def _aggregations(self, k: int) -> list[str]:
        return [to_str(x) for x in await self._c_aggregations(keys=[self.layout.index(k)])]

    async def aggregation_ids(self) -> list[str]:
        return [a for ids in await self._each_shard(self._aggregations) for a in ids]

    async def lease_aggregation(self, aggr_id: str, lease: int, default_limit: int
                                ) -> Aggregation:
        key = self.layout.aggr(self.layout.shard(aggr_id), aggr_id)
        try:
            flat = await self._aggrpop(keys=[key], args=[now(), lease, default_limit, aggr_id])
        except ResponseError as exc:
            if str(exc).startswith("BEINGPROCESSED"):
                raise BeingProcessed from None
            raise
        return decode_aggr(decode_hash(flat))

    async def renew_aggregations(self, aggr_ids: list[str], lease: int) -> None:
        until = now() + lease

        async def run(k: int, ids: list[str]) -> list[BaseException | None]:
            await self._c_renew_aggrs(keys=[self.layout.index(k)],
                                      args=[until, orjson.dumps(ids)])
            return [None for _ in ids]

        for res in await self._per_shard(aggr_ids, self.layout.shard, run):
            if isinstance(res, BaseException):
                raise res

    async def release_aggregation(self, aggr_id: str) -> None:
        k = self.layout.shard(aggr_id)
        await self._delaggr(keys=[self.layout.jobs(k, aggr_id), self.layout.aggr(k, aggr_id)])

    async def _run_pops(self, items: list[list[str]]) -> list[list[Job] | BaseException]:
        t = now()

        async def run(k: int, reqs: list[list[str]]) -> list[list[Job] | BaseException]:
            replies = await self._c_pop_downloads(keys=[self.layout.downloads_inflight(k)],
                                                  args=[t, orjson.dumps(reqs)])
            out: list[list[Job] | BaseException] = []
            for reply in replies:
                status = reply[0]
                if status == b"EMPTY":
                    out.append(Empty())
                elif status == b"RETRYLATER":
                    out.append(RetryLater())
                else:
                    jobs = [decode_job(decode_hash(flat)) for flat in reply[1:]]
                    for job in jobs:
                        self._shard_of[job.id] = k
                    out.append(jobs)
            return out

        res = await self._per_shard(items, lambda it: self.layout.shard(it[0]), run)
        return [r if isinstance(r, (list, BaseException)) else AssertionError(r) for r in res]

    async def renew_inflight(self, key: str, ids: Iterable[str], lease: float) -> None:
        until = int(time.time() + lease)
        name = (self.layout.downloads_inflight if key == DOWNLOADS_INFLIGHT
                else self.layout.callbacks_inflight)
        groups: dict[int, dict[str, int]] = {}
        for job_id in ids:
            k = self._shard_of.get(job_id)
            if k is not None:
                groups.setdefault(k, {})[job_id] = until
        await asyncio.gather(*(self.r.zadd(name(k), m, xx=True) for k, m in groups.items()))

    async def reclaim_downloads(self, limit: int = 500) -> int:
        t = now()
        counts = await self._each_shard(lambda k: self._c_reclaim_downloads(
            keys=[self.layout.downloads_inflight(k), self.layout.index(k)], args=[t, limit]))
        return sum(int(n) for n in counts)

    async def finish_download(self, job: Job, *, requeue_at: float | None,
                              callback: bool, deletion_at: float | None) -> None:
        if callback and requeue_at is None:
            job.callback_state = PENDING
        lay, k = self.layout, self.layout.shard(job.aggr_id)
        self._shard_of.pop(job.id, None)
        target, score, aggr = "", 0, ""
        if requeue_at is not None:
            target, score, aggr = lay.jobs(k, job.aggr_id), math.ceil(requeue_at), job.aggr_id
        elif callback:
            target, score = lay.callback_queue(k), now()
        elif deletion_at is not None:
            target, score = lay.deletion_queue(k), int(deletion_at)
        # The 6th element (the shard) only groups the batch; the script ignores it.
        await self._outcomes.submit([job.id, outcome_pairs(job), target, str(score), aggr, k])

    async def _run_outcomes(self, items: list[list[Any]]) -> list[BaseException | None]:
        async def run(k: int, its: list[list[Any]]) -> list[BaseException | None]:
            body = orjson.dumps(its)
            keys = [self.layout.downloads_inflight(k), self.layout.index(k)]
            await _retrying(lambda: self._c_finish_downloads(keys=keys, args=[body]))
            return [None for _ in its]

        return await self._per_shard(items, lambda it: int(it[5]), run)

    async def pop_deletion(self) -> str:
        pipe = self.r.pipeline()
        order = [(self._cursor + i) % self.layout.shards for i in self._all]
        for k in order:
            pipe.zrange(self.layout.deletion_queue(k), 0, 0, withscores=True)
        try:
            tops = await pipe.execute()
        except ResponseError as exc:
            _raise_pop_error(exc)
            raise
        t, later = now(), False
        for k, top in zip(order, tops, strict=True):
            if not top:
                continue
            member, score = top[0]
            if float(score) > t:
                later = True
                continue
            self._cursor = (k + 1) % self.layout.shards
            job_id = to_str(member)
            self._shard_of[job_id] = k
            return job_id
        raise RetryLater if later else Empty

    async def drop_deleted(self, job_id: str) -> None:
        k = self._shard_of.pop(job_id, None)
        shards: Sequence[int] = self._all if k is None else [k]
        for k in shards:
            await self._c_drop_deleted(
                keys=[self.layout.deletion_queue(k), self.layout.job(k, job_id)],
                args=[job_id])

    # -------------------------------------------------------------------- notifier
    async def pop_callbacks(self, n: int, lease: float) -> list[Job]:
        """Shard by shard from a rotating start until ``n`` are popped: a busy shard fills
        the batch in one call, and no shard waits behind another."""
        t = time.time()
        got: list[Job] = []
        later = False
        shards = self.layout.shards
        start = self._cursor
        for step in range(shards):
            k = (start + step) % shards
            try:
                reply = await self._c_pop_callbacks(
                    keys=[self.layout.callback_queue(k), self.layout.callbacks_inflight(k)],
                    args=[int(t), int(t + lease), n - len(got)])
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("EMPTY"):
                    continue
                if text.startswith("RETRYLATER"):
                    later = True
                    continue
                if got:  # hand over what is popped already (it is in flight now)
                    break
                raise
            except Exception:
                if got:
                    break
                raise
            for flat in reply:
                job = decode_job(decode_hash(flat))
                self._shard_of[job.id] = k
                got.append(job)
            if len(got) >= n:
                break
        self._cursor = (start + 1) % shards
        if not got:
            raise RetryLater if later else Empty
        return got

    async def reclaim_callbacks(self, limit: int = 500) -> int:
        t = now()
        counts = await self._each_shard(lambda k: self._c_reclaim_callbacks(
            keys=[self.layout.callbacks_inflight(k), self.layout.callback_queue(k)],
            args=[t, limit]))
        return sum(int(n) for n in counts)

    async def callback_delivered(self, job_id: str, deletion_at: float) -> None:
        k = self._shard_of.pop(job_id, None)
        if k is None:
            k = await self._find_shard(job_id)
            if k is None:
                return  # already delivered and deleted
        await self._deliveries.submit([job_id, str(int(deletion_at)), str(k)])

    async def _run_deliveries(self, items: list[list[str]]) -> list[BaseException | None]:
        async def run(k: int, its: list[list[str]]) -> list[BaseException | None]:
            body = orjson.dumps(its)
            keys = [self.layout.callbacks_inflight(k), self.layout.deletion_queue(k)]
            await _retrying(lambda: self._c_callbacks_delivered(keys=keys, args=[body]))
            return [None for _ in its]

        return await self._per_shard(items, lambda it: int(it[2]), run)

    async def callback_outcome(self, job: Job, retry_at: float | None) -> None:
        self._shard_of.pop(job.id, None)
        lay, k = self.layout, self.layout.shard(job.aggr_id)
        keys = [lay.job(k, job.id), lay.callbacks_inflight(k), lay.callback_queue(k)]
        args = ["" if retry_at is None else int(retry_at), job.id, *pairs(encode_job(job))]
        await _retrying(lambda: self._c_callback_outcome(keys=keys, args=args))
