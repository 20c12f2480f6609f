"""Build-dir operations never follow a link a build left (issue 10), unit level: the
data/ bootstrap, removal (janitor, delete-build) and the plain clone."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from pazari.mistry.filesystem import PlainFilesystem
from pazari.mistry.safefs import prepare_data_dir, remove_path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    (v / "sub").mkdir(parents=True)
    (v / "keep.txt").write_text("host\n")
    (v / "sub" / "deep.txt").write_text("deep\n")
    return v


def state(root: Path) -> list[tuple[str, int, str]]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = Path(dirpath) / name
            st = p.lstat()
            text = p.read_text() if stat.S_ISREG(st.st_mode) else ""
            out.append((str(p), st.st_mode, text))
    return sorted(out)


def link(target: Callable[[Path, Path], str]) -> Callable[[Path, Path, str], None]:
    def make(data: Path, victim: Path, name: str) -> None:
        (data / name).symlink_to(target(data, victim))

    return make


def plain_file(data: Path, victim: Path, name: str) -> None:
    (data / name).write_text("not a dir")


def fifo(data: Path, victim: Path, name: str) -> None:
    os.mkfifo(data / name)


def unix_socket(data: Path, victim: Path, name: str) -> None:
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(f"/proc/self/fd/{fd}/{name}")
        s.close()
    finally:
        os.close(fd)


IN_PLACE = [
    ("absolute_symlink", link(lambda d, v: str(v))),
    ("relative_symlink", link(lambda d, v: os.path.relpath(v, d))),
    ("dangling_symlink", link(lambda d, v: "/nonexistent/dir")),
    ("symlink_to_file", link(lambda d, v: str(v / "keep.txt"))),
    ("plain_file", plain_file),
    ("fifo", fifo),
    ("unix_socket", unix_socket),
]


@pytest.mark.parametrize("which", ["params", "artifacts", "cache"])
@pytest.mark.parametrize("make", [m for _, m in IN_PLACE], ids=[i for i, _ in IN_PLACE])
def test_bootstrap_replaces_what_is_in_place_of_a_dir(
    tmp_path: Path, victim: Path, which: str, make: Callable[[Path, Path, str], None]
) -> None:
    build = tmp_path / "build"
    data = build / "data"
    data.mkdir(parents=True)
    for sub in {"params", "artifacts", "cache"} - {which}:
        (data / sub).mkdir()
    make(data, victim, which)
    before = state(victim)
    prepare_data_dir(build, {"k": "v", "round": "2"}, fresh=("params",), owner=os.getuid())
    assert state(victim) == before
    for sub in ("params", "artifacts", "cache"):
        assert stat.S_ISDIR((data / sub).lstat().st_mode)
    assert (data / "params" / "k").read_text() == "v"
    assert stat.S_IMODE((data / "params" / "k").stat().st_mode) == 0o644


def test_bootstrap_replaces_a_link_in_place_of_data(tmp_path: Path, victim: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "data").symlink_to(victim)
    before = state(victim)
    prepare_data_dir(build, {"k": "v"}, fresh=("params", "artifacts"), owner=None)
    assert state(victim) == before
    assert stat.S_ISDIR((build / "data").lstat().st_mode)


def test_remove_never_follows(tmp_path: Path, victim: Path) -> None:
    build = tmp_path / "ready" / "x"
    data = build / "data"
    (data / "cache" / "deep").mkdir(parents=True)
    (data / "artifacts").symlink_to(victim)
    (data / "cache" / "up").symlink_to("../../../../victim")
    (data / "cache" / "deep" / "abs").symlink_to(victim / "keep.txt")
    os.link(victim / "keep.txt", data / "cache" / "hard")
    os.mkfifo(data / "cache" / "fifo")
    (data / "cache" / "shut").mkdir()
    (data / "cache" / "shut" / "f").write_text("x")
    os.chmod(data / "cache" / "shut", 0)
    before = state(victim)
    remove_path(build)
    assert not os.path.lexists(build)
    assert state(victim) == before
    remove_path(tmp_path / "ready" / "missing")  # nothing there: no error


def test_remove_a_link_itself(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "l").symlink_to(victim)
    remove_path(tmp_path / "l")
    assert not os.path.lexists(tmp_path / "l") and (victim / "keep.txt").exists()


async def test_plain_clone_copies_links_as_links(tmp_path: Path, victim: Path) -> None:
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "data" / "params").symlink_to(victim)
    (src / "data" / "rel").symlink_to("../../victim/keep.txt")
    os.mkfifo(src / "data" / "fifo")
    before = state(victim)
    await PlainFilesystem().clone(src, tmp_path / "dst")
    dst = tmp_path / "dst" / "data"
    assert os.readlink(dst / "params") == str(victim)
    assert os.readlink(dst / "rel") == "../../victim/keep.txt"
    assert stat.S_ISFIFO((dst / "fifo").lstat().st_mode)
    assert state(victim) == before
    await PlainFilesystem().remove(tmp_path / "dst")
    assert state(victim) == before and not (tmp_path / "dst").exists()
