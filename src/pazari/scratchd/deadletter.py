"""Dead letters (issue 12: one bad tenant cannot stop the others). A record a sink keeps
rejecting while the same sink accepts other records is set aside in
``<spool>/deadletter-<sink>.jsonl``, one JSON line per record, and the forwarder moves on;
``scratchd spool replay`` sends them again.

A line is ``{"at": ms, "tenant": ..., "key": ..., "error": ..., "event": <the event>}`` with
the event embedded as it was encoded. The daemon opens the file for each append (O_APPEND)
and fsyncs it before the sink's cursor may pass the record; a replay first renames the
file aside (``deadletter-<sink>.replaying-<pid>``), so that the daemon's next dead letter
starts a new file and nothing written meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from pazari.scratchd.spool import Record

PREFIX = "deadletter-"


class DeadLetter(NamedTuple):
    at: int  # ms since epoch when it was set aside
    tenant: str
    key: bytes
    error: str
    event: bytes
    line: bytes  # the whole line, to write back what a replay did not send


def path_for(spool_dir: Path, sink: str) -> Path:
    return spool_dir / f"{PREFIX}{sink}.jsonl"


def encode(record: Record, error: str, at: int) -> bytes:
    head = orjson.dumps({"at": at, "tenant": record.tenant,
                         "key": record.key.decode("utf-8", "replace"), "error": error[:500]})
    return head[:-1] + b',"event":' + record.event + b"}\n"


def append(spool_dir: Path, sink: str, records: Sequence[Record], error: str) -> None:
    """Append ``records`` durably (blocking: run it in a thread)."""
    append_parts(spool_dir, sink, [(records, error)])


def append_parts(spool_dir: Path, sink: str,
                 parts: Sequence[tuple[Sequence[Record], str]]) -> None:
    """Append each part's records with its error, durably and all or nothing (blocking:
    run it in a thread)."""
    at = time.time_ns() // 1_000_000
    data = b"".join(encode(r, error, at) for records, error in parts for r in records)
    fd = os.open(path_for(spool_dir, sink), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                 0o640)
    try:
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            data = b"\n" + data  # a torn line left behind: never glue ours to it
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            # A short write on a full disk leaves part of a line; cut it off, or the next
            # append would be glued to it and its first record lost (issue 12).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> Iterator[DeadLetter]:
    """The dead letters of one file; a torn last line (a crash mid-append) is skipped."""
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                continue
            try:
                doc: dict[str, Any] = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            yield DeadLetter(int(doc["at"]), str(doc["tenant"]), str(doc["key"]).encode(),
                             str(doc.get("error", "")), orjson.dumps(doc["event"]), line)


def count(spool_dir: Path, sink: str) -> int:
    total = 0
    for path in spool_dir.glob(f"{PREFIX}{sink}.*"):
        total += sum(1 for _ in read(path))
    return total
