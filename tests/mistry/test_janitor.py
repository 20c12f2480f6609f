"""Retention (issues #25/#122): keep the last N per project and group and/or a max age;
never the target of ``latest`` or of a group link, never a pending build."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pazari.mistry.buildinfo import BuildInfo
from pazari.mistry.filesystem import PlainFilesystem
from pazari.mistry.janitor import ProtectedBuild, delete_build, select_expired, sweep
from pazari.mistry.store import JobIndex, Layout, write_build_info
from tests.mistry.conftest import MistryFactory
from tests.support.ports import wait_for

HOUR = 3600 * 10**9


def make_builds(root: Path, now: int) -> tuple[Layout, dict[str, str]]:
    """Project p: group "" builds a0..a3 (a3 newest), group g builds g0..g2 (g2 newest);
    latest → a1 (an older build stays linked), groups/g → g2; one pending build."""
    layout = Layout(root)
    layout.bootstrap("p", "g")
    ids: dict[str, str] = {}
    specs = [("a", "", 4), ("g", "g", 3)]
    for prefix, group, count in specs:
        for i in range(count):
            name = f"{prefix}{i}"
            jid = (prefix + str(i)).encode().hex().ljust(64, "0")
            ids[name] = jid
            ready = layout.ready("p", jid)
            (ready / "data").mkdir(parents=True)
            age_hours = (count - i) * 10
            write_build_info(ready, BuildInfo(group=group, exit_code=0,
                                              started_at_ns=now - age_hours * HOUR))  # fmt: skip
    layout.set_link("p", "", ids["a1"])
    layout.set_link("p", "g", ids["g2"])
    pending = layout.pending("p", "f" * 64)
    (pending / "data").mkdir(parents=True)
    return layout, ids


CASES = [
    ("keep last 1", 1, 0, {"a0", "a2", "g0", "g1"}),  # a3 newest, a1 linked: both kept
    ("keep last 2", 2, 0, {"a0", "g0"}),
    ("max age 25h", 0, 25 * 3600, {"a0", "g0"}),  # a: 40,30(linked),20,10h; g: 30,20,10h
    ("both", 3, 35 * 3600, {"a0"}),
    ("disabled", 0, 0, set()),
]


@pytest.mark.parametrize(
    ("keep", "age", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_select_expired(tmp_path: Path, keep: int, age: float, expected: set[str]) -> None:
    now = time.time_ns()
    layout, ids = make_builds(tmp_path, now)
    names = {v: k for k, v in ids.items()}
    got = {names[c.job_id] for c in select_expired(layout, keep, age, now)}
    assert got == expected


async def test_sweep_and_delete_build(tmp_path: Path) -> None:
    now = time.time_ns()
    layout, ids = make_builds(tmp_path, now)
    index = JobIndex()
    index.load(layout)
    fs = PlainFilesystem()
    assert await sweep(layout, fs, 1, 0, index) == 4
    assert not layout.ready("p", ids["a0"]).exists()
    assert layout.ready("p", ids["a1"]).exists()  # latest's target survives
    assert index.get("p", ids["a0"]) is None
    with pytest.raises(ProtectedBuild, match="link"):
        await delete_build(layout, fs, "p", ids["g2"])
    with pytest.raises(ProtectedBuild, match="pending"):
        await delete_build(layout, fs, "p", "f" * 64)
    with pytest.raises(FileNotFoundError):
        await delete_build(layout, fs, "p", "e" * 64)


def test_janitor_runs_in_mistryd(mistry_factory: MistryFactory) -> None:
    m = mistry_factory({"retention": {"keep_last": 1, "interval_seconds": 0.5}})
    m.project("kept", "echo ok > artifacts/ok\n")
    urls = [m.post({"project": "kept", "params": {"n": str(i)}}).json()["URL"] for i in range(3)]
    newest = urls[-1].rsplit("/", 1)[-1]
    ready = m.builds / "kept" / "ready"
    wait_for(lambda: [p.name for p in ready.iterdir()] == [newest], 30, "retention sweep")
    assert [r["id"] for r in m.get("/index/").json()] == [newest]
