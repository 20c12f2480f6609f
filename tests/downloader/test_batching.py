"""The batch coalescer (batching.py) and the batched Redis scripts built on it: items
submitted together share one handler call, each submitter gets its own result or error, a
cancelled submitter's result goes to the orphan hook, and an id collision on enqueue is
told apart from a replayed write."""

from __future__ import annotations

import asyncio

import pytest

from pazari.downloader.batching import Coalescer
from pazari.downloader.job import Aggregation, Job
from pazari.downloader.store import Empty, Store


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.orphans: list[int] = []

    async def handle(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if self.delay:
            await asyncio.sleep(self.delay)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    async def orphan(self, result: int) -> None:
        self.orphans.append(result)


@pytest.mark.parametrize(("n", "max_batch", "batches"), [
    (1, 500, 1), (10, 500, 1), (10, 4, 3),
], ids=["lone", "one-tick", "capped"])
async def test_items_of_one_tick_share_a_batch(n: int, max_batch: int, batches: int) -> None:
    rec = Recorder()
    c: Coalescer[int, int] = Coalescer(rec.handle, max_batch=max_batch)
    results = await asyncio.gather(*(c.submit(i * 2) for i in range(n)))
    assert results == [i * 20 for i in range(n)]
    assert len(rec.batches) == batches
    assert sorted(x for b in rec.batches for x in b) == [i * 2 for i in range(n)]


async def test_errors_are_per_item() -> None:
    c: Coalescer[int, int] = Coalescer(Recorder().handle)
    ok, bad = await asyncio.gather(c.submit(2), c.submit(3), return_exceptions=True)
    assert ok == 20
    assert isinstance(bad, ValueError) and str(bad) == "odd 3"


async def test_a_failing_batch_fails_each_waiter() -> None:
    async def broken(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("down")

    c: Coalescer[int, int] = Coalescer(broken)
    results = await asyncio.gather(c.submit(1), c.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_submit_after_a_runner_finished_is_served() -> None:
    """A submit arriving while the runner's task is finishing must start a new runner (it
    once waited forever on the finished one)."""
    c: Coalescer[int, int] = Coalescer(Recorder().handle)
    for i in range(50):
        assert await c.submit(i * 2) == i * 20
        await asyncio.sleep(0)
    assert await asyncio.wait_for(c.submit(4), 5) == 40


async def test_batches_queue_behind_the_running_one() -> None:
    rec = Recorder(delay=0.05)
    c: Coalescer[int, int] = Coalescer(rec.handle, parallel=1)
    first = asyncio.ensure_future(c.submit(0))
    await asyncio.sleep(0.01)  # the first batch is being handled
    rest = await asyncio.gather(*(c.submit(i * 2) for i in range(1, 6)))
    assert await first == 0
    assert rest == [i * 20 for i in range(1, 6)]
    assert rec.batches == [[0], [2, 4, 6, 8, 10]]


async def test_cancelled_submitter_result_goes_to_orphan_hook() -> None:
    rec = Recorder(delay=0.05)
    c: Coalescer[int, int] = Coalescer(rec.handle, orphan=rec.orphan)
    task = asyncio.ensure_future(c.submit(4))
    await asyncio.sleep(0.01)
    task.cancel()
    await c.drain()
    assert rec.orphans == [40]


async def test_enqueue_new_refuses_a_taken_id_but_not_a_replay(store: Store) -> None:
    job = Job(id="SAMEidSAMEid01", url="http://x/a", aggr_id="g", callback_url="http://x/cb")
    assert await store.enqueue_new(job, Aggregation("g", 2)) == 1
    # The same write again (a client retry after a lost reply): accepted, nothing doubled.
    assert await store.enqueue_new(job, Aggregation("g", 2)) == 0
    other = Job(id="SAMEidSAMEid01", url="http://x/other", aggr_id="g")
    assert await store.enqueue_new(other, Aggregation("g", 2)) == -1
    assert await store.r.zcard("jobs:g") == 1
    assert await store.r.hget("job:SAMEidSAMEid01", "URL") == b"http://x/a"


async def test_pops_of_many_aggregations_share_one_call(store: Store) -> None:
    for a in ("p", "q"):
        for i in range(3):
            job = Job(id=f"{a}job{i:010d}", url=f"http://x/{a}{i}", aggr_id=a)
            await store.enqueue_new(job, Aggregation(a, 3))
    p, q, empty = await asyncio.gather(store.pop_downloads("p", 2, 30),
                                       store.pop_downloads("q", 5, 30),
                                       store.pop_downloads("none", 1, 30),
                                       return_exceptions=True)
    assert [j.id for j in p] == ["pjob0000000000", "pjob0000000001"]  # type: ignore[union-attr]
    assert len(q) == 3  # type: ignore[arg-type]
    assert isinstance(empty, Empty)
    assert all(j.download_state == "InProgress" and j.download_count == 1
               for j in [*p, *q])  # type: ignore[misc]
    assert await store.r.zcard("DownloadsInFlight") == 5


async def test_a_refused_item_fails_alone(store: Store) -> None:
    """WRONGTYPE on one job's queue key fails that job's outcome only; the rest of its batch
    is written."""
    good = Job(id="GOODgoodGOOD01", url="http://x/g", aggr_id="fine")
    bad = Job(id="BADbadBADbad01", url="http://x/b", aggr_id="broken")
    for job in (good, bad):
        await store.enqueue_new(job, Aggregation(job.aggr_id, 1))
    await store.r.delete("jobs:broken")
    await store.r.set("jobs:broken", "not a zset")
    results = await asyncio.gather(
        store.finish_download(good, requeue_at=0, callback=False, deletion_at=None),
        store.finish_download(bad, requeue_at=0, callback=False, deletion_at=None),
        return_exceptions=True)
    assert results[0] is None
    assert "WRONGTYPE" in str(results[1])
    assert await store.r.zscore("jobs:fine", good.id) == 0
