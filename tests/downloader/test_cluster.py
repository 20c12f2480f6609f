"""The downloader on Redis Cluster (issue 16): the cluster key layout, and the real
subcommands on a 3-master, 3-replica cluster through a manual failover and a master's crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from pazari.downloader.clusterstore import ClusterStore
from pazari.downloader.job import Aggregation, Job
from pazari.downloader.layout import ClusterLayout, shard_tags
from pazari.downloader.redisconn import connect_cluster
from pazari.downloader.store import Empty, Store
from tests.support.daemon import DaemonFactory
from tests.support.ports import async_wait_for
from tests.support.redisha import Cluster, redis_cluster

from .failover import JOBS, Run, check, failover_run, report

__all__ = ["redis_cluster"]


@pytest.mark.parametrize("shards", [1, 3, 16, 256])
def test_shard_tags_spread_over_the_slot_space(shards: int) -> None:
    """Shard k's tag hashes into the k-th 1/S of the slots, so shards spread evenly over any
    cluster's masters; the tags are the same in every process."""
    tags = shard_tags(shards)
    assert tags == shard_tags(shards) and len(set(tags)) == shards
    for k, tag in enumerate(tags):
        assert tag.startswith("{dl:") and tag.endswith("}")
        assert k * 16384 // shards <= key_slot(tag.encode()) < (k + 1) * 16384 // shards


def test_a_jobs_keys_share_its_aggregations_slot() -> None:
    """Every key a script touches for a job is in its aggregation's shard, braces in the
    aggregation id included (only the leading tag counts)."""
    lay = ClusterLayout(16)
    for aggr in ("a", "shop-7", "{x}", "}{", "ünï"):
        k = lay.shard(aggr)
        slots = {key_slot(key.encode()) for key in (
            lay.job(k, "J0000000000000"), lay.aggr(k, aggr), lay.jobs(k, aggr),
            lay.callback_queue(k), lay.deletion_queue(k), lay.downloads_inflight(k),
            lay.callbacks_inflight(k), lay.index(k))}
        assert slots == {key_slot(lay.tags[k].encode())}, aggr


@pytest.fixture
async def cluster_store(redis_cluster: Cluster) -> AsyncIterator[Store]:
    client = connect_cluster(redis_cluster.seeds, "test", shards=4)
    store = Store(client)
    yield store
    await store.drain()
    await client.aclose()


