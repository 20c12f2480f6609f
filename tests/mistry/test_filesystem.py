"""Filesystem adapters (spec §1.5): plain (cp --reflink=auto) and btrfs (subvolumes), the
latter on a real loop-mounted btrfs image."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pazari.mistry.filesystem import (
    BtrfsFilesystem,
    Filesystem,
    FilesystemError,
    PlainFilesystem,
    is_subvolume,
    make_filesystem,
)
from tests.mistry.btrfs import loop_btrfs


@pytest.fixture(scope="module")
def btrfs_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with loop_btrfs(tmp_path_factory.mktemp("btrfs")) as root:
        yield root


@pytest.fixture(params=["plain", "btrfs"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Filesystem, Path]:
    if request.param == "plain":
        return PlainFilesystem(), tmp_path
    root: Path = request.getfixturevalue("btrfs_root")
    base = root / request.node.name.replace("[", "_").replace("]", "")
    base.mkdir()
    return BtrfsFilesystem(), base


async def test_create_clone_remove(adapter: tuple[Filesystem, Path]) -> None:
    fs, base = adapter
    src, dst = base / "src", base / "dst"
    await fs.create(src)
    (src / "data" / "cache").mkdir(parents=True)
    (src / "data" / "cache" / "blob").write_bytes(b"x" * 100_000)
    os.symlink("cache/blob", src / "data" / "link")
    (src / "data" / "cache" / "blob").chmod(0o600)
    await fs.clone(src, dst)
    assert (dst / "data" / "cache" / "blob").read_bytes() == b"x" * 100_000
    assert os.readlink(dst / "data" / "link") == "cache/blob"
    assert (dst / "data" / "cache" / "blob").stat().st_mode & 0o777 == 0o600
    # The clone is independent of its source.
    (dst / "data" / "cache" / "blob").write_bytes(b"changed")
    assert (src / "data" / "cache" / "blob").read_bytes() == b"x" * 100_000
    if fs.name == "btrfs":
        assert is_subvolume(src) and is_subvolume(dst)
    await fs.remove(dst)
    await fs.remove(src)
    assert not dst.exists() and not src.exists()
    await fs.remove(src)  # removing a missing path is not an error


async def test_renamed_subvolume_can_be_removed(btrfs_root: Path) -> None:
    fs = BtrfsFilesystem()
    pending, ready = btrfs_root / "pending", btrfs_root / "ready"
    await fs.create(pending)
    os.rename(pending, ready)
    assert is_subvolume(ready)
    await fs.remove(ready)
    assert not ready.exists()


async def test_btrfs_errors_are_reported(tmp_path: Path) -> None:
    with pytest.raises(FilesystemError, match="subvolume"):
        await BtrfsFilesystem().create(tmp_path / "not-on-btrfs" / "x")


def test_unknown_adapter() -> None:
    with pytest.raises(FilesystemError, match="unknown filesystem adapter"):
        make_filesystem("zfs")


def test_mistryd_on_btrfs_snapshots_group_builds(btrfs_root: Path, mistry_factory: object) -> None:
    from tests.mistry.conftest import MistryFactory
    from tests.mistry.test_client_build import GROUP_SCRIPT

    factory: MistryFactory = mistry_factory  # type: ignore[assignment]
    m = factory(root=btrfs_root / "mistry", args=("--filesystem", "btrfs"))
    m.project("snap", GROUP_SCRIPT)
    first = m.post({"project": "snap", "group": "g", "params": {"v": "1"}}).json()
    second = m.post({"project": "snap", "group": "g", "params": {"v": "2"}}).json()
    assert (first["ExitCode"], second["ExitCode"]) == (0, 0)
    assert (first["Incremental"], second["Incremental"]) == (False, True)
    ready = Path(second["Path"]).parents[1]
    assert is_subvolume(ready) and (ready / "data" / "cache" / "n").read_text() == "2\n"
