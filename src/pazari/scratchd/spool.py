"""The durable local spool (spec "Persistence: sinks and the spool").

Events are appended to segment files ``<base offset>.seg`` in one logical byte space; a record
is ``[u32 length][u32 crc32][u16 tenant length][u16 key length][tenant][key][event]``.
Appends are buffered in memory and written by one flusher task, which then fsyncs in a thread:
everything appended meanwhile is covered by the next fsync (group commit; up to MAX_INFLIGHT
overlap), and every append of one cycle shares one future that resolves, in order, when its
bytes are on disk (``ack: "spooled"``). Each sink reads from its own cursor
(``cursor-<sink>``, persisted by write + fsync + rename); a segment is deleted once every
persisted cursor has passed it. On start the tail of the last segment is checked and a torn
record (a crash mid-write) is cut.

Write errors (issue 12). A failed or short ``write`` (ENOSPC) cuts the segment back to its
last whole record (``ftruncate``), or, when even that fails, rolls to a new segment so that
the torn bytes lie past the old segment's logical end where no reader looks; the commit of
those records fails (503, nothing acknowledged) and the spool keeps going once there is room.
A failed ``fsync`` is different: after it the kernel may have dropped the dirty pages and
marked them clean ("fsyncgate", PostgreSQL 2018), so a later fsync that succeeds proves
nothing. The spool stops acknowledging for good (every append is refused, /healthz is 503)
and says so in the log; readers still forward what was written.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pazari.event import sync_loop
from pazari.runtime.logs import get_logger
from pazari.scratchd.config import SpoolConfig

_HEAD = struct.Struct("<IIHH")
_HEAD_SIZE = _HEAD.size
_SYNC = struct.Struct("=ii")  # sync_loop's messages: request (fd, seq), result (seq, errno)
# Group commits whose fdatasync may run at once. Under closed-loop load (64 keep-alive
# clients, each waiting for its answer) one commit at a time left the CPU idle ~15% of the
# time: the appends of the next cycle waited for the previous fdatasync before their own
# could start. The commits still resolve strictly in order. Issue 17: each fdatasync costs
# ~170-220 us of kernel CPU on this ext4 whatever its size, so the group size sets the CPU
# per event: the 64 clients of the pixel benchmark split into groups of ~19 with 3 commits in
# flight, ~24 with 2, ~33 with 1 (which, on a busy disk, lost throughput again); 2 it is.
MAX_INFLIGHT = 2
log = get_logger("scratchd.spool")


class SpoolFull(Exception):
    """The spool is over its disk quota: the request gets 503 (spec "Persistence")."""


class SpoolFailed(SpoolFull):
    """An fsync failed: the spool acknowledges nothing any more (503 until a restart)."""


class Record(NamedTuple):
    """One spooled event. Built with ``tuple.__new__`` in ``read`` (a third of a slotted
    class's ``__init__``: forwarders build one per event, which showed in the profiles)."""

    offset: int  # logical offset of the record start
    end: int  # logical offset right after it
    tenant: str
    key: bytes
    event: bytes


_new_record = tuple.__new__


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        self._written: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        # The fdatasync threads (one per commit in flight) run pazari.event.sync_loop, which
        # never takes the GIL (issue 17: a ThreadPoolExecutor worker took it twice per
        # commit, forcing the event loop off it; and run_in_executor's
        # inspect.iscoroutinefunction check was 4% of the pixel benchmark's samples).
        # Requests go down one pipe, results come back on another that the loop watches.
        self._sync_threads: list[threading.Thread] = []
        self._sync_requests = self._sync_results = -1
        self._syncs: dict[int, asyncio.Future[None]] = {}
        self._sync_seq = 0
        self._sync_fds: tuple[int, ...] = ()
        self._read_fds: dict[int, int] = {}
        self._tenant_names: dict[bytes, str] = {}
        self._closed = False
        # Set when an fsync failed: the reason every append is refused from then on.
        self.failed: str | None = None
        # A write failed and its torn bytes could not be cut yet: repair before writing.
        self._torn = False
        self.cursors: dict[str, int] = {}
        self.persisted: dict[str, int] = {}
        self.events_written = 0
        self.commits = 0  # group commits (fsyncs); events_written / commits = group size

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
        requests, self._sync_requests = os.pipe2(os.O_CLOEXEC)
        self._sync_results, results = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(results, True)
        self._sync_fds = (requests, results)
        self._loop.add_reader(self._sync_results, self._synced)
        for i in range(MAX_INFLIGHT):
            thread = threading.Thread(target=sync_loop, args=(requests, results),
                                      name=f"spool-sync-{i}", daemon=True)
            thread.start()
            self._sync_threads.append(thread)
        self._flusher = asyncio.create_task(self._flush_loop(), name="spool-flusher")

    async def stop_writes(self) -> None:
        """Write and fsync everything pending; appends after this are refused."""
        self._closed = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher

    def close(self) -> None:
        """Persist the cursors and close the files (after ``stop_writes``). The sync threads
        are joined and the files closed even when the cursors cannot be written (a spool on
        a failed disk: the race checker found the threads left running, issue 19)."""
        try:
            self.persist_cursors()
        finally:
            self._stop_syncers()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()

    @property
    def closed(self) -> bool:
        return self._fd < 0

    # -- writing -----------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        return self.end - self.bases[0] + len(self._pending)

    def over_quota(self) -> bool:
        return self.disk_bytes() >= self.config.quota_bytes

    def append(self, tenant: bytes, key: bytes, event: bytes) -> asyncio.Future[None]:
        """Queue one record; the future resolves once it is fsynced. Raises SpoolFull."""
        self._check_room()
        # crc32 chains: crc(tenant + key + event) without concatenating them first.
        crc = zlib.crc32(event, zlib.crc32(key, zlib.crc32(tenant)))
        pending = self._pending
        pending += _HEAD.pack(8 + len(tenant) + len(key) + len(event), crc, len(tenant),
                              len(key))
        pending += tenant
        pending += key
        pending += event
        self._pending_events += 1
        if not self._wake.is_set():
            self._wake.set()
        assert self._commit is not None
        return self._commit

    def framing_buffer(self) -> bytearray:
        """The pending buffer, for a caller that frames one whole record into it in place
        (``pazari.event.frame_query``, the pixel path: issue 17), then calls :meth:`framed`
        at once. Raises SpoolFull."""
        if (self.failed is None and not self._closed and self.end - self.bases[0]
                + len(self._pending) < self.config.quota_bytes):
            return self._pending  # _check_room's cases, inline: one call less per event
        self._check_room()
        return self._pending

    def framed(self) -> asyncio.Future[None]:
        """One record was framed into the pending buffer: the future of its commit."""
        self._pending_events += 1
        if not self._wake.is_set():
            self._wake.set()
        assert self._commit is not None
        return self._commit

    def append_many(self, tenant: bytes, key: bytes,
                    events: list[bytes]) -> asyncio.Future[None]:
        """Queue the records of one batch (same tenant and key) in one go: all or none.
        The future resolves once they are fsynced. Raises SpoolFull."""
        self._check_room()
        prefix = tenant + key
        base_crc = zlib.crc32(key, zlib.crc32(tenant))
        fixed = 8 + len(prefix)
        tlen = len(tenant)
        klen = len(key)
        pack = _HEAD.pack
        crc32 = zlib.crc32
        parts: list[bytes] = []
        add = parts.append
        for event in events:
            add(pack(fixed + len(event), crc32(event, base_crc), tlen, klen))
            add(prefix)
            add(event)
        self._pending += b"".join(parts)
        self._pending_events += len(events)
        if not self._wake.is_set():
            self._wake.set()
        assert self._commit is not None
        return self._commit

    def _check_room(self) -> None:
        if self.failed is not None:
            raise SpoolFailed(self.failed)
        if self._closed:
            raise SpoolFull("spool is shutting down")
        if self.disk_bytes() >= self.config.quota_bytes:
            raise SpoolFull(f"spool over its quota of {self.config.quota_bytes} bytes")

    async def _flush_loop(self) -> None:
        assert self._loop is not None
        loop = self._loop
        delay = self.config.fsync_delay_ms / 1000
        # Group commits in flight, oldest first: (commit, logical end, fdatasync future).
        inflight: deque[tuple[asyncio.Future[None], int, asyncio.Future[None]]] = deque()

        def settle(_: object = None) -> None:
            """Resolve the commits whose fdatasync finished, strictly in order."""
            while inflight and inflight[0][2].done():
                commit, end, sync = inflight.popleft()
                exc = sync.exception()
                if exc is not None and self.failed is None:
                    self._fsync_failed(exc)
                if self.failed is not None:
                    # A later fsync that succeeds does not make earlier pages durable.
                    if not commit.done():
                        commit.set_exception(OSError(self.failed))
                    continue
                self.durable = max(self.durable, end)
                if not commit.done():
                    commit.set_result(None)

        while True:
            if not self._pending:
                if self._closed:
                    while inflight:
                        await asyncio.wait([inflight[-1][2]])
                        settle()
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            if delay and not self._closed:
                await asyncio.sleep(delay)  # let a few more appends join this commit
            # A torn write may be cut by rolling to a new segment, which closes the fd too.
            rolls = self._torn or (self._seg_size and self._seg_size + len(self._pending) >
                                   self.config.segment_bytes)
            if inflight and (len(inflight) >= MAX_INFLIGHT or rolls):
                # A roll closes the segment's fd: no fdatasync may still be using it.
                await asyncio.wait([inflight[-1][2] if rolls else inflight[0][2]])
                settle()
                continue
            self._wake.clear()
            data, self._pending = self._pending, bytearray()
            events, self._pending_events = self._pending_events, 0
            commit = self._commit
            assert commit is not None
            self._commit = loop.create_future()
            try:
                self._write(data)
            except OSError as exc:
                log.error("spool write failed (%d events refused with 503): %s", events, exc)
                if not commit.done():
                    commit.set_exception(exc)
                continue
            self.events_written += events
            self.commits += 1
            self._wake_readers()
            sync = self._fdatasync(self._fd)
            inflight.append((commit, self.end, sync))
            sync.add_done_callback(settle)

    def _fdatasync(self, fd: int) -> asyncio.Future[None]:
        """fdatasync(fd) on a sync thread; the future resolves (or fails with the OSError)
        once it returned."""
        assert self._loop is not None
        self._sync_seq = seq = (self._sync_seq + 1) & 0x7FFFFFFF
        future = self._syncs[seq] = self._loop.create_future()
        # At most MAX_INFLIGHT requests are ever queued: this write never blocks.
        os.write(self._sync_requests, _SYNC.pack(fd, seq))
        return future

    def _synced(self) -> None:
        """Results arrived (whole 8-byte messages: every write is one atomic message)."""
        try:
            data = os.read(self._sync_results, 4096)
        except BlockingIOError:
            return
        for seq, err in _SYNC.iter_unpack(data):
            future = self._syncs.pop(seq, None)
            if future is None or future.done():
                continue
            if err:
                future.set_exception(OSError(err, os.strerror(err)))
            else:
                future.set_result(None)

    def _stop_syncers(self) -> None:
        """End the sync threads (end of file on their request pipe) and close the pipes."""
        if self._sync_requests < 0:
            return
        os.close(self._sync_requests)
        self._sync_requests = -1
        for thread in self._sync_threads:
            thread.join()
        self._sync_threads.clear()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sync_results)
        for fd in (self._sync_results, *self._sync_fds):
            os.close(fd)
        self._sync_results = -1

    def _fsync_failed(self, exc: BaseException) -> None:
        self.failed = (f"spool fsync failed ({exc}): not acknowledging any more events "
                       "until a restart (a failed fsync cannot be retried safely)")
        log.critical("%s", self.failed)

    def _write(self, data: bytearray) -> None:
        """Append ``data`` whole or not at all (see the module docstring)."""
        if self._torn:
            self._cut_torn()
        if self._seg_size and self._seg_size + len(data) > self.config.segment_bytes:
            self._roll()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            self._torn = True
            with contextlib.suppress(OSError):
                self._cut_torn()
            raise
        self._seg_size += len(data)
        self.end += len(data)

    def _cut_torn(self) -> None:
        """Drop the bytes of a failed write: truncate the segment to its last whole record,
        or start a new segment at the logical end (the old one is then read only up to the
        new base, so its torn tail is never seen). Raises when neither works."""
        try:
            os.ftruncate(self._fd, self._seg_size)
        except OSError as exc:
            log.warning("spool: cannot truncate a torn write (%s): rolling", exc)
            self._roll()
        self._torn = False

    def _roll(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fsync_failed(exc)
            raise
        path = self.dir / _segment_name(self.end)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.close(self._fd)
        self._fd = fd
        self.bases.append(self.end)
        self._seg_size = 0

    # -- reading -----------------------------------------------------------------------------

    def _wake_readers(self) -> None:
        written, self._written = self._written, None
        if written is not None and not written.done():
            written.set_result(None)

    async def wait_beyond(self, offset: int, timeout: float) -> None:
        """Return once data past ``offset`` is written (or after ``timeout``, or spuriously).

        One future shared by every reader and resolved per write: no task per wait (as
        ``asyncio.wait_for`` would create), the timeout is a timer on the loop."""
        if self.end > offset:
            return
        loop = asyncio.get_running_loop()
        if self._written is None or self._written.done():  # done: a timer released it
            self._written = loop.create_future()
        written = self._written
        timer = loop.call_later(timeout, _release, written)
        try:
            await asyncio.shield(written)  # a cancelled reader must not cancel the others
        finally:
            timer.cancel()

    def read(self, offset: int, max_bytes: int = 1 << 20) -> list[Record]:
        """Whole records from ``offset`` on, up to about ``max_bytes`` (one record more when a
        single record is larger)."""
        out: list[Record] = []
        unpack = _HEAD.unpack_from
        names = self._tenant_names
        last_raw = b""
        last_len = -1
        tenant = ""
        while offset < self.end and max_bytes > 0:
            i = bisect.bisect_right(self.bases, offset) - 1
            base = self.bases[i]
            seg_end = self.bases[i + 1] if i + 1 < len(self.bases) else self.end
            if offset >= seg_end:
                break
            want = min(seg_end - offset, max_bytes)
            data = os.pread(self._read_fd(base), want, offset - base)
            size = len(data)
            pos = 0
            while pos + _HEAD_SIZE <= size:
                body_len, _crc, tlen, klen = unpack(data, pos)
                stop = pos + 4 + body_len
                if stop > size:
                    break
                t0 = pos + _HEAD_SIZE
                k0 = t0 + tlen
                e0 = k0 + klen
                # Runs of one tenant are the norm: compare in place before slicing.
                if tlen != last_len or not data.startswith(last_raw, t0):
                    last_raw = data[t0:k0]
                    last_len = tlen
                    found = names.get(last_raw)
                    if found is None:
                        found = names[last_raw] = last_raw.decode()
                    tenant = found
                out.append(_new_record(Record, (offset + pos, offset + stop, tenant,
                                                data[k0:e0], data[e0:stop])))
                pos = stop
            if pos == 0:
                if not out and want < seg_end - offset:  # one record larger than max_bytes
                    max_bytes = seg_end - offset
                    continue
                break  # the rest of max_bytes is less than the next record
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
        """Write every changed cursor (safe in a worker thread: touches only cursor files).

        A cursor is a fixed-width line written to a new file that replaces the old one. On a
        full disk (no block for the new file) it is overwritten in place instead: one
        21-byte write inside the block the file already has, which needs no allocation, so
        the cursors still move and the consumed segments get deleted, freeing room."""
        for sink, offset in list(self.cursors.items()):
            if self.persisted.get(sink) == offset:
                continue
            path = self._cursor_path(sink)
            line = b"%020d\n" % offset
            try:
                self._replace_cursor(path, line)
            except OSError as exc:
                log.warning("spool: cursor %s: %s: overwriting in place", sink, exc)
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    if os.pwrite(fd, line, 0) != len(line):
                        raise OSError(f"short write of cursor {sink}") from exc
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.persisted[sink] = offset

    @staticmethod
    def _replace_cursor(path: Path, line: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError("short write")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def drop_segments(self) -> None:
        low = min(self.persisted.values(), default=self.end)
        while len(self.bases) > 1 and self.bases[1] <= low:
            base = self.bases.pop(0)
            fd = self._read_fds.pop(base, None)
            if fd is not None:
                os.close(fd)
            try:
                (self.dir / _segment_name(base)).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                # EPERM (an append-only segment), EIO...: the file stays on disk, but
                # consumed data must never stop the cursors from being persisted. A restart
                # tries to remove it again.
                log.warning("spool: cannot remove the consumed segment %s: %s",
                            _segment_name(base), exc)

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

    def count_records(self, start: int, end: int) -> int:
        """Records between the logical offsets ``start`` and ``end`` (headers only)."""
        return count_records(self.dir, self.bases, start, end)


def segment_bases(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.seg") if p.stem.isdigit())


def count_records(directory: Path, bases: list[int], start: int, end: int) -> int:
    """Whole records from ``start`` to ``end`` across the segments (read-only: safe on the
    spool of a running daemon; a partial record at the end is not counted). Reads 4 MiB
    at a time: memory stays flat whatever the backlog."""
    total = 0
    chunk = 4 << 20
    for i, base in enumerate(bases):
        seg_end = bases[i + 1] if i + 1 < len(bases) else end
        if seg_end <= start or base >= end:
            continue
        try:
            fd = os.open(directory / _segment_name(base), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # dropped meanwhile
            continue
        try:
            pos = max(start - base, 0)
            limit = min(seg_end, end) - base
            while pos < limit:
                data = os.pread(fd, min(chunk, limit - pos), pos)
                at = 0
                while at + _HEAD_SIZE <= len(data):
                    body_len = _HEAD.unpack_from(data, at)[0]
                    if body_len < 8 or at + 4 + body_len > len(data):
                        break
                    at += 4 + body_len
                    total += 1
                if at == 0:
                    if len(data) < limit - pos and len(data) >= _HEAD_SIZE:
                        body_len = _HEAD.unpack_from(data, 0)[0]
                        if body_len >= 8 and pos + 4 + body_len <= limit:
                            pos += 4 + body_len  # one record larger than the chunk
                            total += 1
                            continue
                    break
                pos += at
        finally:
            os.close(fd)
    return total
