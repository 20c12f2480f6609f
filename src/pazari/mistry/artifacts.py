"""The artifacts of a ready build as an uncompressed tar, from the build's own files only
(issue 10).

The build that made ``data/artifacts`` is untrusted, so nothing in it is followed:
``data`` and ``artifacts`` must be real directories (opened ``O_NOFOLLOW`` relative to the
build dir's fd; a link in their place is refused, never served), the walk goes by directory
fd, symlinks are stored as symlinks, and fifos, sockets and device files are skipped without
being opened (a ``tar`` subprocess opened fifos and stalled on a few thousand sockets with
its stderr pipe unread). Setuid, setgid and sticky bits are dropped; owners are not sent.
Names are kept byte for byte (PAX headers, ``surrogateescape``), newlines and invalid UTF-8
included.

``write_tar`` runs in a worker thread and hands 256 KiB chunks to the event loop through
``ChunkPipe``, which blocks the thread while the client is slow (back-pressure) and breaks
it off when the client is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from pazari.mistry.names import InvalidName, check_job_id, check_project
from pazari.mistry.safefs import O_DIR, UnsafeBuildDir, open_dir

CHUNK = 256 * 1024
MAX_DEPTH = 256  # deeper trees are refused: each level holds a directory fd
O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ArtifactsError(Exception):
    """The artifacts cannot be served; ``str()`` says why."""


def open_artifacts(build_dir: Path) -> int | None:
    """An fd of ``build_dir/data/artifacts``, or None when the build left no artifacts
    dir at all. Raises ArtifactsError when ``data`` or ``artifacts`` is anything but a
    real directory (a symlink to ``/etc`` served the host's files before issue 10)."""
    try:
        top = open_dir(build_dir)
    except UnsafeBuildDir as exc:
        raise ArtifactsError(str(exc)) from None
    try:
        return _open_artifacts_in(top)
    finally:
        os.close(top)


def _open_artifacts_in(top: int) -> int | None:
    try:
        data = open_dir("data", top)
    except UnsafeBuildDir as exc:
        raise ArtifactsError(f"refusing to serve: data/ {_what(top, 'data', exc)}") from None
    try:
        if _missing("artifacts", data):
            return None
        return open_dir("artifacts", data)
    except UnsafeBuildDir as exc:
        what = _what(data, "artifacts", exc)
        raise ArtifactsError(f"refusing to serve: data/artifacts {what}") from None
    finally:
        os.close(data)


def check_rsync_request(env: Mapping[str, str]) -> str:
    """Why an rsync daemon must refuse a transfer from its ``mistry`` module, or "" (issue
    10: artifacts come from the build's own files only, whatever the transport). Run as the
    module's ``pre-xfer exec`` (``mistryd rsync-check``), which rsync starts before the
    transfer with ``RSYNC_MODULE_PATH`` (build_path) and the server's argv as
    ``RSYNC_ARG0``... (options, ".", then the requested paths).

    The one path the client asks for is ``<p>/ready/<id>/data/artifacts/``: anything else
    (another dir of a build, the module's top, several paths) is refused, and so is an
    artifacts dir that is not a real directory (a build's link to ``/etc`` or to another
    build). Every component is opened by dir fd with ``O_NOFOLLOW``."""
    args: list[str] = []
    while f"RSYNC_ARG{len(args)}" in env:
        args.append(env[f"RSYNC_ARG{len(args)}"])
    if "." not in args:
        return "refusing: not a transfer request"
    paths = args[args.index(".") + 1 :]
    if len(paths) != 1:
        return "refusing: ask for one build's artifacts, <project>/ready/<id>/data/artifacts/"
    parts = paths[0].strip("/").split("/")
    if len(parts) != 5 or parts[1:2] != ["ready"] or parts[3:] != ["data", "artifacts"]:
        return f"refusing {paths[0]!r}: only <project>/ready/<id>/data/artifacts/ is served"
    try:
        check_project(parts[0])
        check_job_id(parts[2])
    except InvalidName as exc:
        return f"refusing: {exc}"
    fds: list[int] = []
    try:
        fds.append(open_dir(env.get("RSYNC_MODULE_PATH", "")))
        for name in parts[:3]:
            fds.append(open_dir(name, fds[-1]))
        artifacts = _open_artifacts_in(fds[-1])
        if artifacts is not None:
            os.close(artifacts)
    except UnsafeBuildDir as exc:
        return f"refusing: {exc.strerror}"
    except ArtifactsError as exc:
        return str(exc)
    finally:
        for fd in fds:
            os.close(fd)
    return ""


def _missing(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    return False


def _what(dir_fd: int, name: str, exc: OSError) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return f"cannot be opened ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink, not a directory of the build"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    return f"cannot be opened ({exc.strerror})"


def write_tar(artifacts_fd: int | None, out: BinaryIO) -> int:
    """Write the tree under ``artifacts_fd`` (closed here) as a tar to ``out``; returns the
    number of entries skipped (fifos, sockets, devices)."""
    skipped = 0
    with tarfile.open(
        fileobj=out,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:
        if artifacts_fd is not None:
            try:
                skipped = _add_tree(tar, artifacts_fd, "", 0)
            finally:
                os.close(artifacts_fd)
    return skipped


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_tree(tar: tarfile.TarFile, dir_fd: int, prefix: str, depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise ArtifactsError(f"artifacts are nested deeper than {MAX_DEPTH} levels")
    skipped = 0
    with os.scandir(dir_fd) as it:
        names = sorted(entry.name for entry in it)
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        arcname = prefix + name
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            info = _info(arcname, st)
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            tar.addfile(info)
        elif stat.S_ISDIR(mode):
            sub = os.open(name, O_DIR, dir_fd=dir_fd)
            try:
                if not _same(os.fstat(sub), st):
                    continue  # swapped under us
                info = _info(arcname, st)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                skipped += _add_tree(tar, sub, arcname + "/", depth + 1)
            finally:
                os.close(sub)
        elif stat.S_ISREG(mode):
            fd = os.open(name, O_FILE, dir_fd=dir_fd)
            with open(fd, "rb", closefd=True) as f:
                fst = os.fstat(fd)
                if not stat.S_ISREG(fst.st_mode):
                    skipped += 1
                    continue
                info = _info(arcname, fst)
                info.size = fst.st_size
                tar.addfile(info, f)
        else:
            skipped += 1  # fifo, socket, device: never opened
    return skipped


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class ChunkPipe:
    """A write-only file for ``write_tar`` in a thread: chunks go to an asyncio queue of
    the loop; ``None`` marks the end. ``cancel()`` from the loop breaks the writer off."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(depth)
        self.cancelled = False
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= CHUNK:
            self._put(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self._buf:
            self._put(bytes(self._buf))
            self._buf.clear()
        self._put(None)

    def _put(self, item: bytes | None) -> None:
        if self.cancelled:
            raise BrokenPipeError("the client went away")
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if self.cancelled:
                    future.cancel()
                    raise BrokenPipeError("the client went away") from None

    def cancel(self) -> None:
        self.cancelled = True


def stream_tar(artifacts_fd: int | None, pipe: ChunkPipe) -> int:
    """The thread's body: the whole tar into ``pipe``, then its end marker."""
    skipped = write_tar(artifacts_fd, pipe)  # type: ignore[arg-type]
    pipe.finish()
    return skipped
