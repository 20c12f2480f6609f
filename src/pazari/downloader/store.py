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
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pazari.downloader import scripts
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


# ---------------------------------------------------------------- hash encodings
# Field names and value encodings are the original's, so an existing Redis and the Go
# services keep working: bools are "1"/"0", MaxRetries is "null" or an integer,
# RequestHeaders is a JSON string ("null" when none), counters are decimal strings.

def encode_job(job: Job) -> dict[str, str]:
    """Every field, as the original's HMSET wrote them."""
    h = {
        "ID": job.id,
        "URL": job.url,
        "AggrID": job.aggr_id,
        "MaxRetries": "null" if job.max_retries is None else str(job.max_retries),
        "DownloadState": job.download_state,
        "DownloadCount": str(job.download_count),
        "DownloadMeta": job.download_meta,
        "CallbackState": job.callback_state,
        "CallbackType": job.callback_type,
        "CallbackDst": job.callback_dst,
        "CallbackURL": job.callback_url,
        "DownloadURL": job.download_url,
        "CallbackMeta": job.callback_meta,
        "CallbackCount": str(job.callback_count),
        "Extra": job.extra,
        "ResponseCode": str(job.response_code),
        "MimeType": job.mime_type,
        "ExtractImageSize": "1" if job.extract_image_size else "0",
        "ImageSize": job.image_size,
        "DownloadTimeout": str(job.download_timeout),
        "RequestHeaders": orjson.dumps(job.request_headers).decode(),
        "S3Bucket": job.s3_bucket,
        "S3Region": job.s3_region,
    }
    if job.mime_type_any:
        h["MimeTypeAny"] = orjson.dumps(job.mime_type_any).decode()
    return h

def decode_job(h: dict[str, str]) -> Job:
    """Decode an HGETALL reply; raise ValueError like the original's reader on an
    unknown field or a bad value."""
    job = Job()
    for key, value in h.items():
        setter = _SETTERS.get(key)
        if setter is None:
            raise ValueError(f"Field {key} with value {value} was not found in Job struct")
        setter(job, value)
    return job


def _int(v: str) -> int:
    return int(v) if v else 0


def _set_max_retries(j: Job, v: str) -> None:
    j.max_retries = None if v in ("", "null") else int(v)


def _set_headers(j: Job, v: str) -> None:
    j.request_headers = orjson.loads(v) if v else None


def _set_any(j: Job, v: str) -> None:
    j.mime_type_any = list(orjson.loads(v)) if v else []


def _str(name: str):  # type: ignore[no-untyped-def]
    def set_(j: Job, v: str) -> None:
        setattr(j, name, v)
    return set_


def _num(name: str):  # type: ignore[no-untyped-def]
    def set_(j: Job, v: str) -> None:
        setattr(j, name, _int(v))
    return set_


_SETTERS = {
    "ID": _str("id"),
    "URL": _str("url"),
    "AggrID": _str("aggr_id"),
    "MaxRetries": _set_max_retries,
    "DownloadState": _str("download_state"),
    "DownloadCount": _num("download_count"),
    "DownloadMeta": _str("download_meta"),
    "CallbackState": _str("callback_state"),
    "CallbackType": _str("callback_type"),
    "CallbackDst": _str("callback_dst"),
    "CallbackURL": _str("callback_url"),
    "DownloadURL": _str("download_url"),
    "CallbackMeta": _str("callback_meta"),
    "CallbackCount": _num("callback_count"),
    "Extra": _str("extra"),
    "ResponseCode": _num("response_code"),
    "MimeType": _str("mime_type"),
    "ExtractImageSize": lambda j, v: setattr(j, "extract_image_size", v in ("1", "true")),
    "ImageSize": _str("image_size"),
    "DownloadTimeout": _num("download_timeout"),
    "RequestHeaders": _set_headers,
    "S3Bucket": _str("s3_bucket"),
    "S3Region": _str("s3_region"),
    "MimeTypeAny": _set_any,
}


def encode_aggr(aggr: Aggregation) -> dict[str, str]:
    h = {"ID": aggr.id, "Limit": str(aggr.limit), "Proxy": aggr.proxy,
         "ExpiresAt": aggr.expires_at}
    if aggr.rate:
        h["Rate"] = repr(aggr.rate)
    return h

def decode_aggr(h: dict[str, str]) -> Aggregation:
    known = {"ID", "Limit", "Proxy", "ExpiresAt", "Rate"}
    for key, value in h.items():
        if key not in known:
            raise ValueError(
                f"Field {key} with value {value} was not found in Aggregation struct")
    return Aggregation(id=h.get("ID", ""), limit=_int(h.get("Limit", "")),
               proxy=h.get("Proxy", ""), expires_at=h.get("ExpiresAt", ""),
               rate=float(h.get("Rate") or 0))


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
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._pop_downloads = client.register_script(scripts.POP_DOWNLOADS)
        self._pop_callbacks = client.register_script(scripts.POP_CALLBACKS)
        self._reclaim_downloads = client.register_script(scripts.RECLAIM_DOWNLOADS)
        self._reclaim_callbacks = client.register_script(scripts.RECLAIM_CALLBACKS)
        self._delaggr = client.register_script(scripts.DELAGGR)
        self._aggrpop = client.register_script(scripts.AGGRPOP)
        self._renew_aggr = client.register_script(scripts.RENEW_AGGR)

    # ------------------------------------------------------------------------- api
    async def job_exists(self, job_id: str) -> bool:
        return bool(await self.r.exists(job_key(job_id)))

    async def enqueue(self, job: Job, aggr: Aggregation) -> bool:
        """Create the aggregation if absent (a present one keeps its limit and proxy, as in
        the original) and queue the job Pending with score now; True if aggr was created."""
        job.download_state = PENDING
        a = _pairs(encode_aggr(aggr))
        created = await self._enqueue(
            keys=[aggr_key(aggr.id), job_key(job.id), jobs_key(job.aggr_id)],
            args=[now(), len(a), *a, *_pairs(encode_job(job))],
        )
        return bool(created)

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(job_key(job_id))
        h = {_s(k): _s(v) for k, v in raw.items()}
        if not h.get("ID"):
            return None
        return decode_job(h)

    async def save_job(self, job: Job) -> None:
        await self.r.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type]

    async def queue_callback(self, job: Job, delay: float = 0) -> None:
        async with self.r.pipeline(transaction=True) as p:
            job.callback_state = PENDING
            p.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type]
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
        return decode_aggr(_decode_hash(flat))

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
        return [decode_job(_decode_hash(flat)) for flat in reply]

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
            p.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type]
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
            p.hset(job_key(job.id), mapping=encode_job(job))  # type: ignore[arg-type]
            p.zrem(CALLBACKS_INFLIGHT, job.id)
            if retry_at is not None:
                p.zadd(CALLBACK_QUEUE, {job.id: int(retry_at)})
            await p.execute()

    async def forget_callback(self, job_id: str) -> None:
        await self.r.zrem(CALLBACKS_INFLIGHT, job_id)
