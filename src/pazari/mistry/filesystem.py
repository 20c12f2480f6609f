"""Filesystem adapters (spec §1.5): Create, Clone, Remove; Remove never fails on a missing
path.

``plain`` clones with ``cp -a --reflink=auto``, so a clone is instant where the filesystem
shares extents (btrfs, XFS) and a real copy elsewhere. ``btrfs`` makes every build dir a
subvolume and clones by snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Protocol

from pazari.mistry.safefs import remove_path


class FilesystemError(RuntimeError):
    pass


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()
        raise FilesystemError(f"{' '.join(argv)}: exit {proc.returncode}: {text}")


class Filesystem(Protocol):
    name: str

    async def create(self, path: Path) -> None: ...

    async def clone(self, src: Path, dst: Path) -> None: ...

    async def remove(self, path: Path) -> None: ...


class PlainFilesystem:
    name = "plain"

    async def create(self, path: Path) -> None:
        path.mkdir(mode=0o755)

    async def clone(self, src: Path, dst: Path) -> None:
        # Trailing "/." copies the contents into the new dir and keeps modes and times; -a
        # copies symlinks as symlinks and recreates fifos and sockets without opening them
        # (--no-dereference spelled out: a build's links must never be followed, issue 10).
        dst.mkdir(mode=0o755)
        await _run("cp", "-a", "--no-dereference", "--reflink=auto", f"{src}/.", str(dst))

    async def remove(self, path: Path) -> None:
        if not os.path.lexists(path):
            return
        # By fd, never following a link a build left (shutil.rmtree with ignore_errors
        # silently kept a symlinked dir, issue 10); a dir a build chmodded shut is
        # reopened and removed; a failure is an error, not a leftover.
        try:
            await asyncio.to_thread(remove_path, path)
        except OSError as exc:
            raise FilesystemError(f"could not remove {path}: {exc}") from exc


def is_subvolume(path: Path) -> bool:
    """A btrfs subvolume root has inode number 256."""
    try:
        st = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return st.st_ino == 256 and path.is_dir()


class BtrfsFilesystem:
    name = "btrfs"

    def __init__(self, binary: str = "btrfs") -> None:
        self.binary = binary

    async def create(self, path: Path) -> None:
        await _run(self.binary, "subvolume", "create", str(path))

    async def clone(self, src: Path, dst: Path) -> None:
        await _run(self.binary, "subvolume", "snapshot", str(src), str(dst))

    async def remove(self, path: Path) -> None:
        if not os.path.lexists(path):
            return
        if is_subvolume(path):
            await _run(self.binary, "subvolume", "delete", str(path))
            return
        # Not a subvolume (e.g. made by the plain adapter before a switch): remove it as such.
        with contextlib.suppress(FileNotFoundError):
            await PlainFilesystem().remove(path)


ADAPTERS = ("plain", "btrfs")


def make_filesystem(name: str) -> Filesystem:
    if name == "plain":
        return PlainFilesystem()
    if name == "btrfs":
        if shutil.which("btrfs") is None:
            raise FilesystemError(
                "the btrfs adapter needs the btrfs CLI (apt-get install btrfs-progs)"
            )
        return BtrfsFilesystem()
    raise FilesystemError(
        f"unknown filesystem adapter {name!r} (choose from {', '.join(ADAPTERS)})"
    )
