"""``downloader migrate-layout`` (issue 16): a single-Redis dataset moved into the cluster
layout, then finished there by a processor and a notifier."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
import redis

from pazari.downloader.clusterstore import ClusterStore
from pazari.downloader.job import SUCCESS, Aggregation, Job
from pazari.downloader.redisconn import connect, connect_cluster
from pazari.downloader.store import Store
from tests.support.daemon import DaemonFactory
from tests.support.ports import async_wait_for, free_port
from tests.support.redisha import Cluster, redis_cluster
from tests.support.services import RedisServer

from .conftest import DOWNLOADER_BIN, make_config, write_config
from .servers import FileServer, Receiver

__all__ = ["redis_cluster"]


def _downloader_keys(r: redis.Redis) -> set[str]:
    return {k.decode() for k in r.scan_iter(count=1000)
            if not k.startswith(b"stats:")}


def _migrate(config: Path, source: RedisServer, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOWNLOADER_BIN, "migrate-layout", "-c", str(config),
                           "--from", f"127.0.0.1:{source.port}", *extra],
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.slow
async def test_migrate_layout_moves_a_dataset_that_the_cluster_then_finishes(
        redis_server: RedisServer, redis_cluster: Cluster, daemon_factory: DaemonFactory,
        tmp_path: Path) -> None:
    """Queued jobs in 6 aggregations, a job in flight at a crashed processor, a queued
    callback and a delivered job waiting for its file's deletion: the dry run says the move
    is one-way and moves nothing; the move empties the single Redis; a processor and a
    notifier on the cluster then call every job back and the reaper takes the moved
    deletion."""
    files, receiver = FileServer(), Receiver()
    file_url = await files.start()
    await receiver.start()
    files.files["a.txt"] = (b"hello", "text/plain")
    single = connect(redis_server.url, "test")
    store = Store(single)
    try:
        queued = [Job(id=f"Q{i:013d}", url=f"{file_url}/file/a.txt", aggr_id=f"m{i % 6}",
                      callback_url=receiver.url) for i in range(30)]
        for job in queued:
            await store.enqueue(job, Aggregation(job.aggr_id, 2))
        crashed = Job(id="C000000000000i", url=f"{file_url}/file/a.txt", aggr_id="crash",
                      callback_url=receiver.url)
        await store.enqueue(crashed, Aggregation("crash", 1))
        await store.lease_aggregation("crash", -10, 4)  # its lease lapsed as well
        [popped] = await store.pop_downloads("crash", 1, -5)  # an expired in-flight lease
        callback = Job(id="K000000000000b", url=f"{file_url}/file/a.txt", aggr_id="cb",
                       callback_url=receiver.url)
        await store.enqueue(callback, Aggregation("cb", 1))
        await store.lease_aggregation("cb", 30, 4)
        [done] = await store.pop_downloads("cb", 1, 30)
        done.download_state = SUCCESS
        await store.finish_download(done, requeue_at=None, callback=True, deletion_at=None)
        await store.release_aggregation("cb")
        delivered = Job(id="D000000000000d", url=f"{file_url}/file/a.txt", aggr_id="cb",
                        callback_url=receiver.url)
        await store.enqueue(delivered, Aggregation("cb", 1))
        await store.lease_aggregation("cb", 30, 4)
        [fin] = await store.pop_downloads("cb", 1, 30)
        fin.download_state = SUCCESS
        await store.finish_download(fin, requeue_at=None, callback=True, deletion_at=None)
        await store.release_aggregation("cb")
        cbs = await store.pop_callbacks(2, 30)
        [mine] = [j for j in cbs if j.id == delivered.id]
        [other] = [j for j in cbs if j.id == callback.id]
        await store.callback_delivered(mine.id, time.time() - 1)
        await store.callback_outcome(other, retry_at=time.time())  # back to the queue
        await store.drain()
    finally:
        await single.aclose()
    assert popped.id == crashed.id

    cfg = make_config(tmp_path, redis_server)
    cfg["redis"] = {"cluster": True, "cluster_nodes": redis_cluster.seeds[:1],
                    "cluster_shards": 4}
    path = write_config(tmp_path, cfg)
    r = redis.Redis(port=redis_server.port)
    try:
        before = _downloader_keys(r)
        assert {"CallbackQueue", "JobDeletionQueue", "DownloadsInFlight"} <= before
        dry = _migrate(path, redis_server)
        assert "one-way" in dry.stderr
        assert "would move (dry run" in dry.stdout
        assert "32 job hashes, 7 aggregation hashes" in dry.stdout, dry.stdout
        assert "30 queued jobs" in dry.stdout, dry.stdout
        assert _downloader_keys(r) == before

        moved = _migrate(path, redis_server, "--yes")
        assert "one-way" in moved.stderr
        assert moved.stdout.startswith("moved: 32 job hashes"), moved.stdout
        assert "1 CallbackQueue, 1 JobDeletionQueue, 1 DownloadsInFlight" in moved.stdout
        assert _downloader_keys(r) == set()
    finally:
        r.close()

    client = connect_cluster(redis_cluster.seeds, "test", shards=4)
    cluster_store = Store(client)
    assert isinstance(cluster_store, ClusterStore)
    try:
        assert sorted(await cluster_store.aggregation_ids()) == sorted(
            [f"m{i}" for i in range(6)])
        job = await cluster_store.get_job(queued[0].id)
        assert job is not None and job.url == queued[0].url
        lay = cluster_store.layout

        async def deletion_scores() -> list[float | None]:
            return list(await asyncio.gather(*(client.zscore(lay.deletion_queue(k),
                                                             delivered.id)
                                               for k in range(lay.shards))))

        assert any(s is not None for s in await deletion_scores())
        for name in ("processor", "notifier"):
            daemon_factory([DOWNLOADER_BIN, name, "-c", str(path),
                            "--metrics-addr", f"127.0.0.1:{free_port()}"])
        want = {j.id for j in queued} | {crashed.id, callback.id}
        await receiver.wait_for_jobs(want, timeout=60)
        assert all(receiver.one(i)["success"] for i in want)
        assert delivered.id not in receiver.by_job

        async def reaped() -> bool:
            # The jobs called back here wait deletion_interval (1 min); the moved one is due.
            return all(s is None for s in await deletion_scores())

        await async_wait_for(reaped, 30, "the reaper to take the moved deletion")
    finally:
        await client.aclose()
        await files.stop()
        await receiver.stop()


def test_migrate_layout_needs_a_cluster_target(tmp_path: Path) -> None:
    """The target is the config's cluster: a config without ``redis.cluster`` is refused
    before anything is read or written."""
    path = tmp_path / "c.json"
    path.write_text('{"redis": {"addr": "127.0.0.1:1"}}')
    proc = subprocess.run([DOWNLOADER_BIN, "migrate-layout", "-c", str(path),
                           "--from", "127.0.0.1:1", "--yes"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "redis.cluster must be true" in proc.stderr and proc.stdout == ""
