"""The worker pool, the coalescing of identical jobs and the result cache (spec §1.4).

Differences from the original, each fixing a limitation of spec §8:
* coalescing happens when a job is submitted: a follower awaits the leader's future (no
  2 s polling, no worker slot, no backlog slot), and a failing leader hands its error to
  every follower at once;
* cache hits are answered without entering the queue, so they stay fast while every
  worker is busy;
* every job can be aborted (timeout, ``DELETE``, shutdown); its container is killed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path

from pazari.mistry.build import Builder
from pazari.mistry.buildinfo import BuildInfo
from pazari.mistry.job import BacklogFull, Job, JobError, JobRequest, ShuttingDown, UnknownProject
from pazari.mistry.jobid import DigestCache, job_id, snapshot
from pazari.mistry.store import OUT_LOG, read_build_info
from pazari.runtime.logs import get_logger

SMALL_LOG = 256 * 1024


class Scheduler:
    def __init__(self, builder: Builder) -> None:
        self.builder = builder
        self.config = builder.config
        self.layout = builder.layout
        self.metrics = builder.metrics
        self.queue: asyncio.Queue[Job] = asyncio.Queue(self.config.backlog)
        self.inflight: dict[str, Job] = {}
        self.running: set[Job] = set()
        self.digests = DigestCache()
        self.stopping = False
        self.log = get_logger("mistry.worker")
        self._workers: list[asyncio.Task[None]] = []
        self._snapshots: dict[str, asyncio.Future[tuple[str, bytes]]] = {}
        self.active: dict[str, int] = {}  # running builds per project
        self.deferred: dict[str, collections.deque[Job]] = {}  # held back by max_concurrent

    def start(self) -> None:
        n = self.config.concurrency
        self._workers = [
            asyncio.create_task(self._worker(i), name=f"mistry-worker-{i}") for i in range(n)
        ]
        self.log.info("Set up %d workers", n)

    def job_id(self, request: JobRequest) -> str:
        project_dir = Path(self.config.projects_path) / request.project
        if not project_dir.is_dir():
            raise UnknownProject(f"Unknown project '{request.project}'")
        return job_id(request.project, request.group, request.params, project_dir, self.digests)

    def cached(self, project: str, jid: str) -> BuildInfo | None:
        """The result cache: a ready build that succeeded (failures are never cached, #62)."""
        ready = self.layout.ready(project, jid)
        try:
            info = read_build_info(ready)
        except (OSError, ValueError):
            return None
        if info.exit_code != 0 or info.err_build:
            return None
        info.cached = True
        log = ready / OUT_LOG
        with contextlib.suppress(OSError):
            info.container_stdouterr = log.read_bytes().decode(errors="replace")
        return info

    async def submit(
        self, request: JobRequest, jid: str, *, wait: bool
    ) -> tuple[Job | None, BuildInfo | None]:
        """Schedule ``request`` (whose id the caller got from ``job_id``). Returns (job,
        info): info is None for an async submission; raises JobError for a full backlog,
        shutdown or a failed build."""
        project = request.project
        started_at_ns = time.time_ns()  # a coalesced job's own StartedAt
        self.metrics.inc("builds_started", project)
        context: bytes | None = None
        while True:
            leader = self.inflight.get(jid)
            if leader is not None:
                if not wait:
                    return leader, None
                result = await asyncio.shield(leader.future)
                self.metrics.inc("builds_coalesced", project)
                return leader, coalesced_info(result, request, started_at_ns)
            cached = self.cached(project, jid)
            if cached is not None:
                self.metrics.inc("cache_utilization", project)
                return None, cached
            if self.stopping:
                raise ShuttingDown("server is shutting down")
            if context is not None:
                break
            # One read of the project gives the id and the build context (issue 10): if
            # the project changed since the id above, the job is the one of what is read
            # now, and the checks above are made again for it.
            jid, context = await self._snapshot(request, jid)
        job = Job(request, jid, context=context)
        job.future.add_done_callback(_consume)
        try:
            if self.waiting >= self.config.backlog:
                raise asyncio.QueueFull
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.log.warning("Failed to send message to work queue (%s)", job)
            raise BacklogFull("backlog is full") from None
        self.inflight[jid] = job
        if not wait:
            return job, None
        return job, await asyncio.shield(job.future)

    async def _snapshot(self, request: JobRequest, jid: str) -> tuple[str, bytes]:
        """(id, build context) from one read of the project dir; identical requests
        arriving together share one read."""
        task = self._snapshots.get(jid)
        if task is None:
            project_dir = Path(self.config.projects_path) / request.project
            task = asyncio.ensure_future(
                asyncio.to_thread(
                    snapshot, request.project, request.group, request.params, project_dir,
                    self.digests,
                )
            )  # fmt: skip
            self._snapshots[jid] = task
            task.add_done_callback(lambda t: self._snapshots.pop(jid, None))
        try:
            return await asyncio.shield(task)
        except OSError as exc:
            raise JobError(f"work: could not read project '{request.project}': {exc}") from None

    async def _worker(self, n: int) -> None:
        while True:
            job = self._take_deferred()
            if job is None:
                job = await self.queue.get()
                self.queue.task_done()
            if job.abort_reason:
                continue  # aborted while queued; already resolved
            project = job.project
            cap = self.config.limits(project).max_concurrent
            if cap and self.active.get(project, 0) >= cap:
                # The project is at its cap: the job waits beside the queue, and this
                # worker takes the next job, of another project (issue 10).
                self.deferred.setdefault(project, collections.deque()).append(job)
                continue
            self.active[project] = self.active.get(project, 0) + 1
            try:
                await self._run(job)
            except Exception as exc:  # a bug, not a build failure: keep the worker alive
                self.log.error("worker %d: %s crashed: %s", n, job, exc, exc_info=exc)
                self._resolve(job, None, JobError(f"work: {exc}"))
            finally:
                self.active[project] -= 1

    def _take_deferred(self) -> Job | None:
        """A deferred job whose project has room again, oldest project first."""
        for project, jobs in list(self.deferred.items()):
            while jobs and jobs[0].abort_reason:
                jobs.popleft()
            cap = self.config.limits(project).max_concurrent
            if jobs and (not cap or self.active.get(project, 0) < cap):
                job = jobs.popleft()
                if not jobs:
                    del self.deferred[project]
                return job
            if not jobs:
                del self.deferred[project]
        return None

    @property
    def waiting(self) -> int:
        """Jobs queued or deferred: both count against the backlog."""
        return self.queue.qsize() + sum(len(jobs) for jobs in self.deferred.values())

    async def _run(self, job: Job) -> None:
        job.state = "running"
        self.running.add(job)
        timer = None
        timeouts = (
            job.request.timeout,
            self.config.build_timeout,
            self.config.limits(job.project).timeout_seconds,
        )
        timeout = min((t for t in timeouts if t > 0), default=0)
        if timeout:
            timer = asyncio.get_running_loop().call_later(
                timeout, self.abort, job, f"build timed out after {timeout:g}s; container killed"
            )
        try:
            info = await self.builder.run(job)
        except JobError as exc:
            self._resolve(job, None, exc)
        else:
            self._resolve(job, info, None)
        finally:
            if timer is not None:
                timer.cancel()
            self.running.discard(job)

    def _resolve(self, job: Job, info: BuildInfo | None, error: JobError | None) -> None:
        job.state = "done"
        if self.inflight.get(job.id) is job:
            del self.inflight[job.id]
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            assert info is not None
            job.future.set_result(info)

    def abort(self, job: Job, reason: str) -> bool:
        """Cancel a queued or running job: a queued one never starts, a running one has its
        image build cancelled or its container killed and is recorded with ``reason``."""
        if job.state == "done" or job.abort_reason:
            return False
        job.abort_reason = reason
        self.log.info("aborting %s: %s", job, reason)
        if job.state == "queued":
            self._resolve(job, None, JobError(f"work: {reason}"))
        elif job.container:
            engine = self.builder.engines.for_project(job.project)
            task = asyncio.create_task(engine.kill(job.container))
            task.add_done_callback(_consume_task)
        elif job.task is not None:
            job.task.cancel()
        return True

    def find(self, project: str, jid: str) -> Job | None:
        job = self.inflight.get(jid)
        return job if job is not None and job.project == project else None

    async def drain(self, timeout: float) -> None:
        """Graceful stop: refuse new jobs, drop queued ones, let running builds finish
        within ``timeout`` and abort (kill and record) the rest."""
        self.stopping = True
        while not self.queue.empty():
            job = self.queue.get_nowait()
            self.queue.task_done()
            self.abort(job, "cancelled: mistryd is shutting down")
        for jobs in self.deferred.values():
            for job in jobs:
                self.abort(job, "cancelled: mistryd is shutting down")
        self.deferred.clear()
        running = [j.future for j in self.running]
        if running:
            await asyncio.wait(running, timeout=max(timeout, 0))
        for job in list(self.running):
            self.abort(job, "cancelled: mistryd is shutting down")
        running = [j.future for j in self.running]
        if running:
            await asyncio.wait(running, timeout=15)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)


def coalesced_info(leader: BuildInfo, request: JobRequest, started_at_ns: int) -> BuildInfo:
    """A coalesced job's own BuildInfo (spec §1.4 step 2): the leader's ExitCode, Path,
    URL and Group; its own Params and StartedAt; Duration -1s, no logs, not cached, not
    incremental, no ErrBuild (the original returned a fresh BuildInfo with only ExitCode
    and Coalesced set)."""
    return BuildInfo(
        params=request.params_doc,
        group=leader.group,
        path=leader.path,
        coalesced=True,
        exit_code=leader.exit_code,
        transport_method=leader.transport_method,
        started_at_ns=started_at_ns,
        url=leader.url,
    )


def _consume(future: asyncio.Future[BuildInfo]) -> None:
    # Async jobs have nobody awaiting them; fetch the exception so asyncio does not warn.
    if not future.cancelled():
        future.exception()


def _consume_task(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