@pytest.mark.slow
async def test_cluster_store_moves_a_job_through_its_life(cluster_store: Store,
                                                          redis_cluster: Cluster) -> None:
    """``Store(cluster client)`` is a ClusterStore; a job goes enqueue → pop → outcome →
    callback pop → delivered on the sharded keys, over shards on every master."""
    store = cluster_store
    assert isinstance(store, ClusterStore)
    lay = store.layout
    aggrs = [f"aggr-{i}" for i in range(12)]
    assert len({lay.shard(a) for a in aggrs}) == 4
    jobs = [Job(id=f"J{i:013d}", url=f"http://x/{i}", aggr_id=aggrs[i % len(aggrs)],
                callback_url="http://x/cb") for i in range(48)]
    created = [await store.enqueue_new(j, Aggregation(j.aggr_id, 2)) for j in jobs]
    assert created.count(1) == len(aggrs) and created.count(0) == len(jobs) - len(aggrs)
    assert await store.enqueue_new(Job(id=jobs[0].id, url="http://other", aggr_id="aggr-0",
                                       callback_url="http://x/cb"),
                                   Aggregation("aggr-0", 2)) == -1
    assert sorted(await store.aggregation_ids()) == sorted(aggrs)
    sizes = dict(await store.aggregation_sizes())
    assert sizes == {f"jobs:{a}": 4 for a in aggrs}

    # Every key lives in one of the 4 shards' slots, spread over the masters.
    masters = redis_cluster.masters_now()
    keys: set[str] = set()
    per_master = []
    for m in masters:
        r = redis.Redis(port=m.port)
        try:
            per_master.append({k.decode() for k in r.scan_iter(count=1000)})
            keys |= per_master[-1]
        finally:
            r.close()
    assert keys and all(k.startswith(tuple(lay.tags)) for k in keys), keys
    assert {lay.tags.index(k[:k.index("}") + 1]) for k in keys} == set(range(4))
    assert sum(bool(n) for n in per_master) >= 2

    popped = []
    for a in aggrs:
        await store.lease_aggregation(a, 30, 4)
        popped += await store.pop_downloads(a, 10, 30)
    assert sorted(j.id for j in popped) == sorted(j.id for j in jobs)
    await store.renew_inflight("DownloadsInFlight", [j.id for j in popped], 30)
    for j in popped:
        j.download_state = "Success"
        await store.finish_download(j, requeue_at=None, callback=True, deletion_at=None)
    for a in aggrs:
        await store.release_aggregation(a)
    assert await store.aggregation_ids() == []

    got: list[Job] = []
    while len(got) < len(jobs):
        got += await store.pop_callbacks(7, 30)
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)
    assert all(j.callback_state == "InProgress" and j.callback_count == 1 for j in got)
    with pytest.raises(Empty):
        await store.pop_callbacks(5, 30)
    for j in got:
        await store.callback_delivered(j.id, time.time() - 1)
    await store.drain()
    assert await store.get_job(jobs[0].id) is None
    deleted = set()
    for _ in jobs:
        job_id = await store.pop_deletion()
        await store.drop_deleted(job_id)
        deleted.add(job_id)
    assert deleted == {j.id for j in jobs}


@pytest.mark.slow
async def test_cluster_retry_and_reclaim_find_the_job(cluster_store: Store) -> None:
    """Lookups by id alone (the api's /retry) find the job's shard; an expired in-flight
    lease is reclaimed back to its aggregation's queue, and the index shows it again."""
    store = cluster_store
    job = Job(id="R000000000000a", url="http://x/1", aggr_id="zz", callback_url="http://x/cb")
    await store.enqueue_new(job, Aggregation("zz", 1))
    found = await store.get_job(job.id)
    assert found is not None and found.aggr_id == "zz"
    await store.lease_aggregation("zz", 30, 4)
    [popped] = await store.pop_downloads("zz", 1, -5)  # a lease already expired
    assert await store.aggregation_ids() == []
    assert await store.reclaim_downloads() == 1
    assert await store.aggregation_ids() == ["zz"]
    again = await store.get_job(job.id)
    assert again is not None and again.download_state == "Pending"
    assert again.reclaim_count == 1 and popped.download_count == 1


@pytest.mark.slow
async def test_cluster_failover_loses_no_job(redis_cluster: Cluster,
                                             daemon_factory: DaemonFactory,
                                             tmp_path: Path) -> None:
    """Issue 16: two processors and two notifiers on the cluster. While jobs are still being
    posted, CLUSTER FAILOVER on one master's replica, then kill -9 of another master so its
    replica takes over (the api answers 201 only once a replica has the job:
    test_cluster_enqueue_waits_for_a_replica). Every job is called back, at most twice,
    duplicates with the same payload. Prints the counts (pytest -s)."""
    cluster = redis_cluster

    async def disrupt(run: Run) -> dict[str, Any]:
        stats = await run.wait_distinct(300, 60)
        at_failover = stats["distinct"]
        first, second = cluster.masters_now()[:2]
        replica = cluster.replica_of(first)
        assert replica.command("CLUSTER", "FAILOVER").startswith(b"+OK")
        await async_wait_for(lambda: replica.role() == "master", 30,
                             "the replica to be promoted by CLUSTER FAILOVER")
        failover_during_posts = not run.posted.is_set()
        at_kill = (await run.stats())["distinct"]
        kill_during_posts = not run.posted.is_set()
        successor = cluster.replica_of(second)
        second.kill()
        await async_wait_for(lambda: successor.role() == "master", 30,
                             "the killed master's replica to take over")
        assert at_kill < JOBS, "the run ended before the kill; it proves nothing"
        return {"called_back_at_failover": at_failover, "called_back_at_kill": at_kill,
                "failover_during_posts": failover_during_posts,
                "kill_during_posts": kill_during_posts}

    client = redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", n.port)
                                               for n in cluster.nodes])
    lay = ClusterLayout(16)

    async def quiet() -> bool:
        def count() -> int:
            n = 0
            for k in range(lay.shards):
                for key in (lay.downloads_inflight(k), lay.callbacks_inflight(k),
                            lay.callback_queue(k)):
                    n += int(client.zcard(key))
                n += int(client.scard(lay.index(k)))
            return n

        return await asyncio.to_thread(count) == 0

    try:
        result = await failover_run(
            daemon_factory, tmp_path, cluster.nodes[0],
            {"cluster": True, "cluster_nodes": cluster.seeds[:3]}, disrupt, quiet)
    finally:
        client.close()
    report("cluster failover", result)
    check(result)


