"""``downloader processor`` (spec §3): the pool-spawn loop, download → check → store for each
job, the in-flight lease keeper, the reaper, the disk checker and the stats reporter."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.exceptions import RedisError

from pazari import filestore
from pazari.downloader import s3
from pazari.downloader import store as st
from pazari.downloader import transport as tx
from pazari.downloader.batching import Coalescer
from pazari.downloader.config import Config, test_time
from pazari.downloader.errors import DownloadError
from pazari.downloader.fetch import Limits, Result, fetch, make_client, make_target_guard
from pazari.downloader.imagesize import ImageSizeError, image_size
from pazari.downloader.job import FAILED, PENDING, SUCCESS, Aggregation, Job
from pazari.downloader.pool import Pool
from pazari.downloader.proxies import EnvProxies, InvalidProxy, parse_proxy
from pazari.downloader.redisconn import connect_config
from pazari.downloader.ssrf import parse_networks
from pazari.downloader.stats import Stats, report_loop
from pazari.downloader.storage import FileStorage
from pazari.mime import check_any, parse_mime_patterns, sniff
from pazari.runtime import Service, get_logger
from pazari.runtime.cancel import cancel_and_wait

log = get_logger("downloader.processor")

GAUGES = ("workers", "workerPools", "paused")
#: The error of a job reclaimed more than ``max_reclaims`` times (issue 11).
CRASHED = "processor crashed while handling this job"
DEFAULT_DELETION_MINUTES = 180
FILE_THREADS = 16


# (temp path, body or None, open descriptor or -1, final path, directory to make or b"")
CommitItem = tuple[bytes, bytes | None, int, bytes, bytes]
# The phase and retriability of a failed commit stage (spec §3 steps 6, 8, 10): the disk
# is our problem (internal, retriable, not an attempt); a failed move into place is not.
_STAGE_ERRORS = {
    filestore.STAGE_CREATE: ("creating tmp file", True),
    filestore.STAGE_WRITE: ("downloading file", True),
    filestore.STAGE_SYNC: ("syncing to disk", True),
    filestore.STAGE_MKDIR: ("storing file to default storage backend", False),
    filestore.STAGE_RENAME: ("storing file to default storage backend", False),
}


class Processor:
    """The processor's state shared by its pools."""

    def __init__(self, config: Config, store: st.Store, client: tx.Client,
                 storage: FileStorage, stats: Stats) -> None:
        self.config = config
        self.cfg = config.processor
        self.store = store
        self.client = client
        self.storage = storage
        self.stats = stats
        self.global_slots = asyncio.Semaphore(self.cfg.max_concurrency)
        self.inflight: set[str] = set()
        self.allowed_networks = parse_networks(self.cfg.allowed_networks)
        # Per-job constants, built once: the default request headers (Accept-Encoding is
        # the client's, see _download) and the limits per download_timeout value.
        self.base_headers = {k: v for k, v in self.cfg.request_headers.items()
                             if k.lower() != "accept-encoding"}
        self._limits: dict[int, Limits] = {}
        self.proxies = EnvProxies()
        self.uploader = s3.Uploader()
        fs = self.cfg.filestorage
        # filestorage.type "s3": stored files go to (bucket, region) instead of rootdir.
        self.s3_storage = (fs.bucket, fs.region) if fs is not None and fs.type == "s3" else None
        self.not_before: dict[str, float] = {}  # aggregation -> monotonic time (Retry-After)
        self.target_guard = make_target_guard(self.cfg.allow_private_networks,
                                              self.cfg.allowed_networks)
        self.pools: dict[str, asyncio.Task[None]] = {}
        self.leased: set[str] = set()  # aggregations whose lease our pools hold
        self.backoff_unit = 0.2 if test_time() else self.cfg.retry_backoff
        deletion = config.notifier.deletion_interval or DEFAULT_DELETION_MINUTES
        self.deletion_seconds = deletion * 60
        # Commits wait on the disk, not the CPU: worker threads that hold no GIL meanwhile.
        self.file_threads = ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="files")
        # Group commit (sync "batch"): few threads, big batches, one syncfs each. Per-file
        # fsync ("file"): many threads with small batches, so that fsyncs overlap and share
        # journal commits.
        batched = self.cfg.sync == "batch"
        self.sync_mode = filestore.SYNC_BATCH if batched else filestore.SYNC_FILE
        self.fs_fd = os.open(storage.storage_dir, os.O_RDONLY | os.O_DIRECTORY)
        self.committer: Coalescer[CommitItem, tuple[int, int]] = Coalescer(
            self._commit_batch, max_batch=64 if batched else 8,
            parallel=4 if batched else FILE_THREADS, name="commit-files")

    # ------------------------------------------------------------------- bookkeeping
    def started_download(self, job_id: str) -> None:
        self.inflight.add(job_id)
        self.stats.incr("spawnedWorkers")
        self.stats.set("workers", len(self.inflight))
        self.stats.set_max("maxWorkers", len(self.inflight))

    def finished_download(self, job_id: str) -> None:
        self.inflight.discard(job_id)
        self.stats.set("workers", len(self.inflight))

    # ------------------------------------------------------------------------ perform
    async def perform(self, job: Job, aggr: Aggregation) -> None:
        """spec §3 perform: download, then requeue, fail or succeed, in one MULTI each.

        Whatever happens while handling the job ends in an outcome for it (issue 11): an
        exception nobody anticipated fails the job, not retriably, with the error in its
        callback, rather than escaping as an unhandled task exception and leaving the job
        to be reclaimed forever. Only a Redis error escapes (the outcome cannot be written;
        the lease brings the job back)."""
        if job.reclaim_count > self.cfg.max_reclaims:
            # Reclaimed from a dead lease more often than allowed: the job itself is the
            # likeliest reason its processors died.
            job.download_count = max(0, job.download_count - 1)
            await self._failed(job, DownloadError(
                "performing request", CRASHED, retriable=False))
            return
        try:
            await self._download(job, aggr)
        except asyncio.CancelledError:
            # A stop or a disk-full pause: not the job's fault, not an attempt.
            job.download_count = max(0, job.download_count - 1)
            job.download_state = PENDING
            self.storage.discard_tmp(job.id)
            with contextlib.suppress(RedisError):
                await asyncio.shield(self.store.finish_download(
                    job, requeue_at=time.time(), callback=False, deletion_at=None))
            raise
        except DownloadError as err:
            self.storage.discard_tmp(job.id)
            if err.stat:
                self.stats.incr(err.stat)
            if err.internal:
                self.stats.incr("failures")
                job.download_count = max(0, job.download_count - 1)
            await self._failed(job, err)
            return
        except RedisError:
            raise
        except Exception as exc:  # see the docstring
            self.storage.discard_tmp(job.id)
            self.stats.incr("download.response.internal")
            log.exception("unexpected error while handling %s", job.id)
            await self._failed(job, DownloadError(
                "handling job", f"{type(exc).__name__}: {exc}", retriable=False))
            return
        job.download_state = SUCCESS
        job.download_meta = ""
        job.download_url = self.cfg.download_url
        await self._save_terminal(job)

    def aggregation_wait(self, aggr_id: str) -> float:
        """Seconds the aggregation's pool holds off new jobs (a Retry-After of one of its
        jobs), 0 when none."""
        until = self.not_before.get(aggr_id)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self.not_before[aggr_id]
            return 0.0
        return left

    async def _failed(self, job: Job, err: DownloadError) -> None:
        limit = job.max_retries if job.max_retries is not None else self.cfg.default_max_retries
        job.download_meta = str(err)
        if err.retry_after is not None:
            # The server said when to come back: this job's retry and the aggregation's
            # next jobs wait at least that long (capped: a hostile server must not park an
            # aggregation for a year).
            wait = min(err.retry_after, self.cfg.max_retry_after)
            until = time.monotonic() + wait
            self.not_before[job.aggr_id] = max(until, self.not_before.get(job.aggr_id, 0))
        if err.retriable and job.download_count <= limit:
            job.download_state = PENDING
            delay = max(1, job.download_count) * self.backoff_unit
            if err.retry_after is not None:
                delay = max(delay, min(err.retry_after, self.cfg.max_retry_after))
            await self.store.finish_download(job, requeue_at=time.time() + delay,
                                             callback=False, deletion_at=None)
            return
        job.download_state = FAILED
        job.download_url = ""
        await self._save_terminal(job)

    async def _save_terminal(self, job: Job) -> None:
        callback = job.has_callback()
        # Jobs without a callback are cleaned after deletion_interval (limitation 8).
        await self.store.finish_download(
            job, requeue_at=None, callback=callback,
            deletion_at=None if callback else time.time() + self.deletion_seconds)

    async def _download(self, job: Job, aggr: Aggregation) -> None:
        meta = s3.metadata(job.extra) if job.s3_bucket else {}
        headers = self.base_headers
        if job.request_headers:
            # The client asks for the encodings it decodes and decodes them, so the stored
            # bytes are the resource's bytes whatever the caller asked for (limitation 10).
            headers = {**headers, **{k: v for k, v in job.request_headers.items()
                                     if k.lower() != "accept-encoding"}}
        limits = self._limits.get(job.download_timeout)
        if limits is None:
            limits = Limits(timeout=self.cfg.timeout,
                            job_timeout=float(job.download_timeout),
                            max_size=self.cfg.max_file_size,
                            max_redirects=self.cfg.max_redirects,
                            allow_private=self.cfg.allow_private_networks,
                            allowed=self.allowed_networks,
                            allow_insecure_redirects=self.cfg.allow_insecure_redirects)
            if len(self._limits) < 1000:
                self._limits[job.download_timeout] = limits
        checked = bool(job.mime_type or job.mime_type_any or job.extract_image_size)
        sniffed: list[str] = []

        def on_status(code: int) -> None:
            job.response_code = code
            self.stats.incr(f"download.response.{code}")

        def on_head(head: bytes) -> None:
            if not checked:
                return
            mime = sniff(head)
            sniffed.append(mime)
            failure = None
            if job.mime_type:
                failure = parse_mime_patterns(job.mime_type).check(mime)
            if failure is None and job.mime_type_any:
                failure = check_any(job.mime_type_any, mime)
            if failure is not None:
                raise DownloadError("validating mime type", failure, retriable=False,
                                    stat="download.response.mime")

        tmp = self.storage.tmp_path(job.id)
        proxy = aggr.proxy or self.proxies.for_url(job.url)
        if proxy:
            try:
                proxy = parse_proxy(proxy)
            except InvalidProxy as exc:
                # The api refuses these; one written by an older api, or from the
                # environment, fails the job with a callback (issue 11).
                self.stats.incr("invalidProxies")
                raise DownloadError("performing request", f"proxyconnect: {exc}",
                                    retriable=False) from None
        result = await fetch(self.client, job.url, headers, proxy, limits, tmp, on_head,
                             on_status, self.target_guard)
        mime = sniffed[0] if job.extract_image_size and sniffed else None
        if mime is not None:
            job.image_size = await self._image_size(result, tmp, mime)
        if job.s3_bucket:
            await self._store_s3(job, result, tmp, job.s3_bucket, job.s3_region, meta,
                                 s3.PHASE)
            return
        if self.s3_storage is not None:
            await self._store_s3(job, result, tmp, *self.s3_storage, {},
                                 "storing file to default storage backend")
            return
        # spec §3 steps 6, 8 and 10 in one batched worker-thread hop that holds no GIL
        # (pazari.filestore): create and write a small body, close, make the <id[0:3]>
        # directory, rename into place, made durable by the batch's syncfs (or each file's
        # fsync, sync "file"). With os.* calls in threads (or on the loop) the GIL
        # hand-offs and syscalls cost the loop a third of its time per job.
        final, parent = self.storage.commit_target(job.path())
        stage, err = await self.committer.submit(
            (os.fsencode(tmp), result.body, result.fd, os.fsencode(final),
             os.fsencode(parent)))
        if stage == 0:
            self.storage.made(parent)
            return
        if stage == filestore.STAGE_RENAME and err == errno.EXDEV:
            try:
                await asyncio.to_thread(self.storage.store, tmp, job.path())
            except OSError as exc:
                raise DownloadError("storing file to default storage backend", str(exc),
                                    retriable=False) from None
            return
        phase, internal = _STAGE_ERRORS[stage]
        path = tmp if stage in (filestore.STAGE_CREATE, filestore.STAGE_RENAME) else (
            parent if stage == filestore.STAGE_MKDIR else None)
        raise DownloadError(phase, str(OSError(err, os.strerror(err), path)),
                            retriable=internal, internal=internal)

    async def _store_s3(self, job: Job, result: Result, tmp: str, bucket: str, region: str,
                        meta: dict[str, str], phase: str) -> None:
        """spec §3 step 10, a per-job bucket or the s3 file storage: upload (a small body
        from memory, a streamed one from its temp file), then drop the temp file."""
        if result.fd >= 0:
            os.close(result.fd)
        try:
            await asyncio.to_thread(
                self.uploader.upload, bucket, region, job.path(),
                None if result.body is not None else tmp, result.body, meta, phase)
        finally:
            self.storage.discard_tmp(job.id)

    async def _image_size(self, result: Result, tmp: str, mime: str) -> str:
        """spec §3 step 9 from the header only: a small body's from memory (Pillow's lazy
        open, tens of microseconds), a streamed one's from the written temp file."""
        try:
            if result.body is not None:
                return image_size(result.body, mime) or ""
            return await asyncio.to_thread(image_size, tmp, mime) or ""
        except ImageSizeError as exc:
            if result.fd >= 0:
                os.close(result.fd)
            raise DownloadError("extracting image-size", str(exc), retriable=False,
                                stat="download.response.image-size") from None

    async def _commit_batch(self, items: list[CommitItem]
                            ) -> list[tuple[int, int] | BaseException]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.file_threads, filestore.commit_files, items,
                                          self.sync_mode, self.fs_fd)

    # --------------------------------------------------------------------- spawning
    def spawn(self, aggr: Aggregation) -> None:
        # An unusable aggr_proxy fails each of its jobs with a callback (_download): the
        # original skipped the pool, leaving its jobs Pending forever (issue 11).
        pool = Pool(self, aggr)
        self.leased.add(aggr.id)
        task = asyncio.create_task(pool.run(), name=f"pool:{aggr.id}")
        self.pools[aggr.id] = task
        task.add_done_callback(functools.partial(self._pool_done, aggr.id))
        self.stats.incr("spawnedWorkerPools")
        self.stats.set("workerPools", len(self.pools))
        self.stats.set_max("maxWorkerPools", len(self.pools))

    def _pool_done(self, aggr_id: str, _task: asyncio.Task[None]) -> None:
        self.pools.pop(aggr_id, None)
        self.stats.set("workerPools", len(self.pools))

    async def scan_once(self) -> None:
        await self.store.reclaim_downloads()
        for aggr_id in await self.store.aggregation_ids():
            if aggr_id in self.pools:
                continue
            try:
                aggr = await self.store.lease_aggregation(
                    aggr_id, self.cfg.aggregation_lease, self.cfg.default_aggr_limit)
            except st.BeingProcessed:
                continue
            except (RedisError, ValueError) as exc:
                log.warning("could not lease aggregation %s: %s", aggr_id, exc)
                continue
            self.spawn(aggr)

    async def cancel_pools(self) -> None:
        await cancel_and_wait(list(self.pools.values()))


