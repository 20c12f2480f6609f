"""Stress of ext/event's ``sync_loop``, the spool's fdatasync server that runs without the GIL
from start to end (issue 17's syncer, issue 19's "any nogil section").

Several ``sync_loop`` threads share one request pipe and one result pipe, as the spool's do
(scratchd/spool.py: one per commit in flight); several Python threads write requests at once
while one reads the results. Every request must be answered exactly once, with the errno
fdatasync(2) gives for its fd: 0 for a file, EBADF for a closed or negative fd, EINVAL for a
pipe. Closing the request pipe must end every syncer.

``python tests/race/event_stress.py MODULE.so ROOT`` loads the given build of
``pazari.event._encoder`` (a debug or sanitizer build made by the test) and runs the stress;
it prints ``ok <requests>`` or raises.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import os
import select
import struct
import sys
import threading
from pathlib import Path
from types import ModuleType

SYNCERS = 4
PRODUCERS = 6
PER_PRODUCER = 2000
FILE_EVERY = 6  # one request in 6 is a real fdatasync of a file; the rest fail at once
JOIN_SECONDS = 10.0
RESULT_SECONDS = 30.0  # a lost request must fail the stress, not hang it
MESSAGE = struct.Struct("=ii")  # request (fd, seq), result (seq, errno)


def load(path: str) -> ModuleType:
    # The module imports pazari.event.errors, whose package would import the installed
    # build under the same name (a circular, half-initialised import): the package is
    # imported first, on its pure twin, and the build under test is loaded beside it.
    os.environ["PAZARI_NO_EXTENSIONS"] = "1"
    importlib.import_module("pazari.event")
    name = "pazari.event._encoder"
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        if not select.select([fd], [], [], RESULT_SECONDS)[0]:
            raise TimeoutError(f"no result for {RESULT_SECONDS:g} s")
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError(f"result pipe closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def stress(encoder: ModuleType, root: Path) -> int:
    """Run the stress with ``encoder`` (a module with sync_loop); the number of requests."""
    requests_r, requests_w = os.pipe2(os.O_CLOEXEC)
    results_r, results_w = os.pipe2(os.O_CLOEXEC)
    files = [os.open(root / f"f{p}", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                     0o600) for p in range(PRODUCERS)]
    # Opened last, closed at once: a number that names no open file while the stress runs.
    closed_fd = os.open(root / "closed", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(closed_fd)
    expected: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(PRODUCERS + 1)

    for p in range(PRODUCERS):
        for i in range(PER_PRODUCER):
            seq = p * PER_PRODUCER + i
            expected[seq] = (0, errno.EBADF, errno.EBADF, errno.EINVAL)[i % 4] \
                if i % FILE_EVERY else 0

    def target(p: int, i: int) -> int:
        if i % FILE_EVERY == 0:
            return files[p]
        return (files[p], -1, closed_fd, requests_r)[i % 4]

    def producer(p: int) -> None:
        try:
            start.wait()
            for i in range(PER_PRODUCER):
                if i % FILE_EVERY == 0:
                    os.write(files[p], f"p{p} i{i}\n".encode())
                # 8 bytes <= PIPE_BUF: each request is one atomic write (POSIX write(2)).
                assert os.write(requests_w, MESSAGE.pack(target(p, i), p * PER_PRODUCER + i)) == 8
        except BaseException as exc:
            errors.append(exc)

    syncers = [threading.Thread(target=encoder.sync_loop, args=(requests_r, results_w),
                                name=f"sync-{s}") for s in range(SYNCERS)]
    producers = [threading.Thread(target=producer, args=(p,), name=f"producer-{p}")
                 for p in range(PRODUCERS)]
    for thread in syncers + producers:
        thread.start()
    start.wait()
    seen: dict[int, int] = {}
    try:
        for _ in range(len(expected)):
            seq, err = MESSAGE.unpack(_read_exact(results_r, 8))
            assert seq not in seen, f"seq {seq} answered twice"
            seen[seq] = err
        for thread in producers:
            thread.join()
        if errors:
            raise errors[0]
        assert seen == expected, {s: (seen.get(s), e) for s, e in expected.items()
                                  if seen.get(s) != e}
    finally:
        # End of file on the request pipe ends every syncer (also when an assertion failed:
        # a syncer blocked in read(2) would otherwise keep the process alive).
        os.close(requests_w)
        for thread in syncers:
            thread.join(JOIN_SECONDS)
        os.close(results_w)
    try:
        assert not [t.name for t in syncers if t.is_alive()], "a syncer ignored end of file"
        assert os.read(results_r, 8) == b"", "a result nobody asked for"
    finally:
        for fd in (requests_r, results_r, *files):
            os.close(fd)
    for p in range(PRODUCERS):
        lines = (root / f"f{p}").read_text().splitlines()
        assert len(lines) == len(range(0, PER_PRODUCER, FILE_EVERY)), lines[-3:]
    return len(seen)


if __name__ == "__main__":
    print("ok", stress(load(sys.argv[1]), Path(sys.argv[2])))
