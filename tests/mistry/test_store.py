"""BuildInfo JSON (spec §1.6), the on-disk layout (§1.2) and the in-memory index."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from pazari.mistry.buildinfo import BuildInfo, format_time, index_time, parse_time
from pazari.mistry.names import InvalidName
from pazari.mistry.store import JobIndex, Layout, read_build_info, write_build_info

KEYS = [
    "Params", "Group", "Path", "Cached", "Coalesced", "Incremental", "ExitCode", "ErrBuild",
    "ContainerStdouterr", "ContainerStderr", "TransportMethod", "StartedAt", "Duration", "URL",
]  # fmt: skip


def test_field_names_and_order() -> None:
    info = BuildInfo(container_stdouterr="log", container_stderr="err", params={"a": "b"})
    assert list(info.to_doc()) == KEYS
    stored = orjson.loads(info.to_json(logs=False))
    assert "ContainerStdouterr" not in stored and "ContainerStderr" not in stored


def test_defaults_of_a_new_build() -> None:
    doc = BuildInfo().to_doc()
    assert doc["ExitCode"] == -999
    assert doc["Duration"] == -1_000_000_000
    assert doc["TransportMethod"] == "rsync"
    assert doc["Params"] is None
    assert "ContainerStdouterr" not in doc  # omitempty


TIMES = [
    ("utc nanos", "2019-03-01T10:11:12.123456789Z", 1551435072_123456789),
    ("trailing zeros trimmed", "2019-03-01T10:11:12.5Z", 1551435072_500000000),
    ("offset", "2019-03-01T12:11:12.000000001+02:00", 1551435072_000000001),
    ("no fraction", "2019-03-01T10:11:12Z", 1551435072_000000000),
]


@pytest.mark.parametrize(("text", "ns"), [t[1:] for t in TIMES], ids=[t[0] for t in TIMES])
def test_parse_go_times(text: str, ns: int) -> None:
    assert parse_time(text) == ns


@pytest.mark.parametrize("tz", ["UTC", "Europe/Athens", "America/New_York"])
def test_format_time_round_trips(tz: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        ns = 1551435072_120000000
        text = format_time(ns)
        assert parse_time(text) == ns
        assert text.endswith("Z") == (tz == "UTC")
        assert ".12" in text and ".120" not in text
        assert index_time(ns).startswith("Fri, 01 Mar 2019")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_case_insensitive_decoding_of_the_original_files() -> None:
    raw = b'{"params":{"a":"b"},"exitcode":3,"errbuild":"x","startedat":"2019-03-01T10:11:12Z"}'
    info = BuildInfo.from_json(raw)
    assert (info.params, info.exit_code, info.err_build) == ({"a": "b"}, 3, "x")


def test_layout_paths_and_traversal(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    jid = "ab" * 32
    assert layout.pending("p", jid) == tmp_path.resolve() / "p" / "pending" / jid
    assert layout.ready("p", jid).parent.name == "ready"
    assert layout.group_link("p", "g") == tmp_path.resolve() / "p" / "groups" / "g"
    for bad in [("..", jid), ("p", "../" + jid[3:])]:
        with pytest.raises(InvalidName):
            layout.ready(*bad)
    with pytest.raises(InvalidName):
        layout.group_link("p", "../../etc")


def test_links_are_absolute_and_replaced(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first, second = "a" * 64, "b" * 64
    layout.bootstrap("p", "g")
    for jid in (first, second):
        layout.ready("p", jid).mkdir()
    layout.set_link("p", "", first)
    layout.set_link("p", "g", first)
    layout.set_link("p", "g", second)
    assert os.readlink(layout.latest("p")) == str(layout.ready("p", first))
    assert os.path.isabs(os.readlink(layout.group_link("p", "g")))
    assert layout.link_targets("p") == {first, second}
    assert sorted(os.listdir(layout.project("p") / "groups")) == ["g"]


def test_build_info_round_trip_on_disk(tmp_path: Path) -> None:
    info = BuildInfo(params={"x": "y"}, exit_code=0, duration_ns=5, container_stdouterr="log")
    write_build_info(tmp_path, info)
    back = read_build_info(tmp_path)
    assert back.container_stdouterr == ""
    assert back.to_doc() == info.to_doc(logs=False)


def test_index_order_pagination_and_replace() -> None:
    index = JobIndex()
    for i in range(10):
        index.put("p" if i % 2 else "q", f"{i:064x}", "ready", BuildInfo(started_at_ns=i))
    assert [e.info.started_at_ns for e in index.page()] == list(range(9, -1, -1))
    assert [e.info.started_at_ns for e in index.page(2, 3)] == [7, 6, 5]
    assert [e.info.started_at_ns for e in index.page(0, 2, project="q")] == [8, 6]
    index.put("p", f"{9:064x}", "ready", BuildInfo(started_at_ns=100, exit_code=1))
    assert len(index) == 10 and index.page(0, 1)[0].info.exit_code == 1
    index.remove("q", f"{8:064x}")
    doc = orjson.loads(index.encode_page(0, 2))
    assert doc[0]["buildInfo"]["StartedAt"].startswith(("1969", "1970"))
    assert set(doc[0]) == {"id", "project", "startedAt", "buildInfo", "state"}
    assert len(index) == 9


def test_index_load_skips_pending_without_build_info(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.bootstrap("p", "")
    ok, bare = "a" * 64, "b" * 64
    layout.ready("p", ok).mkdir()
    write_build_info(layout.ready("p", ok), BuildInfo(exit_code=0))
    layout.pending("p", bare).mkdir()
    (tmp_path / "not-a-project!").mkdir()
    index = JobIndex()
    assert index.load(layout) == 1
    entry = index.get("p", ok)
    assert entry is not None and entry.state == "ready"
