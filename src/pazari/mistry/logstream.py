"""A running job's log: ``out.log`` on disk, the container's stderr kept apart, and one
shared fan-out to every live-tail subscriber (spec §2: one tailer per job, a broker fanning
out). The original's tailer polled the file every 500 ms; here the writer pushes lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from pazari.mistry.engine import STDERR

STDERR_KEEP = 1 << 20  # the tail of stderr kept for error reports
SUBSCRIBER_QUEUE = 10_000  # lines a slow subscriber may lag before it is dropped


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(SUBSCRIBER_QUEUE)

    async def next(self) -> str | None:
        """The next line, or None once the job finished (or this subscriber fell behind)."""
        return await self.queue.get()


class LogSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._stderr = bytearray()
        self._partial = b""
        self._subscribers: set[Subscription] = set()
        self.closed = False

    def write(self, data: bytes, stream: int = 1) -> None:
        if self.closed or not data:
            return
        self._file.write(data)
        # Readers (the job page, /job JSON) open out.log themselves: keep it current.
        self._file.flush()
        if stream == STDERR:
            self._stderr += data
            if len(self._stderr) > 2 * STDERR_KEEP:
                del self._stderr[: len(self._stderr) - STDERR_KEEP]
        if not self._subscribers:
            self._partial = (self._partial + data).rsplit(b"\n", 1)[-1]
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._publish(line.rstrip(b"\r").decode(errors="replace"))

    def text(self, text: str) -> None:
        self.write(text.encode())

    def _publish(self, line: str) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(line)
            except asyncio.QueueFull:
                self._subscribers.discard(sub)
                self._end(sub)

    @staticmethod
    def _end(sub: Subscription) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(None)

    def subscribe(self, offset: int | None = None) -> Subscription:
        """A new subscriber; with ``offset``, out.log from that byte on is replayed first so
        that a page rendered at that offset misses no line."""
        sub = Subscription()
        if offset is not None:
            self._file.flush()
            with open(self.path, "rb") as f:
                f.seek(offset)
                backlog = f.read()
            complete = backlog[: len(backlog) - len(self._partial)]
            for line in complete.split(b"\n")[:-1]:
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(line.rstrip(b"\r").decode(errors="replace"))
        if self.closed:
            self._end(sub)
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def stderr(self) -> str:
        return bytes(self._stderr[-STDERR_KEEP:]).decode(errors="replace")

    def size(self) -> int:
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def close(self) -> None:
        """Flush, fsync (spec §1.4 step 11) and tell every subscriber the log ended."""
        if self.closed:
            return
        if self._partial and self._subscribers:
            self._publish(self._partial.decode(errors="replace"))
        self.closed = True
        with contextlib.suppress(OSError):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        for sub in self._subscribers:
            self._end(sub)
        self._subscribers.clear()
