"""Building one job: bootstrap the build dir, build the image, run the container, record
the result (spec §1.4, in the original's order), plus the startup recovery of interrupted
builds (spec §1.7, fixed: they are recorded as failed instead of silently dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from pathlib import Path

from pazari.mistry.buildinfo import BuildInfo
from pazari.mistry.config import MistryConfig
from pazari.mistry.engine import (
    LABEL,
    LABEL_BUILD_PATH,
    LABEL_CONTEXT,
    LABEL_JOB,
    LABEL_PROJECT,
    LABEL_UID,
    Engine,
    EngineError,
    Engines,
)
from pazari.mistry.filesystem import Filesystem
from pazari.mistry.job import Job, JobError
from pazari.mistry.jobid import build_context
from pazari.mistry.logstream import LogSink
from pazari.mistry.metrics import Metrics
from pazari.mistry.safefs import prepare_data_dir
from pazari.mistry.store import JobIndex, Layout, read_build_info, write_build_info
from pazari.runtime.logs import get_logger

INTERRUPTED = "work: build interrupted: mistryd stopped before it finished (pruned at startup)"


class Aborted(JobError):
    pass


def log_tail(path: Path, lines: int = 20, limit: int = 16384) -> str:
    """The last lines of out.log, for error reports."""
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - limit, 0))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class Builder:
    def __init__(
        self,
        config: MistryConfig,
        layout: Layout,
        fs: Filesystem,
        engines: Engines,
        index: JobIndex,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.layout = layout
        self.fs = fs
        self.engines = engines
        self.index = index
        self.metrics = metrics
        self.projects = Path(config.projects_path)
        self.log = get_logger("mistry.build")
        self._project_locks: dict[str, asyncio.Lock] = {}

    def labels(self, job: Job) -> dict[str, str]:
        return {
            LABEL: "1",
            LABEL_PROJECT: job.project,
            LABEL_JOB: job.id,
            LABEL_BUILD_PATH: str(self.layout.root),
        }

    def new_info(self, job: Job) -> BuildInfo:
        return BuildInfo(
            params=job.request.params_doc,
            group=job.group,
            path=str(self.layout.artifacts(job.project, job.id)),
            started_at_ns=job.started_at_ns,
            url=f"job/{job.project}/{job.id}",
        )

    def _lock(self, project: str) -> asyncio.Lock:
        return self._project_locks.setdefault(project, asyncio.Lock())

    async def run(self, job: Job) -> BuildInfo:
        """Build ``job``; returns its BuildInfo, or raises JobError when no container ran."""
        began = time.monotonic()
        info = self.new_info(job)
        pending = self.layout.pending(job.project, job.id)
        ready = self.layout.ready(job.project, job.id)
        error: BaseException | None = None
        ran = False
        try:
            await self._bootstrap(job, info, pending, ready)
            if job.abort_reason:
                raise Aborted(f"work: {job.abort_reason}")
            job.task = asyncio.create_task(self._execute(job, info, pending))
            await asyncio.wait([job.task])
            if job.task.cancelled():
                raise Aborted(f"work: {job.abort_reason or 'cancelled'}")
            info.exit_code = job.task.result()
            ran = True
            if job.abort_reason:
                info.err_build = f"work: {job.abort_reason}"
        except JobError as exc:
            error = exc
        except Exception as exc:
            error = JobError(f"work: {exc}")
            self.log.warning("job %s failed: %s", job, exc, exc_info=exc)
        finally:
            if job.task is not None and job.task.cancelled():
                # Cancelled between create and attach: the container may exist unnamed to us.
                with contextlib.suppress(Exception):
                    await self.engines.for_project(job.project).remove(f"mistry-{job.id}")
            await self._finish(job, info, pending, ready, error, began)
        if error is not None and not ran:
            raise error
        return info

    async def _bootstrap(self, job: Job, info: BuildInfo, pending: Path, ready: Path) -> None:
        if not (self.projects / job.project).is_dir():
            raise JobError("work: Unknown project")
        async with self._lock(job.project):
            self.layout.bootstrap(job.project, job.group)
        # A leftover pending dir (a failure before build_info existed, spec §8) or a failed
        # ready build (failures are not cached, #62) must not block this build.
        await self.fs.remove(pending)
        if ready.exists():
            await self.fs.remove(ready)
            self.index.remove(job.project, job.id)
        source = None
        if job.group:
            with contextlib.suppress(OSError):
                source = self.layout.group_link(job.project, job.group).resolve(strict=True)
        if source is not None:
            await self.fs.clone(source, pending)
            info.incremental = True
            with contextlib.suppress(FileNotFoundError):
                (pending / "out.log").unlink()
        else:
            await self.fs.create(pending)
        # The previous build owned data/ (issue 10): params/ is always fresh, artifacts/
        # too unless kept (stale artifacts leaked into incremental builds, spec §8), and a
        # link in place of any well-known dir is removed as a link, never followed.
        fresh = ("params",) if self.config.keep_artifacts else ("params", "artifacts")
        owner = None
        if self.config.user != str(os.getuid()):
            # The container user must be able to write its artifacts and cache.
            with contextlib.suppress(ValueError):
                owner = int(self.config.user.split(":")[0])
        await asyncio.to_thread(
            prepare_data_dir, pending, job.request.params, fresh=fresh, owner=owner
        )
        write_build_info(pending, info)
        self.index.put(job.project, job.id, "pending", info)
        job.log = LogSink(pending / "out.log")

    async def _image_current(self, engine: Engine, image: str, labels: dict[str, str]) -> bool:
        try:
            doc = await engine.inspect_image(image)
        except EngineError:
            return False
        have = (doc.get("Config") or {}).get("Labels") or {}
        return all(have.get(k) == v for k, v in labels.items())

    async def _execute(self, job: Job, info: BuildInfo, pending: Path) -> int:
        assert job.log is not None
        log = job.log
        image = f"mistry-{job.project}"
        context = job.context or await asyncio.to_thread(
            build_context, self.projects / job.project
        )
        job.context = b""
        digest = hashlib.sha256(context).hexdigest()
        labels = {
            LABEL: "1", LABEL_PROJECT: job.project, LABEL_CONTEXT: digest,
            LABEL_UID: self.config.user,
        }  # fmt: skip
        engine = self.engines.for_project(job.project)
        if not job.request.rebuild and await self._image_current(engine, image, labels):
            # Same context and build args as the existing image: the engine's layer cache
            # would rebuild it identically, only slower.
            log.text(f"Using image {image}: build context unchanged ({digest[:12]})\n")
        else:
            try:
                await engine.build_image(
                    context,
                    image,
                    buildargs={"uid": self.config.user},
                    labels=labels,
                    nocache=job.request.rebuild,
                    pull=False,
                    on_output=log.text,
                )
            except EngineError as exc:
                raise JobError(
                    "work: could not build docker image; "
                    f"could not build docker image '{image}': {exc}",
                    detail=log_tail(log.path),
                ) from None
        binds = [f"{pending / 'data'}:/data"]
        binds += [f"{src}:{dst}" for src, dst in self.config.mounts.items()]
        host_config: dict[str, object] = {
            "Binds": binds, "NetworkMode": "host", "AutoRemove": False,
        }  # fmt: skip
        limits = self.config.limits(job.project)
        if limits.memory_bytes:
            # Memory and swap alike: a build over its limit is killed, not swapped out.
            host_config["Memory"] = limits.memory_bytes
            host_config["MemorySwap"] = limits.memory_bytes
        if limits.cpus:
            host_config["NanoCpus"] = int(limits.cpus * 1e9)
        if limits.pids:
            host_config["PidsLimit"] = limits.pids
        spec = {
            "Image": image,
            "User": self.config.user,
            "Labels": self.labels(job),
            "HostConfig": host_config,
        }
        name = f"mistry-{job.id}"
        # An earlier container by that name (the original renamed it away, #20) is ours.
        await engine.remove(name)
        container = await engine.create_container(name, spec)
        job.container = container
        try:
            frames = await engine.attach(container)
            await engine.start(container)
            if job.abort_reason:
                await engine.kill(container)
            async for stream, chunk in frames:
                log.write(chunk, stream)
            return await engine.wait(container)
        finally:
            job.container = ""
            with contextlib.suppress(Exception):
                await asyncio.shield(engine.remove(container))

    async def _finish(
        self,
        job: Job,
        info: BuildInfo,
        pending: Path,
        ready: Path,
        error: BaseException | None,
        began: float,
    ) -> None:
        """Record the result and move pending → ready, even on failure (#75)."""
        if error is not None:
            info.err_build = str(error)
        info.duration_ns = int((time.monotonic() - began) * 1000) * 1_000_000
        if job.log is not None:
            job.log.close()
            info.container_stderr = job.log.stderr
        if os.path.lexists(pending) and (pending / "data").is_dir():
            try:
                write_build_info(pending, info)
                os.rename(pending, ready)
                state_ok = True
            except OSError as exc:
                self.log.error("job %s: could not move to ready: %s", job, exc)
                state_ok = False
            if state_ok:
                self.index.put(job.project, job.id, "ready", info)
                if error is None and info.exit_code == 0 and not info.err_build:
                    async with self._lock(job.project):
                        self.layout.set_link(job.project, job.group, job.id)
        elif os.path.lexists(pending):
            # Failed before the build dir was usable: never leave a stuck pending dir (§8).
            await self.fs.remove(pending)
            self.index.remove(job.project, job.id)
        with contextlib.suppress(OSError):
            info.container_stdouterr = (ready / "out.log").read_bytes().decode(errors="replace")
        seconds = info.duration_ns / 1e9
        if info.exit_code != -999:
            self.metrics.inc("builds_finished", job.project)
            if info.exit_code == 0 and not info.err_build:
                self.metrics.observe("builds_succeeded_seconds", job.project, seconds)
                if info.incremental:
                    self.metrics.inc("builds_processed_incrementally", job.project)
            else:
                self.metrics.observe("builds_failed_seconds", job.project, seconds)

    async def recover(self) -> int:
        """Startup: record every pending build as failed with an ErrBuild reason and move it
        to ready/, so the next identical request builds afresh; remove containers a crashed
        mistryd (of this build_path) left running. Returns the number recovered."""
        recovered = 0
        for engine in self.engines:
            with contextlib.suppress(EngineError, OSError):
                leftovers = await engine.containers({LABEL_BUILD_PATH: str(self.layout.root)})
                for c in leftovers:
                    await engine.remove(str(c["Id"]))
        for project in self.layout.projects():
            for job_id in self.layout.jobs(project, "pending"):
                pending = self.layout.pending(project, job_id)
                ready = self.layout.ready(project, job_id)
                try:
                    info = read_build_info(pending)
                except (OSError, ValueError):
                    info = BuildInfo(
                        path=str(self.layout.artifacts(project, job_id)),
                        url=f"job/{project}/{job_id}",
                    )
                info.err_build = INTERRUPTED
                if not (pending / "data").is_dir() or ready.exists():
                    await self.fs.remove(pending)
                    continue
                write_build_info(pending, info)
                os.rename(pending, ready)
                recovered += 1
                self.log.warning("[cleanup] recorded interrupted build %s/%s", project, job_id)
        return recovered
