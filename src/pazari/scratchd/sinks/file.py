"""The ``file`` sink: JSON lines per tenant, one file per UTC hour of the events' time,
gzipped when the hour turns (spec "Persistence"). Files are
``<dir>/<tenant>-<YYYYMMDDHH>.jsonl`` (``…-w<i>.jsonl`` for worker i under ``--workers N``)
and become ``.jsonl.gz`` (then ``.1.jsonl.gz``, … for late events of that hour); a restart
gzips what an earlier run left behind for a past hour."""

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
_EVENT = attrgetter("event")
_TENANT = attrgetter("tenant")


_RECEIVED = b'"received_at":'
_HOUR_MS = 3_600_000


def _hour(now: float | None = None) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(now))


def event_hour(event: bytes) -> int:
    """The UTC hour (ms // 3.6e6) of an encoded event's ``received_at`` (spec "The event":
    keys in a fixed order, so the field is among the first ~150 bytes); -1 if missing."""
    i = event.find(_RECEIVED, 0, 256)
    if i < 0:
        return -1
    i += len(_RECEIVED)
    try:
        return int(event[i:event.find(b",", i, i + 24)]) // _HOUR_MS
    except ValueError:
        return -1


_ROTATING = ".rotating-"


def gzip_file(path: Path, stem: str | None = None) -> Path:
    """Compress ``path`` to ``<stem>.jsonl.gz`` (fsynced) and remove the original. An
    existing .gz is never overwritten (issue 12: events of an hour delivered late, a replay,
    a second run): the next free ``<stem>.<n>.jsonl.gz`` is taken, and the final name is
    created with ``link``, which fails rather than replace a file that appeared meanwhile."""
    if stem is None:
        stem = path.name.removesuffix(".jsonl")
    tmp = path.with_name(path.name + ".gz.tmp")
    with path.open("rb") as src, tmp.open("wb") as raw:
        with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    n = 0
    while True:
        target = path.with_name(f"{stem}.jsonl.gz" if n == 0 else f"{stem}.{n}.jsonl.gz")
        try:
            os.link(tmp, target)
            break
        except FileExistsError:
            n += 1
    tmp.unlink()
    path.unlink()
    return target


class FileSink(Sink):
    """``worker`` (``--workers N``): every worker process writes, rotates and gzips only its
    own files, ``<tenant>-<YYYYMMDDHH>-w<i>.jsonl``. Several processes appending to one file
    would interleave buffered writes mid-line (only writes ≤ PIPE_BUF are atomic, and a batch
    is larger), and one worker's hourly gzip would pull the file from under the others.

    The hour of a file is the events' own (``received_at``, issue 12), not the hour they are
    delivered in: after an outage or a replay they still land in their hour. A file is
    closed and gzipped once the wall clock has left its hour; a late event for that hour
    opens a fresh ``.jsonl`` which becomes another ``.<n>.jsonl.gz`` beside the first."""

    def __init__(self, name: str, config: SinkConfig, worker: int | None = None) -> None:
        super().__init__(name, config)
        self.dir = Path(config.path)
        self.suffix = "" if worker is None else f"-w{worker}"
        self.files: dict[tuple[str, int], BinaryIO] = {}
        self.clock = time.time
        self._dirty: set[BinaryIO] = set()
        self._rotations: set[asyncio.Future[Path]] = set()
        self._hour_names: dict[int, str] = {}

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.config.gzip:
            current = f"-{_hour(self.clock())}{self.suffix}.jsonl"
            for path in sorted(self.dir.glob(f"*{self.suffix}.jsonl")):
                if not path.name.endswith(current):
                    self._rotate_later(path)
            # Rotations a crash interrupted: the file was renamed aside, not yet gzipped.
            for path in sorted(self.dir.glob(f"*{self.suffix}{_ROTATING}*")):
                self._gzip_later(path, path.name.partition(_ROTATING)[0])

    def _rotate_later(self, path: Path) -> None:
        """Rename ``path`` aside (so that a late event of its hour opens a new file instead
        of appending to one being compressed and then deleted), then gzip it off the loop."""
        stem = path.name.removesuffix(".jsonl")
        n = 0
        while (staged := path.with_name(f"{stem}{_ROTATING}{n}")).exists():
            n += 1
        os.rename(path, staged)
        self._gzip_later(staged, stem)

    def _gzip_later(self, path: Path, stem: str) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.run_in_executor(None, gzip_file, path, stem))
        self._rotations.add(task)
        task.add_done_callback(self._rotations.discard)

    def _hour_name(self, hour: int) -> str:
        name = self._hour_names.get(hour)
        if name is None:
            name = _hour(hour * 3600) if hour >= 0 else _hour(self.clock())
            if len(self._hour_names) > 1024:
                self._hour_names.clear()
            self._hour_names[hour] = name
        return name

    def _file(self, tenant: str, hour: int) -> BinaryIO:
        f = self.files.get((tenant, hour))
        if f is None:
            f = self._path(tenant, self._hour_name(hour)).open("ab")
            self.files[(tenant, hour)] = f
        return f

    def _close_past_hours(self, now_hour: int) -> None:
        """Close (flushed, fsynced) and gzip every file of an hour the clock has left."""
        for key in [k for k in self.files if k[1] < now_hour]:
            f = self.files.pop(key)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._dirty.discard(f)
            if self.config.gzip:
                self._rotate_later(self._path(key[0], self._hour_name(key[1])))

    async def ping(self) -> None:
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise OSError(f"{self.dir} is not a writable directory")

    def _path(self, tenant: str, hour: str) -> Path:
        return self.dir / f"{tenant}-{hour}{self.suffix}.jsonl"

    async def deliver(self, records: Sequence[Record]) -> None:
        now_hour = int(self.clock() * 1000) // _HOUR_MS
        # Consecutive runs per tenant (the usual case is one run), order kept. The spool is
        # in arrival order, so received_at does not decrease along a run: when its first and
        # last events share an hour, so do all (no per-event parse on the hot path).
        for tenant, run in groupby(records, _TENANT):
            events = list(map(_EVENT, run))
            first = event_hour(events[0])
            if first == event_hour(events[-1]):
                self._write(tenant, first if first >= 0 else now_hour, events)
                continue
            for hour, part in groupby(events, event_hour):
                self._write(tenant, hour if hour >= 0 else now_hour, list(part))
        for f in self._dirty:
            f.flush()
        self._close_past_hours(now_hour)

    def _write(self, tenant: str, hour: int, events: list[bytes]) -> None:
        f = self._file(tenant, hour)
        events.append(b"")
        f.write(b"\n".join(events))
        self._dirty.add(f)

    async def sync(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if dirty:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _fsync_all, [f.fileno() for f in dirty])

    async def close(self) -> None:
        await self.sync()
        for f in self.files.values():
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
