"""The spool: group commit, reading from cursors, segments, torn tails and the quota."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pazari.scratchd.config import SpoolConfig
from pazari.scratchd.spool import Spool, SpoolFull


async def _spool(path: Path, **over: int) -> Spool:
    spool = Spool(SpoolConfig(dir=str(path), **over))  # type: ignore[arg-type]
    spool.open(["s1", "s2"])
    await spool.start()
    return spool


async def test_append_commits_and_reads_back(tmp_path: Path) -> None:
    spool = await _spool(tmp_path)
    commits = [spool.append(b"t", b"k%d" % i, b'{"n":%d}' % i) for i in range(100)]
    await asyncio.gather(*commits)
    assert spool.durable == spool.end > 0
    assert len({id(c) for c in commits}) < 100  # group commit: commits are shared
    records = spool.read(0)
    assert [r.event for r in records] == [b'{"n":%d}' % i for i in range(100)]
    assert records[5].key == b"k5" and records[5].tenant == "t"
    assert spool.read(records[50].offset)[0].event == b'{"n":50}'
    await spool.stop_writes()
    spool.close()


async def test_segments_roll_and_are_dropped_after_every_cursor(tmp_path: Path) -> None:
    spool = await _spool(tmp_path, segment_bytes=1000)
    for i in range(50):
        await spool.append(b"t", b"", b"x" * 90 + b"%02d" % i)
    assert len(spool.bases) > 3
    end = spool.end
    spool.cursors["s1"] = end
    spool.persist_cursors()
    assert len(spool.bases) > 3  # s2 still needs them
    spool.cursors["s2"] = end
    spool.persist_cursors()
    assert len(spool.bases) == 1 and len(list(tmp_path.glob("*.seg"))) == 1
    await spool.stop_writes()
    spool.close()
    again = await _spool(tmp_path, segment_bytes=1000)
    assert again.cursors == {"s1": end, "s2": end} and again.read(end) == []
    await again.stop_writes()
    again.close()


async def test_torn_tail_is_cut_on_open(tmp_path: Path) -> None:
    spool = await _spool(tmp_path)
    for i in range(3):
        await spool.append(b"t", b"", b"event%d" % i)
    end = spool.end
    await spool.stop_writes()
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    with seg.open("ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a record header whose body never arrived
    again = await _spool(tmp_path)
    assert again.end == end and [r.event for r in again.read(0)][-1] == b"event2"
    await again.append(b"t", b"", b"event3")
    assert [r.event for r in again.read(0)] == [b"event0", b"event1", b"event2", b"event3"]
    await again.stop_writes()
    again.close()


async def test_quota_refuses_appends(tmp_path: Path) -> None:
    spool = await _spool(tmp_path, quota_bytes=500)
    with pytest.raises(SpoolFull):
        for _ in range(100):
            await spool.append(b"t", b"", b"y" * 50)
    assert spool.over_quota()
    spool.cursors = {"s1": spool.end, "s2": spool.end}
    spool.persist_cursors()  # only one segment: the quota counts what is on disk
    await spool.stop_writes()
    spool.close()


async def test_count_records_across_segments_and_chunks(tmp_path: Path) -> None:
    """The lag in events (issue 12): whole records between two offsets, across segments of
    mixed record sizes; a torn tail is not counted."""
    spool = await _spool(tmp_path, segment_bytes=1000)
    for i in range(40):
        await spool.append(b"t", b"", b"x" * (90 if i % 10 else 3000) + b"%02d" % i)
    records = spool.read(0, 1 << 30)
    assert len(records) == 40
    for start in (0, records[7].offset, records[39].offset, spool.end):
        expected = sum(1 for r in records if r.offset >= start)
        assert spool.count_records(start, spool.end) == expected
    with open(tmp_path / f"{spool.bases[-1]:020d}.seg", "ab") as f:
        f.write(b"\x50\x00\x00\x00torn")
    assert spool.count_records(0, spool.end + 8) == 40
    await spool.stop_writes()
    spool.close()
