"""Every Redis key, script and score of the downloader, in one place (spec §2).

Layout (the original's, so an existing Redis keeps working):

- ``job:<id>`` HASH, fields as in :class:`~pazari.downloader.job.Job`;
- ``aggr:<aggr_id>`` HASH ``ID Limit Proxy ExpiresAt`` (+ ``Rate`` when asked for);
- ``jobs:<aggr_id>`` ZSET, member id, score = unix seconds when eligible;
- ``CallbackQueue`` ZSET, ``JobDeletionQueue`` ZSET (score = now + deletion_interval);
- ``stats:processor`` / ``stats:notifier`` STRING (JSON, TTL 2 * interval).

Added to fix the original's job loss on a crash (limitation 2): ``DownloadsInFlight`` and
``CallbacksInFlight`` ZSETs (member id, score = lease expiry in unix seconds). A pop moves
the id atomically (Lua) from its queue to the in-flight set; finishing removes it in the
same MULTI that writes the outcome; any processor/notifier moves expired entries back.
Scores are compared as numbers (the original's Lua compared strings).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from pazari.downloader.job import PENDING, Aggregation, Job

CALLBACK_QUEUE = "CallbackQueue"
DELETION_QUEUE = "JobDeletionQueue"
DOWNLOADS_INFLIGHT = "DownloadsInFlight"
CALLBACKS_INFLIGHT = "CallbacksInFlight"
JOBS_PREFIX = "jobs:"


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


# Enqueue a job, creating its aggregation if absent, atomically (the original's HMSET +
# ZADD were separate, spec §2 Crash). KEYS: aggr, job, jobs. ARGV: now, n_aggr_pairs,
# aggr pairs..., job pairs...
_ENQUEUE = """
local n = tonumber(ARGV[2])
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + n))
  created = 1
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3 + n, #ARGV))
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[3 + n + 1])
return created
"""

# Pop up to ARGV[3] eligible jobs for download: each moves to the in-flight set, is marked
# InProgress and has its attempt counted; the hashes come back in the same round trip. A
# popped id without a hash is dropped. KEYS: jobs, inflight. ARGV: now, lease_until, n.
_POP_DOWNLOADS = """
local now = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
if #top == 0 then return redis.error_reply('EMPTY') end
if tonumber(top[2]) > now then return redis.error_reply('RETRYLATER') end
local out = {}
for i = 1, #top, 2 do
  local id = top[i]
  if tonumber(top[i + 1]) > now then break end
  redis.call('ZREM', KEYS[1], id)
  local key = 'job:' .. id
  local hid = redis.call('HGET', key, 'ID')
  if hid and hid ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'DownloadState', 'InProgress', 'DownloadMeta', '',
               'ResponseCode', '0')
    redis.call('HINCRBY', key, 'DownloadCount', 1)
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
"""

# The same for callbacks: InProgress, CallbackMeta cleared, CallbackCount counted (spec §4).
# KEYS: CallbackQueue, inflight. ARGV: now, lease_until, n.
_POP_CALLBACKS = """
local now = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
if #top == 0 then return redis.error_reply('EMPTY') end
if tonumber(top[2]) > now then return redis.error_reply('RETRYLATER') end
local out = {}
for i = 1, #top, 2 do
  local id = top[i]
  if tonumber(top[i + 1]) > now then break end
  redis.call('ZREM', KEYS[1], id)
  local key = 'job:' .. id
  local hid = redis.call('HGET', key, 'ID')
  if hid and hid ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'CallbackState', 'InProgress', 'CallbackMeta', '')
    redis.call('HINCRBY', key, 'CallbackCount', 1)
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
"""

# Move expired in-flight downloads back to their aggregation queue (crash recovery).
# KEYS: inflight. ARGV: now, limit.
_RECLAIM_DOWNLOADS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local aggr = redis.call('HGET', 'job:' .. id, 'AggrID')
  if aggr then
    redis.call('HSET', 'job:' .. id, 'DownloadState', 'Pending')
    redis.call('ZADD', 'jobs:' .. aggr, ARGV[1], id)
  end
end
return #ids
"""

# Same for callbacks: back to CallbackQueue as Pending.
_RECLAIM_CALLBACKS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', 'job:' .. id) == 1 then
    redis.call('HSET', 'job:' .. id, 'CallbackState', 'Pending')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  end
end
return #ids
"""

# Extend leases of in-flight ids only where they are still ours (XX: never resurrect).
# spec §2 delaggr: drop an aggregation hash only when its queue is empty.
_DELAGGR = """
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') > 0 then
  redis.call('HSET', KEYS[2], 'ExpiresAt', '')
  return 0
