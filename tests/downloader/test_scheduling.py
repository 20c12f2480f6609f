"""Scheduling through the real subcommands: ``aggr_rate`` (token bucket), the global
concurrency cap, per-aggregation proxies, and a graceful stop that requeues in-flight jobs
without counting an attempt."""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.support.ports import async_wait_for

from .servers import HTML
from .stack import Stack

pytestmark = pytest.mark.timeout(120)


async def test_aggr_rate_token_bucket(stack: Stack) -> None:
    await stack.start()
    stack.files.files["p.html"] = (HTML, "text/html")
    ids = [await stack.post(f"{stack.file_url}/file/p.html?a=rated", aggr_id="rated",
                            aggr_limit=10, aggr_rate=4) for _ in range(12)]
    await stack.receiver.wait_for_jobs(set(ids), timeout=60)
    times = sorted(stack.files.hit_times["rated"])
    # Burst of 4, then 4 per second: the last 8 need at least ~2 s.
    assert times[-1] - times[0] >= 1.7, times
    window = [t for t in times if t - times[0] <= 1.0]
    assert len(window) <= 4 + 4 + 1, times


async def test_global_concurrency_cap(stack: Stack) -> None:
    await stack.start(processor={"max_concurrency": 3})
    stack.files.files["p.html"] = (HTML, "text/html")
    ids = []
    for i in range(24):
        aggr = f"g{i % 3}"
        ids.append(await stack.post(f"{stack.file_url}/file/p.html?a=all&delay=0.1",
                                    aggr_id=aggr, aggr_limit=10))
    await stack.receiver.wait_for_jobs(set(ids), timeout=60)
    assert stack.files.peak["all"] == 3


async def test_aggregation_proxy(stack: Stack) -> None:
    await stack.start()
    job_id = await stack.post("http://downloads.example.invalid/file.html", aggr_id="prox",
                              aggr_proxy=stack.file_url)
    await stack.receiver.wait_for_jobs({job_id}, timeout=30)
    assert stack.receiver.one(job_id)["success"]
    assert stack.files.proxied == ["downloads.example.invalid/file.html"]
    assert (stack.storage / job_id[:3] / job_id).read_bytes() == HTML


async def test_graceful_stop_requeues_without_counting(stack: Stack) -> None:
    await stack.start(processor={"inflight_lease": 30, "aggregation_lease": 30})
    stack.files.files["p.html"] = (HTML, "text/html")
    ids = [await stack.post(f"{stack.file_url}/file/p.html?a=slow&delay=20", aggr_id="slow",
                            aggr_limit=5) for _ in range(5)]
    await async_wait_for(lambda: stack.files.current["slow"] == 5, 30, "5 downloads running")
    await stack.daemons["processor"].astop(within=10)
    r = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        assert r.zcard("DownloadsInFlight") == 0
        assert r.zcard("jobs:slow") == 5
        assert r.hget("aggr:slow", "ExpiresAt") == ""  # lease released for a peer
        for job_id in ids:
            job = r.hgetall(f"job:{job_id}")
            assert (job["DownloadState"], job["DownloadCount"]) == ("Pending", "0")
    finally:
        r.close()
    await asyncio.sleep(0)
