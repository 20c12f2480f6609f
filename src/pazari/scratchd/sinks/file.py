"""The ``file`` sink: JSON lines per tenant, one file per UTC hour, gzipped when the hour
turns (spec "Persistence"). Files are ``<dir>/<tenant>-<YYYYMMDDHH>.jsonl`` (``…-w<i>.jsonl``
for worker i under ``--workers N``) and become ``.jsonl.gz``; a restart gzips what an earlier
run left behind for a past hour."""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import time
from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO

from pazari.runtime.logs import get_logger
from pazari.scratchd.config import SinkConfig
from pazari.scratchd.sinks.base import Sink
from pazari.scratchd.spool import Record

log = get_logger("scratchd.sink.file")
_TENANT = attrgetter("tenant")
_EVENT = attrgetter("event")


def _hour(now: float | None = None) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(now))


def gzip_file(path: Path) -> Path:
    """Compress ``path`` to ``path.gz`` (fsynced) and remove the original."""
    target = path.with_name(path.name + ".gz")
    tmp = target.with_name(target.name + ".tmp")
    with path.open("rb") as src, tmp.open("wb") as raw:
        with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, target)
    path.unlink()
    return target


class FileSink(Sink):
    """``worker`` (``--workers N``): every worker process writes, rotates and gzips only its
    own files, ``<tenant>-<YYYYMMDDHH>-w<i>.jsonl``. Several processes appending to one file
    would interleave buffered writes mid-line (only writes ≤ PIPE_BUF are atomic, and a batch
    is larger), and one worker's hourly gzip would pull the file from under the others."""

    def __init__(self, name: str, config: SinkConfig, worker: int | None = None) -> None:
        super().__init__(name, config)
        self.dir = Path(config.path)
        self.suffix = "" if worker is None else f"-w{worker}"
        self.files: dict[str, tuple[str, BinaryIO]] = {}
        self.clock = time.time
        self._dirty: set[BinaryIO] = set()
        self._rotations: set[asyncio.Future[Path]] = set()

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.config.gzip:
            current = f"-{_hour(self.clock())}{self.suffix}.jsonl"
            for path in sorted(self.dir.glob(f"*{self.suffix}.jsonl")):
                if not path.name.endswith(current):
                    self._rotate_later(path)

    def _rotate_later(self, path: Path) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.run_in_executor(None, gzip_file, path))
        self._rotations.add(task)
        task.add_done_callback(self._rotations.discard)

    def _file(self, tenant: str, hour: str) -> BinaryIO:
        entry = self.files.get(tenant)
        if entry is not None and entry[0] == hour:
            return entry[1]
        if entry is not None:
            old = entry[1]
            old.flush()
            os.fsync(old.fileno())
            old.close()
            self._dirty.discard(old)
            if self.config.gzip:
                self._rotate_later(self._path(tenant, entry[0]))
        f = self._path(tenant, hour).open("ab")
        self.files[tenant] = (hour, f)
        return f

    def _path(self, tenant: str, hour: str) -> Path:
        return self.dir / f"{tenant}-{hour}{self.suffix}.jsonl"

    async def deliver(self, records: Sequence[Record]) -> None:
        hour = _hour(self.clock())
        # Consecutive runs per tenant (the usual case is one run), order kept per file.
        for tenant, run in groupby(records, _TENANT):
            f = self._file(tenant, hour)
            events = list(map(_EVENT, run))
            events.append(b"")
            f.write(b"\n".join(events))
            self._dirty.add(f)
        for f in self._dirty:
            f.flush()

    async def sync(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if dirty:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _fsync_all, [f.fileno() for f in dirty])

    async def close(self) -> None:
        await self.sync()
        for _, f in self.files.values():
            f.close()
        self.files.clear()
        if self._rotations:
            await asyncio.gather(*self._rotations, return_exceptions=True)


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:  # the file was rotated and closed meanwhile
            log.debug("fsync skipped: %s", exc)
