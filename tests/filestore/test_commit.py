"""``commit_files``: the compiled module and its pure twin, side by side on real files
(the twin is the oracle: every row must give both the same result and the same files)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pazari import filestore
from pazari.filestore import _commit_py

IMPLS: list[ModuleType] = [_commit_py]
if filestore.COMPILED:
    IMPLS.append(filestore._impl)


def _ids(m: ModuleType) -> str:
    return "compiled" if m.__name__.endswith("_commit") else "pure"


@pytest.fixture(params=IMPLS, ids=_ids)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    mod: ModuleType = request.param
    return mod


def b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


Case = Callable[[Path], tuple[list[Any], tuple[int, int], dict[str, bytes]]]


def _small(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    """A body written, synced and renamed into a new <id[0:3]> directory."""
    return ([b(tmp / "a.tmp"), b"hello", -1, b(tmp / "abc" / "abcdef"), b(tmp / "abc")],
            (0, 0), {"abc/abcdef": b"hello"})


def _empty_body(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    return ([b(tmp / "e.tmp"), b"", -1, b(tmp / "e"), b""], (0, 0), {"e": b""})


def _existing_dir(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    (tmp / "xyz").mkdir()
    return ([b(tmp / "x.tmp"), b"x" * 100_000, -1, b(tmp / "xyz" / "xyz1"), b(tmp / "xyz")],
            (0, 0), {"xyz/xyz1": b"x" * 100_000})


def _keep_tmp(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    """No final path: written and synced, left where it is (the caller copies)."""
    return ([b(tmp / "k.tmp"), b"keep", -1, b"", b""], (0, 0), {"k.tmp": b"keep"})


def _open_fd(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    """A streamed file: written by the caller, its descriptor still open."""
    fd = os.open(tmp / "s.tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"streamed")
    return ([b(tmp / "s.tmp"), None, fd, b(tmp / "s"), b""], (0, 0), {"s": b"streamed"})


def _no_tmp_dir(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    return ([b(tmp / "missing" / "a.tmp"), b"x", -1, b(tmp / "a"), b""],
            (filestore.STAGE_CREATE, errno.ENOENT), {})


def _parent_is_file(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    (tmp / "f").write_bytes(b"")
    return ([b(tmp / "p.tmp"), b"x", -1, b(tmp / "f" / "d" / "z"), b(tmp / "f" / "d")],
            (filestore.STAGE_MKDIR, errno.ENOTDIR), {"f": b"", "p.tmp": b"x"})


def _no_final_dir(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    return ([b(tmp / "r.tmp"), b"x", -1, b(tmp / "nodir" / "r"), b""],
            (filestore.STAGE_RENAME, errno.ENOENT), {"r.tmp": b"x"})


def _cross_device(tmp: Path) -> tuple[list[Any], tuple[int, int], dict[str, bytes]]:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp).st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    return ([b(tmp / "c.tmp"), b"x", -1, b"/dev/shm/" + b(tmp.name) + b".final", b""],
            (filestore.STAGE_RENAME, errno.EXDEV), {"c.tmp": b"x"})


CASES: list[tuple[str, Case]] = [
    ("small-body", _small), ("empty-body", _empty_body), ("existing-dir", _existing_dir),
    ("keep-tmp", _keep_tmp), ("open-fd", _open_fd), ("no-tmp-dir", _no_tmp_dir),
    ("parent-is-file", _parent_is_file), ("no-final-dir", _no_final_dir),
    ("cross-device", _cross_device),
]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_commit_one(impl: ModuleType, tmp_path: Path, case: Case) -> None:
    before = set(os.listdir("/proc/self/fd"))
    item, expected, files = case(tmp_path)
    assert impl.commit_files([tuple(item)]) == [expected]
    assert _files(tmp_path) == files
    # Every descriptor is closed, the caller's open one included.
    assert set(os.listdir("/proc/self/fd")) <= before


def test_batch_results_in_order(impl: ModuleType, tmp_path: Path) -> None:
    """Each item fails or succeeds on its own; results keep the items' order."""
    items = [(b(tmp_path / f"{i}.tmp"), f"body{i}".encode(), -1,
              b(tmp_path / ("nodir" if i % 3 == 0 else "ok") / f"f{i}"),
              b"" if i % 3 == 0 else b(tmp_path / "ok")) for i in range(30)]
    results = impl.commit_files(items, sync=filestore.SYNC_NONE)
    assert results == [(filestore.STAGE_RENAME, errno.ENOENT) if i % 3 == 0 else (0, 0)
                       for i in range(30)]
    for i in range(30):
        if i % 3:
            assert (tmp_path / "ok" / f"f{i}").read_bytes() == f"body{i}".encode()


BAD: list[tuple[str, tuple[Any, ...], type[Exception]]] = [
    ("str-path", ("a.tmp", b"x", -1, b"", b""), TypeError),
    ("str-data", (b"a.tmp", "x", -1, b"", b""), TypeError),
    ("no-data-no-fd", (b"a.tmp", None, -1, b"", b""), ValueError),
    ("short-item", (b"a.tmp", b"x", -1, b""), ValueError),
]


@pytest.mark.parametrize(("item", "error"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_items_raise_before_touching_the_disk(impl: ModuleType, tmp_path: Path,
                                                  item: tuple[Any, ...],
                                                  error: type[Exception]) -> None:
    good = (b(tmp_path / "g.tmp"), b"g", -1, b(tmp_path / "g"), b"")
    with pytest.raises(error):
        impl.commit_files([good, item])
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.tmp").exists()


def test_empty_batch(impl: ModuleType) -> None:
    assert impl.commit_files([]) == []


@pytest.mark.parametrize("bad_fd", [False, True], ids=["syncfs", "syncfs-fails"])
def test_batch_sync(impl: ModuleType, tmp_path: Path, bad_fd: bool) -> None:
    """SYNC_BATCH: everything in place, then one syncfs; a failed syncfs fails every item
    that had not failed already (their files are in place, but not known durable)."""
    items = [(b(tmp_path / f"{i}.tmp"), f"b{i}".encode(), -1,
              b(tmp_path / ("nodir" if i == 2 else "d") / f"f{i}"),
              b"" if i == 2 else b(tmp_path / "d")) for i in range(5)]
    fs_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    if bad_fd:
        os.close(fs_fd)  # a descriptor that is no longer open: syncfs fails with EBADF
    try:
        results = impl.commit_files(items, sync=filestore.SYNC_BATCH, fs_fd=fs_fd)
    finally:
        if not bad_fd:
            os.close(fs_fd)
    ok = (filestore.STAGE_SYNC, errno.EBADF) if bad_fd else (0, 0)
    assert results == [(filestore.STAGE_RENAME, errno.ENOENT) if i == 2 else ok
                       for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["f0", "f1", "f3", "f4"]


@pytest.mark.parametrize(("sync", "fs_fd"), [(7, -1), (2, -1)], ids=["unknown-mode",
                                                                   "batch-without-fd"])
def test_bad_sync_arguments(impl: ModuleType, tmp_path: Path, sync: int, fs_fd: int) -> None:
    with pytest.raises(ValueError):
        impl.commit_files([(b(tmp_path / "a.tmp"), b"x", -1, b"", b"")], sync=sync,
                          fs_fd=fs_fd)
    assert not (tmp_path / "a.tmp").exists()


def teardown_module() -> None:
    for p in Path("/dev/shm").glob("pytest-*.final"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