end
return redis.call('DEL', KEYS[2])
"""

# The aggregation lease (spec §2 aggrpop) with numeric comparison. A missing hash (the
# original's NOTFOUND default aggregation, limit ARGV[3]) is created so it is leased too
# (limitation 4). KEYS: aggr. ARGV: now, lease_seconds, default_limit, aggr_id.
_AGGRPOP = """
local exp = redis.call('HGET', KEYS[1], 'ExpiresAt')
local now = tonumber(ARGV[1])
if not exp then
  redis.call('HSET', KEYS[1], 'ID', ARGV[4], 'Limit', ARGV[3], 'Proxy', '',
             'ExpiresAt', tostring(now + tonumber(ARGV[2])))
  return redis.call('HGETALL', KEYS[1])
end
if exp == '' or tonumber(exp) == nil or tonumber(exp) < now then
  redis.call('HSET', KEYS[1], 'ExpiresAt', tostring(now + tonumber(ARGV[2])))
  return redis.call('HGETALL', KEYS[1])
end
return redis.error_reply('BEINGPROCESSED')
"""

# Renew an aggregation lease only if the hash still exists (a busy pool keeps it,
# limitation 4). KEYS: aggr. ARGV: expires_at.
_RENEW_AGGR = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'ExpiresAt', ARGV[1])
  return 1
end
return 0
"""


def connect(url: str, name: str, max_connections: int = 200) -> aioredis.Redis:
    """A client that survives a Redis restart: commands are retried with backoff on
    connection errors (the original used go-redis MaxRetries 5)."""
    return aioredis.Redis.from_url(
        url, client_name=name, max_connections=max_connections, health_check_interval=5,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=5,
    )


def connect_config(redis_cfg: Any, name: str, max_connections: int = 200) -> aioredis.Redis:
    """``connect`` for the config's ``redis`` section: Sentinel mode iff both ``sentinel`` and
    ``master_name`` are set (spec §5); redis-py's sentinel pool follows a failover by itself
    (the original re-created its client on ``+switch-master``)."""
    if redis_cfg.sentinel and redis_cfg.master_name:
        hosts = []
        for addr in redis_cfg.sentinel:
            host, _, port = addr.rpartition(":")
            hosts.append((host or "127.0.0.1", int(port)))
        sentinel = Sentinel(hosts, socket_connect_timeout=5)  # type: ignore[no-untyped-call]
        client: aioredis.Redis = sentinel.master_for(
            redis_cfg.master_name, client_name=name, db=redis_cfg.db,
            max_connections=max_connections,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 8),
            retry_on_error=[RedisConnectionError, RedisTimeoutError])
        return client
    return connect(redis_cfg.url(), name, max_connections)


class Empty(Exception):
    """The queue has no member."""


class RetryLater(Exception):
    """The queue's first member is not eligible yet."""


class BeingProcessed(Exception):
    """Another processor holds the aggregation's lease."""


