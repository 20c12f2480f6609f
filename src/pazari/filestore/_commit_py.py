"""Pure-Python twin of the compiled ``pazari.filestore._commit`` (same contract; the oracle
in tests, and what runs with ``PAZARI_NO_EXTENSIONS=1``). Each ``os`` call releases and
re-takes the GIL, which is what the compiled one avoids."""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import os

STAGE_CREATE = 1
STAGE_WRITE = 2
STAGE_SYNC = 3
STAGE_MKDIR = 4
STAGE_RENAME = 5

SYNC_NONE = 0
SYNC_FILE = 1
SYNC_BATCH = 2

Item = tuple[bytes, bytes | None, int, bytes, bytes]
_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(fd: int) -> int:
    """syncfs(2) (os has no wrapper): 0, or the errno."""
    if _libc.syncfs(fd) != 0:
        return ctypes.get_errno() or _errno.EIO
    return 0


def _commit_one(tmp: bytes, data: bytes | None, fd: int, final: bytes, parent: bytes,
                sync: bool) -> tuple[int, int]:
    if data is not None:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            return STAGE_CREATE, exc.errno or 0
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except OSError as exc:
                os.close(fd)
                return STAGE_WRITE, exc.errno or 0
            view = view[n:]
    if sync:
        try:
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            return STAGE_SYNC, exc.errno or 0
    with contextlib.suppress(OSError):  # after a successful fsync nothing is left to lose
        os.close(fd)
    if not final:
        return 0, 0
    if parent:
        try:
            os.mkdir(parent, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            return STAGE_MKDIR, exc.errno or 0
    try:
        os.rename(tmp, final)
    except OSError as exc:
        return STAGE_RENAME, exc.errno or _errno.EIO
    return 0, 0


def commit_files(items: list[Item], sync: int = SYNC_FILE, fs_fd: int = -1
                 ) -> list[tuple[int, int]]:
    if sync not in (SYNC_NONE, SYNC_FILE, SYNC_BATCH):
        raise ValueError(f"unknown sync mode {sync}")
    if sync == SYNC_BATCH and fs_fd < 0:
        raise ValueError("SYNC_BATCH needs the filesystem's descriptor")
    out = []
    for tmp, data, fd, final, parent in items:
        if not isinstance(tmp, bytes) or not isinstance(final, bytes) or not isinstance(
                parent, bytes):
            raise TypeError("tmp, final and parent must be bytes")
        if data is None and fd < 0:
            raise ValueError("an item without data needs an open descriptor")
        if data is not None and not isinstance(data, bytes):
            raise TypeError("data must be bytes or None")
    for tmp, data, fd, final, parent in items:
        out.append(_commit_one(tmp, data, fd, final, parent, sync == SYNC_FILE))
    if sync == SYNC_BATCH and items:
        err = _syncfs(fs_fd)
        if err:
            out = [(STAGE_SYNC, err) if r == (0, 0) else r for r in out]
    return out