class ProcessorService(Service):
    name = "downloader-processor"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.stats = Stats("processor", GAUGES)
        self.stats.register(self.registry)
        self.proc: Processor | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.healthy = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config.processor
        storage = FileStorage(cfg.storage_dir, cfg.rootdir)
        try:
            storage.check_writable()
        except OSError as exc:
            raise RuntimeError(f"Error verifying storage directory is writable: {exc}") from exc
        client = connect_config(self.config.redis, "processor", 50 + cfg.max_concurrency)
        # No cookies are kept (neither did Go's client); the environment proxy is EnvProxies'.
        http = make_client(cfg.connect_timeout, cfg.read_timeout, cfg.allow_private_networks,
                           cfg.allowed_networks, cfg.max_file_size)
        self.proc = Processor(self.config, st.Store(client), http, storage, self.stats)
        self.healthy.set()
        # Named: /debug/pprof/tasks and the race checker list tasks by name (issue 13).
        self.tasks = [asyncio.create_task(c, name=f"processor-{n}") for n, c in (
            ("scan-loop", self._scan_loop()), ("renew-loop", self._renew_loop()),
            ("renew-aggregations", self._renew_aggregations()), ("reaper", self._reaper()),
            ("disk-checker", self._disk_checker()),
            ("report-loop", report_loop(self.stats, self.proc.store, cfg.stats_interval)))]

    async def stop(self) -> None:
        await cancel_and_wait(self.tasks)
        if self.proc is not None:
            await self.proc.cancel_pools()
            await self.proc.committer.drain()
            os.close(self.proc.fs_fd)
            self.proc.file_threads.shutdown(wait=True)
            await self.proc.client.close()
            await self.proc.store.drain()
            await self.proc.store.r.aclose()

    def vars(self) -> Mapping[str, Any]:
        return {"Processor": self.stats.snapshot()}

    async def _scan_loop(self) -> None:
        assert self.proc is not None
        while True:
            await self.healthy.wait()
            try:
                await self.proc.scan_once()
            except RedisError as exc:
                log.warning("scan failed: %s", exc)
            await asyncio.sleep(self.config.processor.scan_interval)

    async def _renew_loop(self) -> None:
        assert self.proc is not None
        lease = self.config.processor.inflight_lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.proc.store.renew_inflight(st.DOWNLOADS_INFLIGHT,
                                                     list(self.proc.inflight), lease)
            except RedisError as exc:
                log.warning("could not renew in-flight leases: %s", exc)

    async def _renew_aggregations(self) -> None:
        """Keep the leases of the aggregations we have pools for, all in one call (a busy
        aggregation keeps its lease: the original renewed only when idle, limitation 4)."""
        assert self.proc is not None
        lease = self.config.processor.aggregation_lease
        while True:
            await asyncio.sleep(max(1.0, lease / 3))
            try:
                await self.proc.store.renew_aggregations(list(self.proc.leased), lease)
            except RedisError as exc:
                log.warning("could not renew aggregation leases: %s", exc)

    async def _reaper(self) -> None:
        """spec §3 Reaper; the id leaves the queue only after its file is gone."""
        assert self.proc is not None
        proc = self.proc
        while True:
            try:
                job_id = await proc.store.pop_deletion()
            except (st.Empty, st.RetryLater):
                await asyncio.sleep(1.0)
                continue
            except RedisError as exc:
                log.warning("reaper: %s", exc)
                await asyncio.sleep(1.0)
                continue
            rel = f"{job_id[:3]}/{job_id}"
            try:
                if proc.s3_storage is not None:
                    await asyncio.to_thread(proc.uploader.delete, *proc.s3_storage, rel)
                else:
                    proc.storage.delete(rel)
                await proc.store.drop_deleted(job_id)
            except (OSError, RedisError) as exc:
                proc.stats.incr("reaperFailures")
                log.warning("reaper: could not delete %s: %s", rel, exc)
                await asyncio.sleep(1.0)
                continue
            proc.stats.incr("reaperSuccessfulDeletions")
            log.debug("reaper: Deleted file [%s]", rel)

    async def _disk_checker(self) -> None:
        """spec §3 Disk checker: above disk_high % pause (in-flight downloads are requeued),
        at or below disk_low % resume."""
        assert self.proc is not None
        cfg = self.config.processor
        while True:
            usage = disk_usage(cfg.storage_dir)
            if self.healthy.is_set() and usage > cfg.disk_high:
                log.warning("disk usage %.1f%% above %.1f%%: pausing", usage, cfg.disk_high)
                self.healthy.clear()
                self.stats.set("paused", 1)
                await self.proc.cancel_pools()
            elif not self.healthy.is_set() and usage <= cfg.disk_low:
                log.info("disk usage %.1f%%: resuming", usage)
                self.stats.set("paused", 0)
                self.healthy.set()
            await asyncio.sleep(cfg.disk_check_interval)


def disk_usage(path: str) -> float:
    s = os.statvfs(path)
    if s.f_blocks == 0:
        return 0.0
    return (s.f_blocks - s.f_bfree) * 100.0 / s.f_blocks
