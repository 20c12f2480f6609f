"""The spool's fdatasync server (issue 17): the compiled ``sync_loop`` (no GIL) and its pure
twin answer the same requests with the same results — a synced file, a descriptor not open
(EBADF), a pipe (EINVAL: fdatasync does not apply) — in order per thread, and end at end of
file."""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.event.conftest import COMPILED

MESSAGE = struct.Struct("=ii")


def _serve(impl: ModuleType, requests: list[tuple[int, int]], threads: int = 1
           ) -> list[tuple[int, int]]:
    """Run ``threads`` sync loops on one request pipe, send ``requests``, close the pipe
    (they end), and return the results as read."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    workers = [threading.Thread(target=impl.sync_loop, args=(req_r, res_w))
               for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        for fd, seq in requests:
            os.write(req_w, MESSAGE.pack(fd, seq))
        data = b""
        while len(data) < 8 * len(requests):
            data += os.read(res_r, 4096)
    finally:
        os.close(req_w)
        for w in workers:
            w.join(10)
        assert not any(w.is_alive() for w in workers), "sync_loop did not end at EOF"
        for fd in (req_r, res_r, res_w):
            os.close(fd)
    assert len(data) == 8 * len(requests)
    return list(MESSAGE.iter_unpack(data))


@pytest.fixture
def cases(tmp_path: Path) -> Callable[[], list[tuple[int, int]]]:
    file_fd = os.open(tmp_path / "seg", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(file_fd, b"record")
    pipe_r, pipe_w = os.pipe()
    closed = 1 << 20  # past any RLIMIT_NOFILE here: never an open descriptor
    yield lambda: [(file_fd, 1), (closed, 2), (pipe_w, 3), (file_fd, 0x7FFFFFFF), (-1, 5)]
    for fd in (file_fd, pipe_r, pipe_w):
        os.close(fd)


@pytest.mark.parametrize("name", ["compiled", "pure"])
def test_results_per_request(name: str, cases: Callable[[], list[tuple[int, int]]]) -> None:
    from pazari.event import _encoder_py

    impl = COMPILED if name == "compiled" else _encoder_py
    if impl is None:
        pytest.skip("pazari.event._encoder not built")
    results = _serve(impl, cases())
    assert results == [(1, 0), (2, errno.EBADF), (3, errno.EINVAL), (0x7FFFFFFF, 0),
                       (5, errno.EBADF)]


@pytest.mark.skipif(COMPILED is None, reason="pazari.event._encoder not built")
def test_compiled_and_pure_agree_with_several_threads(
    cases: Callable[[], list[tuple[int, int]]]
) -> None:
    """Three loops share one pipe (as the spool runs them): every request answered once,
    whole messages only, the same set of results from both twins."""
    from pazari.event import _encoder_py

    requests = [(fd, seq * 10 + i) for seq in range(40) for i, (fd, _) in enumerate(cases())]
    compiled = _serve(COMPILED, requests, threads=3)
    pure = _serve(_encoder_py, requests, threads=3)
    assert sorted(compiled) == sorted(pure)
    assert sorted(seq for seq, _ in compiled) == sorted(seq for _, seq in requests)


@pytest.mark.skipif(COMPILED is None, reason="pazari.event._encoder not built")
def test_compiled_loop_runs_without_the_gil() -> None:
    """The compiled loop blocks in read(2) without the GIL: this thread still runs Python
    (with the GIL held there, the sum below would never get it back)."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    worker = threading.Thread(target=COMPILED.sync_loop, args=(req_r, res_w))
    worker.start()
    try:
        assert worker.is_alive()
        total = sum(range(200_000))
        assert total == 199_999 * 100_000
    finally:
        os.close(req_w)
        worker.join(10)
        for fd in (req_r, res_r, res_w):
            os.close(fd)
    assert not worker.is_alive()