@pytest.mark.parametrize(("redis_section", "where", "message"), [
    ({"cluster": True}, "$.redis.cluster_nodes", "is required"),
    ({"cluster": True, "cluster_nodes": ["7000"]}, "$.redis.cluster_nodes[0]", "host:port"),
    ({"cluster": True, "cluster_nodes": ["h:1"], "sentinel": ["h:2"], "master_name": "m"},
     "$.redis.cluster", "sentinel"),
    ({"cluster": True, "cluster_nodes": ["h:1"], "db": 2}, "$.redis.db", "database 0"),
    ({"cluster": True, "cluster_nodes": ["h:1"], "cluster_shards": 0},
     "$.redis.cluster_shards", "between 1 and 256"),
])
def test_cluster_config_mistakes_are_config_errors(tmp_path: Path, redis_section: Any,
                                                   where: str, message: str) -> None:
    from pazari.downloader.config import load
    from pazari.runtime.config import ConfigError

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"redis": redis_section}))
    with pytest.raises(ConfigError) as err:
        load(str(path))
    assert where in str(err.value) and message in str(err.value)


def test_cluster_config_loads() -> None:
    from pazari.downloader.config import RedisConfig

    cfg = RedisConfig(cluster=True, cluster_nodes=["127.0.0.1:7000", "127.0.0.1:7001"])
    assert cfg.validate() is None and cfg.cluster_shards == 16


@pytest.mark.slow
async def test_cluster_enqueue_waits_for_a_replica(cluster_store: Store,
                                                   redis_cluster: Cluster) -> None:
    """An enqueue is answered once a replica has it (WAIT 1 on the writing connection), so
    a master's crash right after loses no acknowledged job: with the replica stopped the
    enqueue waits the WAIT timeout, then still succeeds (a shard without a live replica
    keeps working)."""
    from pazari.downloader.clusterstore import WAIT_MS

    store = cluster_store
    assert isinstance(store, ClusterStore)
    await store.enqueue_new(Job(id="W000000000000a", url="http://x/1", aggr_id="w",
                                callback_url="http://x/cb"), Aggregation("w", 1))
    port = store.cluster.get_node_from_key(store.layout.index(store.layout.shard("w"))).port
    [master] = [n for n in redis_cluster.nodes if n.port == port]
    replica = redis_cluster.replica_of(master)
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        created = await store.enqueue_new(
            Job(id="W000000000000b", url="http://x/2", aggr_id="w",
                callback_url="http://x/cb"), Aggregation("w", 1))
        waited = time.monotonic() - started
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert created == 0
    assert waited >= WAIT_MS / 1000
    job = await store.get_job("W000000000000b")
    assert job is not None and job.aggr_id == "w"
