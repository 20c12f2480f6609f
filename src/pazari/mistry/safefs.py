"""File operations on a build dir that never follow a link a build left behind (issue 10).

A build's script is untrusted and owns ``/data``: whatever it leaves there (a symlink in
place of ``params/``, ``artifacts/`` or ``cache/``, a fifo, a dir it cannot list) is carried
into the next build of its group by the clone. mistryd therefore opens every component
relative to a directory fd with ``O_NOFOLLOW``, removes a link in place of a well-known dir
as a link, and creates its files with ``O_NOFOLLOW | O_EXCL``. Only the top of a build dir
(``BP/<p>/pending/<id>``, its ``build_info.json`` and ``out.log``) is mistryd's own: the
container never sees it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from pazari.runtime.logs import get_logger

log = get_logger("mistry.safefs")

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeBuildDir(OSError):
    """A component of a build dir that mistryd needs is not a real directory."""


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir(path: str | Path, dir_fd: int | None = None) -> int:
    """A directory fd, refusing a symlink (ELOOP) or anything that is not a directory."""
    try:
        return os.open(path, O_DIR, dir_fd=dir_fd)
    except OSError as exc:
        raise UnsafeBuildDir(exc.errno, f"{path} is not a real directory: {exc.strerror}") from None


@contextlib.contextmanager
def opened_dir(path: str | Path, dir_fd: int | None = None) -> Iterator[int]:
    fd = open_dir(path, dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def remove_at(name: str, dir_fd: int) -> bool:
    """Remove ``name`` under ``dir_fd``: a link or a file is unlinked (never followed), a
    directory removed with its contents by fd (shutil's symlink-safe rmtree). Returns
    whether something was there."""
    st = lstat_at(name, dir_fd)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return True
    try:
        shutil.rmtree(name, dir_fd=dir_fd)
    except PermissionError:
        _unlock_tree(name, dir_fd)
        shutil.rmtree(name, dir_fd=dir_fd)
    return True


def _unlock_tree(name: str, dir_fd: int) -> None:
    """Give every directory under ``name`` its owner rwx bits (fd-relative, no links
    followed), so that a tree a build chmodded shut can be removed."""
    with contextlib.suppress(OSError):
        os.chmod(name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
    try:
        fd = open_dir(name, dir_fd)
    except OSError:
        return
    try:
        with os.scandir(fd) as it:
            subdirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        for sub in subdirs:
            _unlock_tree(sub, fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Remove ``path`` (whose parent is mistryd's own) without following any link in it."""
    with opened_dir(path.parent) as parent:
        remove_at(path.name, parent)


def ensure_dir_at(name: str, dir_fd: int, mode: int = 0o755) -> int:
    """An fd of the real directory ``name`` under ``dir_fd``. Whatever else is there (a
    symlink, a file, a fifo) is removed as such first and a fresh directory made."""
    st = lstat_at(name, dir_fd)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        kind = "symlink" if stat.S_ISLNK(st.st_mode) else "non-directory"
        log.warning("removing a %s left in place of %s/ by a build", kind, name)
        os.unlink(name, dir_fd=dir_fd)
        st = None
    if st is None:
        os.mkdir(name, mode, dir_fd=dir_fd)
    return open_dir(name, dir_fd)


def write_new_file(name: str, dir_fd: int, data: bytes, mode: int = 0o644) -> None:
    """Create ``name`` under ``dir_fd`` (it must not exist: no link is ever written
    through) and write ``data``."""
    fd = os.open(name, O_NEWFILE, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # the umask must not narrow the spec's 0644 (§1.1)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def prepare_data_dir(
    build_dir: Path,
    params: Mapping[str, str],
    *,
    fresh: tuple[str, ...],
    owner: int | None,
) -> None:
    """Make ``build_dir/data`` and its ``cache/``, ``artifacts/`` and ``params/`` real
    directories (spec §1.4 step 5), the ones named in ``fresh`` emptied first, then write
    one file per param (spec §1.1) and give the container user ``data``, ``cache`` and
    ``artifacts``. Every step is relative to a directory fd and follows no link."""
    with opened_dir(build_dir) as top:
        data = ensure_dir_at("data", top)
        try:
            for name in fresh:
                remove_at(name, data)
            fds = {name: ensure_dir_at(name, data) for name in ("cache", "artifacts", "params")}
            try:
                for key, value in params.items():
                    write_new_file(key, fds["params"], value.encode())
                if owner is not None:
                    for fd in (data, fds["cache"], fds["artifacts"]):
                        os.fchown(fd, owner, -1)
            finally:
                for fd in fds.values():
                    os.close(fd)
        finally:
            os.close(data)
