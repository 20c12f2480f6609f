"""The durable local spool (spec "Persistence: sinks and the spool").

Events are appended to segment files ``<base offset>.seg`` in one logical byte space; a record
is ``[u32 length][u32 crc32][u16 tenant length][u16 key length][tenant][key][event]``.
Appends are buffered in memory and written by one flusher task, which then fsyncs in a thread:
everything appended while an fsync runs is covered by the next one (group commit), and every
append of one cycle shares one future that resolves when its bytes are on disk
(``ack: "spooled"``). Each sink reads from its own cursor (``cursor-<sink>``, persisted by
write + fsync + rename); a segment is deleted once every persisted cursor has passed it. On
start the tail of the last segment is checked and a torn record (a crash mid-write) is cut.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pazari.runtime.logs import get_logger
from pazari.scratchd.config import SpoolConfig

_HEAD = struct.Struct("<IIHH")
_HEAD_SIZE = _HEAD.size
log = get_logger("scratchd.spool")


class SpoolFull(Exception):
    """The spool is over its disk quota: the request gets 503 (spec "Persistence")."""


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # logical offset of the record start
    end: int  # logical offset right after it
    tenant: str
    key: bytes
    event: bytes


def _segment_name(base: int) -> str:
    return f"{base:020d}.seg"


class Spool:
    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self.dir = Path(config.dir)
        self.bases: list[int] = []
        self.end = 0  # written (visible to readers) logical end
        self.durable = 0  # fsynced logical end
        self._fd = -1
        self._seg_size = 0
        self._pending = bytearray()
        self._pending_events = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._read_fds: dict[int, int] = {}
        self._tenant_names: dict[bytes, str] = {}
        self._closed = False
        self.cursors: dict[str, int] = {}
        self.persisted: dict[str, int] = {}
        self.events_written = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, sinks: Iterable[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bases = sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())
        if not self.bases:
            self.bases = [0]
            (self.dir / _segment_name(0)).touch()
        last = self.bases[-1]
        path = self.dir / _segment_name(last)
        valid = self._valid_length(path)
        if valid != path.stat().st_size:
            log.warning("cutting a torn record off %s at %d", path.name, valid)
            os.truncate(path, valid)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._seg_size = valid
        self.end = self.durable = last + valid
        first = self.bases[0]
        for sink in sinks:
            offset = self._load_cursor(sink)
            offset = first if offset is None else min(max(offset, first), self.end)
            self.cursors[sink] = self.persisted[sink] = offset

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._commit = self._loop.create_future()
        self._flusher = asyncio.create_task(self._flush_loop(), name="spool-flusher")

    async def stop_writes(self) -> None:
        """Write and fsync everything pending; appends after this are refused."""
        self._closed = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher

    def close(self) -> None:
        """Persist the cursors and close the files (after ``stop_writes``)."""
        self.persist_cursors()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()

    # -- writing -----------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        return self.end - self.bases[0] + len(self._pending)

    def over_quota(self) -> bool:
        return self.disk_bytes() >= self.config.quota_bytes

    def append(self, tenant: bytes, key: bytes, event: bytes) -> asyncio.Future[None]:
        """Queue one record; the future resolves once it is fsynced. Raises SpoolFull."""
        if self._closed:
            raise SpoolFull("spool is shutting down")
        if self.disk_bytes() >= self.config.quota_bytes:
            raise SpoolFull(f"spool over its quota of {self.config.quota_bytes} bytes")
        body_len = 8 + len(tenant) + len(key) + len(event)
        crc = zlib.crc32(event, zlib.crc32(key, zlib.crc32(tenant)))
        self._pending += _HEAD.pack(body_len, crc, len(tenant), len(key))
        self._pending += tenant
        self._pending += key
        self._pending += event
        self._pending_events += 1
        if not self._wake.is_set():
            self._wake.set()
        assert self._commit is not None
        return self._commit

    async def _flush_loop(self) -> None:
        assert self._loop is not None
        loop = self._loop
        delay = self.config.fsync_delay_ms / 1000
        while True:
            if not self._pending:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if delay and not self._closed:
                await asyncio.sleep(delay)  # let a few more appends join this commit
            self._wake.clear()
            data, self._pending = self._pending, bytearray()
            events, self._pending_events = self._pending_events, 0
            commit = self._commit
            assert commit is not None
            self._commit = loop.create_future()
            try:
                self._write(data)
                self.events_written += events
                self._written.set()
                self._written = asyncio.Event()
                await loop.run_in_executor(None, os.fdatasync, self._fd)
                self.durable = self.end
            except OSError as exc:
                log.error("spool write failed: %s", exc)
                if not commit.done():
                    commit.set_exception(exc)
                continue
            if not commit.done():
                commit.set_result(None)

    def _write(self, data: bytearray) -> None:
        if self._seg_size and self._seg_size + len(data) > self.config.segment_bytes:
            self._roll()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._seg_size += len(data)
        self.end += len(data)

    def _roll(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        base = self.end
        self.bases.append(base)
        path = self.dir / _segment_name(base)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._seg_size = 0

    # -- reading -----------------------------------------------------------------------------

    async def wait_beyond(self, offset: int, timeout: float) -> None:
        """Return once data past ``offset`` is written (or after ``timeout``)."""
        if self.end > offset:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), timeout)

    def read(self, offset: int, max_bytes: int = 1 << 20) -> list[Record]:
        """Whole records from ``offset`` on, up to about ``max_bytes``."""
        out: list[Record] = []
        while offset < self.end and max_bytes > 0:
            i = bisect.bisect_right(self.bases, offset) - 1
            base = self.bases[i]
            seg_end = self.bases[i + 1] if i + 1 < len(self.bases) else self.end
            if offset >= seg_end:
                break
            want = min(seg_end - offset, max_bytes)
            data = os.pread(self._read_fd(base), want, offset - base)
            pos = 0
            while pos + _HEAD_SIZE <= len(data):
                body_len, _crc, tlen, klen = _HEAD.unpack_from(data, pos)
                stop = pos + 4 + body_len
                if stop > len(data):
                    break
                t0 = pos + _HEAD_SIZE
                tenant_raw = data[t0:t0 + tlen]
                tenant = self._tenant_names.get(tenant_raw)
                if tenant is None:
                    tenant = self._tenant_names[tenant_raw] = tenant_raw.decode()
                key = data[t0 + tlen:t0 + tlen + klen]
                out.append(Record(offset + pos, offset + stop, tenant, key,
                                  data[t0 + tlen + klen:stop]))
                pos = stop
            if pos == 0:
                if want < seg_end - offset:  # one record larger than max_bytes
                    max_bytes = seg_end - offset
                    continue
                break
            offset += pos
            max_bytes -= pos
        return out

    def _read_fd(self, base: int) -> int:
        fd = self._read_fds.get(base)
        if fd is None:
            fd = os.open(self.dir / _segment_name(base), os.O_RDONLY | os.O_CLOEXEC)
            self._read_fds[base] = fd
        return fd

    # -- cursors -----------------------------------------------------------------------------

    def _cursor_path(self, sink: str) -> Path:
        return self.dir / f"cursor-{sink}"

    def _load_cursor(self, sink: str) -> int | None:
        try:
            text = self._cursor_path(sink).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def persist_cursors(self) -> None:
        """Write every changed cursor (fsync + rename), then drop fully consumed segments."""
        self.write_cursors()
        self.drop_segments()

    def write_cursors(self) -> None:
        """Write every changed cursor (safe in a worker thread: touches only cursor files)."""
        for sink, offset in list(self.cursors.items()):
            if self.persisted.get(sink) == offset:
                continue
            path = self._cursor_path(sink)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, b"%d\n" % offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self.persisted[sink] = offset

    def drop_segments(self) -> None:
        low = min(self.persisted.values(), default=self.end)
        while len(self.bases) > 1 and self.bases[1] <= low:
            base = self.bases.pop(0)
            fd = self._read_fds.pop(base, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                (self.dir / _segment_name(base)).unlink()

    @staticmethod
    def _valid_length(path: Path) -> int:
        """Length of the prefix of whole, checksummed records (a crash can tear the last)."""
        data = path.read_bytes()
        pos = 0
        while pos + _HEAD_SIZE <= len(data):
            body_len, crc, tlen, klen = _HEAD.unpack_from(data, pos)
            stop = pos + 4 + body_len
            if body_len < 8 or stop > len(data):
                break
            t0 = pos + _HEAD_SIZE
            tenant = data[t0:t0 + tlen]
            key = data[t0 + tlen:t0 + tlen + klen]
            event = data[t0 + tlen + klen:stop]
            if zlib.crc32(event, zlib.crc32(key, zlib.crc32(tenant))) != crc:
                break
            pos = stop
        return pos
