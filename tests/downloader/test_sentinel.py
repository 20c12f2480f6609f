"""The downloader on Redis Sentinel (spec §5 ``redis.sentinel`` + ``master_name``; issue 16):
the failover run with the master killed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.daemon import DaemonFactory
from tests.support.ports import async_wait_for
from tests.support.redisha import SentinelSet, redis_sentinels

from .failover import JOBS, Run, check, failover_run, report

__all__ = ["redis_sentinels"]


@pytest.mark.slow
async def test_sentinel_failover_loses_no_job(redis_sentinels: SentinelSet,
                                              daemon_factory: DaemonFactory,
                                              tmp_path: Path) -> None:
    """An api, two processors and two notifiers find the master through three sentinels;
    once every job is acknowledged (replication is asynchronous: see test_cluster), the
    master is killed with SIGKILL and the sentinels promote a replica, which every component
    follows. Every job is called back, at most twice, duplicates with the same payload.
    Prints the counts (pytest -s)."""
    ha = redis_sentinels
    old_port = ha.master_port()

    async def disrupt(run: Run) -> dict[str, Any]:
        await run.posted.wait()
        at_kill = (await run.stats())["distinct"]
        ha.server_on(old_port).kill()
        killed_at = asyncio.get_running_loop().time()
        await async_wait_for(lambda: ha.master_port() != old_port, 30,
                             "the sentinels to promote a replica")
        promoted_s = asyncio.get_running_loop().time() - killed_at
        assert at_kill < JOBS, "the run ended before the kill; it proves nothing"
        return {"called_back_at_kill": at_kill, "promoted_after_s": round(promoted_s, 1)}

    async def quiet() -> bool:
        def count() -> int:
            r = redis.Redis(port=ha.master_port())
            try:
                n = sum(int(r.zcard(k)) for k in ("DownloadsInFlight", "CallbacksInFlight",
                                                   "CallbackQueue"))
                return n + sum(1 for _ in r.scan_iter(match="jobs:*", count=1000))
            finally:
                r.close()

        return await asyncio.to_thread(count) == 0

    result = await failover_run(
        daemon_factory, tmp_path, ha.servers[0],
        {"sentinel": ha.sentinel_addrs, "master_name": ha.MASTER_NAME}, disrupt, quiet)
    report("sentinel failover", result)
    check(result)
