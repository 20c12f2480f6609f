"""Content-addressed job ids (spec §1.3, fixed: separators; mtimes and owners excluded)."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pazari.mistry.jobid import DigestCache, build_context, job_id, snapshot


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "sub" / "script.sh").write_text("echo hi\n")
    return root


def ident(root: Path, params: dict[str, str] | None = None, group: str = "") -> str:
    return job_id("proj", group, params or {}, root)


def touch_mtime(root: Path) -> None:
    os.utime(root / "Dockerfile", (1, 1))


def chown(root: Path) -> None:
    os.chown(root / "Dockerfile", 12345, 12345)


def add_empty(root: Path) -> None:
    (root / "empty").write_text("")


def change_content(root: Path) -> None:
    (root / "sub" / "script.sh").write_text("echo bye\n")


def rename_file(root: Path) -> None:
    (root / "sub" / "script.sh").rename(root / "sub" / "other.sh")


def make_executable(root: Path) -> None:
    (root / "sub" / "script.sh").chmod(0o755)


def add_symlink(root: Path) -> None:
    (root / "link").symlink_to("Dockerfile")


def add_empty_dir(root: Path) -> None:
    (root / "emptydir").mkdir()


MUTATIONS: list[tuple[Callable[[Path], None], bool]] = [
    (touch_mtime, False),
    (chown, False),
    (add_symlink, False),  # symlinks are not part of the context, as in the original
    (add_empty_dir, False),
    (add_empty, True),
    (change_content, True),
    (rename_file, True),
    (make_executable, True),
]


@pytest.mark.parametrize(("mutate", "changes"), MUTATIONS, ids=[m.__name__ for m, _ in MUTATIONS])
def test_project_mutations(project: Path, mutate: Callable[[Path], None], changes: bool) -> None:
    before = ident(project)
    cache = DigestCache()
    assert job_id("proj", "", {}, project, cache) == before
    mutate(project)
    assert (ident(project) != before) is changes
    # The memoised digests must notice the change too.
    assert (job_id("proj", "", {}, project, cache) != before) is changes


PARAM_CASES = [
    ("same", {"a": "1"}, {"a": "1"}, True),
    ("different value", {"a": "1"}, {"a": "2"}, False),
    ("order does not matter", {"a": "1", "b": "2"}, {"b": "2", "a": "1"}, True),
    ("separators", {"a": "bc"}, {"ab": "c"}, False),
    ("opaque ignored", {"a": "1"}, {"a": "1", "_production": "ignored"}, True),
    ("empty vs missing", {"a": ""}, {}, False),
]


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [c[1:] for c in PARAM_CASES],
    ids=[c[0] for c in PARAM_CASES],
)
def test_params(project: Path, left: dict[str, str], right: dict[str, str], equal: bool) -> None:
    assert (ident(project, left) == ident(project, right)) is equal


def test_group_and_project_are_part_of_the_id(project: Path) -> None:
    assert ident(project, group="a") != ident(project)
    assert ident(project, group="a") != ident(project, group="b")
    assert job_id("other", "", {}, project) != ident(project)


def test_stable_across_checkouts(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "proj"
    shutil.copytree(project, copy)  # new inodes, new mtimes
    os.utime(copy / "Dockerfile", (2_000_000_000, 2_000_000_000))
    assert ident(copy) == ident(project)
    assert len(ident(project)) == 64


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.text("abc", max_size=3)),
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.text("abc", max_size=3)),
)
def test_distinct_params_never_collide(
    tmp_path_factory: pytest.TempPathFactory, a: dict[str, str], b: dict[str, str]
) -> None:
    root = tmp_path_factory.getbasetemp() / "hyp-proj"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    assert (job_id("p", "", a, root) == job_id("p", "", b, root)) is (a == b)


def test_build_context_keeps_subdirs_and_normalises_headers(project: Path) -> None:
    chown(project)
    data = build_context(project)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["Dockerfile", "sub/script.sh"]
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
    assert build_context(project) == data


def test_snapshot_is_one_read_for_id_and_context(project: Path) -> None:
    """issue 10: the id and the context of a snapshot come from the same bytes."""
    (project / "sub").mkdir(exist_ok=True)
    (project / "sub" / "x.sh").write_text("echo x\n")
    os.chmod(project / "sub" / "x.sh", 0o755)
    cache = DigestCache()
    jid, context = snapshot("p", "g", {"a": "b", "_o": "x"}, project, cache)
    assert jid == job_id("p", "g", {"a": "b"}, project, cache)
    assert context == build_context(project)
    (project / "sub" / "x.sh").write_text("echo edited\n")
    assert job_id("p", "g", {"a": "b"}, project, cache) != jid  # the cache saw the edit