def _pairs(h: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in h.items():
        out += (k, v)
    return out


def _decode_hash(flat: list[Any]) -> dict[str, str]:
    it = iter(flat)
    return {_s(k): _s(v) for k, v in zip(it, it, strict=True)}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


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


async def _retrying(op: Callable[[], Awaitable[Any]]) -> Any:
    """Run an idempotent outcome write (HSET/ZREM/ZADD/DEL in one MULTI) until Redis takes it,
    for about 20 s: a Redis restart must not turn finished work into a lease expiry and a
    second download (the lease still covers a longer outage)."""
    delay = 0.05
    for attempt in range(OUTCOME_RETRIES):
        try:
            return await op()
        except (RedisConnectionError, RedisTimeoutError):
            if attempt == OUTCOME_RETRIES - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


class Store:
    """The downloader's Redis operations."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.r = client
        self._enqueue = client.register_script(_ENQUEUE)
        self._pop_downloads = client.register_script(_POP_DOWNLOADS)
        self._pop_callbacks = client.register_script(_POP_CALLBACKS)
        self._reclaim_downloads = client.register_script(_RECLAIM_DOWNLOADS)
        self._reclaim_callbacks = client.register_script(_RECLAIM_CALLBACKS)
        self._delaggr = client.register_script(_DELAGGR)
        self._aggrpop = client.register_script(_AGGRPOP)
        self._renew_aggr = client.register_script(_RENEW_AGGR)

    # ------------------------------------------------------------------------- api
    async def job_exists(self, job_id: str) -> bool:
        return bool(await self.r.exists(job_key(job_id)))

    async def enqueue(self, job: Job, aggr: Aggregation) -> bool:
        """Create the aggregation if absent (a present one keeps its limit and proxy, as in
        the original) and queue the job Pending with score now; True if aggr was created."""
        job.download_state = PENDING
        a = _pairs(aggr.to_hash())
        created = await self._enqueue(
            keys=[aggr_key(aggr.id), job_key(job.id), jobs_key(job.aggr_id)],
            args=[now(), len(a), *a, *_pairs(job.to_hash())],
        )
        return bool(created)

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(job_key(job_id))
        h = {_s(k): _s(v) for k, v in raw.items()}
        if not h.get("ID"):
            return None
        return Job.from_hash(h)

    async def save_job(self, job: Job) -> None:
        await self.r.hset(job_key(job.id), mapping=job.to_hash())  # type: ignore[arg-type]

    async def queue_callback(self, job: Job, delay: float = 0) -> None:
        async with self.r.pipeline(transaction=True) as p:
            job.callback_state = PENDING
            p.hset(job_key(job.id), mapping=job.to_hash())  # type: ignore[arg-type]
            p.zadd(CALLBACK_QUEUE, {job.id: int(time.time() + delay)})
            await p.execute()

    async def aggregation_sizes(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        async for key in self.r.scan_iter(match=f"{JOBS_PREFIX}*", count=50):
            name = _s(key)
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
        return [_s(k)[len(JOBS_PREFIX):]
                async for k in self.r.scan_iter(match=f"{JOBS_PREFIX}*", count=50)]

    async def lease_aggregation(self, aggr_id: str, lease: int, default_limit: int
                                ) -> Aggregation:
        try:
            flat = await self._aggrpop(keys=[aggr_key(aggr_id)],
                                       args=[now(), lease, default_limit, aggr_id])
        except ResponseError as exc:
            _raise_pop_error(exc)
            raise
        return Aggregation.from_hash(_decode_hash(flat))

    async def renew_aggregation(self, aggr_id: str, lease: int) -> None:
        await self._renew_aggr(keys=[aggr_key(aggr_id)], args=[now() + lease])

    async def release_aggregation(self, aggr_id: str) -> None:
        """delaggr: delete the hash if the queue drained, else clear the lease so the next
        scan (here or on a peer) can take it at once."""
        await self._delaggr(keys=[jobs_key(aggr_id), aggr_key(aggr_id)])

    async def pop_downloads(self, aggr_id: str, n: int, lease: float) -> list[Job]:
        """Move up to ``n`` eligible jobs to the in-flight set, marked InProgress with their
        DownloadCount incremented (raises Empty/RetryLater when there is none)."""
        return await self._pop_jobs(self._pop_downloads, jobs_key(aggr_id),
                                    DOWNLOADS_INFLIGHT, n, lease)

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
        return [Job.from_hash(_decode_hash(flat)) for flat in reply]

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
        """Write the outcome and leave the in-flight set in one MULTI: requeue (Pending,
        score ``requeue_at``), or terminal with the callback queued, or terminal without
        callback scheduled for deletion."""
        await _retrying(lambda: self._finish_download(job, requeue_at, callback, deletion_at))

    async def _finish_download(self, job: Job, requeue_at: float | None, callback: bool,
                               deletion_at: float | None) -> None:
        async with self.r.pipeline(transaction=True) as p:
            if callback and requeue_at is None:
                job.callback_state = PENDING
            p.hset(job_key(job.id), mapping=job.to_hash())  # type: ignore[arg-type]
            p.zrem(DOWNLOADS_INFLIGHT, job.id)
            if requeue_at is not None:
                p.zadd(jobs_key(job.aggr_id), {job.id: int(requeue_at)})
            elif callback:
                p.zadd(CALLBACK_QUEUE, {job.id: now()})
            elif deletion_at is not None:
                p.zadd(DELETION_QUEUE, {job.id: int(deletion_at)})
            await p.execute()

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
        return _s(member)

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
        await _retrying(lambda: self._callback_delivered(job_id, deletion_at))

    async def _callback_delivered(self, job_id: str, deletion_at: float) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.delete(job_key(job_id))
            p.zrem(CALLBACKS_INFLIGHT, job_id)
            p.zadd(DELETION_QUEUE, {job_id: int(deletion_at)})
            await p.execute()

    async def callback_outcome(self, job: Job, retry_at: float | None) -> None:
        """Save a failed (terminal) or retried callback and leave the in-flight set."""
        await _retrying(lambda: self._callback_outcome(job, retry_at))

    async def _callback_outcome(self, job: Job, retry_at: float | None) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.hset(job_key(job.id), mapping=job.to_hash())  # type: ignore[arg-type]
            p.zrem(CALLBACKS_INFLIGHT, job.id)
            if retry_at is not None:
                p.zadd(CALLBACK_QUEUE, {job.id: int(retry_at)})
            await p.execute()

    async def forget_callback(self, job_id: str) -> None:
        await self.r.zrem(CALLBACKS_INFLIGHT, job_id)
