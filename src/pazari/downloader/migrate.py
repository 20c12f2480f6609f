"""``downloader migrate-layout``: move a single-Redis dataset into the cluster layout
(issue 16; :mod:`pazari.downloader.layout`).

The source is a single Redis (``--from host:port``, ``--db``); the target is the cluster of
the config's ``redis`` section (``cluster: true``), with its ``cluster_shards``. Every
downloader key is copied to its shard, then the source keys are deleted: queues first, job
hashes last, so an interrupted run can simply be run again (every write is idempotent, and
the job hashes that tell a queued id's shard are still there). ``stats:*`` keys are
rewritten by the components within seconds and are left alone.

One-way: the single layout (and the Go original) cannot read the cluster layout, and
nothing moves it back. Every api, processor and notifier must be stopped while it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis
from redis.cluster import ClusterNode, RedisCluster

from pazari.downloader.layout import ClusterLayout

ONE_WAY = (
    "migrate-layout is one-way: it moves the downloader's keys from the single Redis into "
    "the cluster layout and deletes them from the single Redis; the single-Redis layout and "
    "the Go original cannot read the cluster layout, and nothing moves it back. Stop every "
    "api, processor and notifier first; start them afterwards with this config "
    "(redis.cluster: true).")

#: The original's process-wide ZSETs (spec §2) and the in-flight sets (store.py).
PROCESS_WIDE = ("CallbackQueue", "JobDeletionQueue", "DownloadsInFlight", "CallbacksInFlight")
BATCH = 500


def _s(value: bytes | str) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _chunks(items: list[Any], n: int = BATCH) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class Migration:
    def __init__(self, source: redis.Redis, target: RedisCluster | None,
                 layout: ClusterLayout) -> None:
        self.src = source
        self.dst = target
        self.lay = layout
        self.shard_of: dict[str, int] = {}  # job id -> shard, from the job hashes
        self.counts = {"job hashes": 0, "aggregation hashes": 0, "aggregation queues": 0,
                       "queued jobs": 0, **{name: 0 for name in PROCESS_WIDE}}

    def _keys(self, pattern: str) -> list[bytes]:
        return list(self.src.scan_iter(match=pattern, count=1000))

    def run(self, apply: bool) -> dict[str, int]:
        job_keys = self._keys("job:*")
        aggr_keys = self._keys("aggr:*")
        queue_keys = self._keys("jobs:*")
        for chunk in _chunks(job_keys):
            pipe = self.src.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            writes = []
            for key, h in zip(chunk, pipe.execute(), strict=True):
                if not h:
                    continue
                job_id = _s(key)[len("job:"):]
                fields = {_s(a): b for a, b in h.items()}
                k = self.lay.shard(_s(fields.get("AggrID", b"")))
                self.shard_of[job_id] = k
                writes.append((self.lay.job(k, job_id), h))
            self.counts["job hashes"] += len(writes)
            self._write(lambda p, w: p.hset(w[0], mapping=w[1]), writes, apply)
        for chunk in _chunks(aggr_keys):
            pipe = self.src.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            writes = []
            for key, h in zip(chunk, pipe.execute(), strict=True):
                if h:
                    aggr_id = _s(key)[len("aggr:"):]
                    writes.append((self.lay.aggr(self.lay.shard(aggr_id), aggr_id), h))
            self.counts["aggregation hashes"] += len(writes)
            self._write(lambda p, w: p.hset(w[0], mapping=w[1]), writes, apply)
        for key in queue_keys:
            aggr_id = _s(key)[len("jobs:"):]
            members = self._zmembers(key)
            if not members:
                continue
            k = self.lay.shard(aggr_id)
            self.counts["aggregation queues"] += 1
            self.counts["queued jobs"] += len(members)
            if apply and self.dst is not None:
                for chunk in _chunks(members):
                    self.dst.zadd(self.lay.jobs(k, aggr_id), dict(chunk))
                self.dst.sadd(self.lay.index(k), aggr_id)
        names = {"CallbackQueue": self.lay.callback_queue,
                 "JobDeletionQueue": self.lay.deletion_queue,
                 "DownloadsInFlight": self.lay.downloads_inflight,
                 "CallbacksInFlight": self.lay.callbacks_inflight}
        for name in PROCESS_WIDE:
            scored = self._zmembers(name)
            self.counts[name] = len(scored)
            per_shard: dict[int, dict[bytes, float]] = {}
            for member, score in scored:
                job_id = _s(member)
                # A delivered job's hash is gone while it waits in JobDeletionQueue: any
                # shard serves (the reaper deletes a file and a hash that is not there).
                k = self.shard_of.get(job_id, self.lay.shard(job_id))
                per_shard.setdefault(k, {})[member] = score
            if apply and self.dst is not None:
                for k, mapping in per_shard.items():
                    for chunk in _chunks(list(mapping.items())):
                        self.dst.zadd(names[name](k), dict(chunk))
        if apply:
            # Queues first, job hashes last: a run interrupted here is run again.
            for keys in ([name.encode() for name in PROCESS_WIDE], queue_keys, aggr_keys,
                         job_keys):
                for chunk in _chunks(keys):
                    self.src.delete(*chunk)
        return self.counts

    def _zmembers(self, key: bytes | str) -> list[tuple[bytes, float]]:
        reply: list[tuple[bytes, float]] = cast(
            list[tuple[bytes, float]], self.src.zrange(key, 0, -1, withscores=True))
        return reply

    def _write(self, op: Any, writes: list[Any], apply: bool) -> None:
        if not apply or self.dst is None or not writes:
            return
        pipe = self.dst.pipeline()  # type: ignore[no-untyped-call]
        for w in writes:
            op(pipe, w)
        pipe.execute()


def main(argv: Sequence[str], cfg_loader: Any) -> int:
    parser = argparse.ArgumentParser(
        prog="downloader migrate-layout",
        description="Move a single-Redis dataset into the Redis Cluster layout (one-way).")
    parser.add_argument("-c", "--config", default="config.json",
                        help="config whose redis section is the target cluster")
    parser.add_argument("--from", dest="source", required=True,
                        help="the single Redis to move from, host:port")
    parser.add_argument("--db", type=int, default=0, help="its database (default 0)")
    parser.add_argument("--yes", action="store_true",
                        help="move; without it, only count what would move")
    args = parser.parse_args(argv)
    config = cfg_loader(args.config)
    if not config.redis.cluster:
        print(f"downloader migrate-layout: {args.config}: redis.cluster must be true "
              "(the target is the cluster layout)", file=sys.stderr)
        return 2
    print(ONE_WAY, file=sys.stderr)
    host, _, port = args.source.rpartition(":")
    source = redis.Redis(host=host or "127.0.0.1", port=int(port), db=args.db)
    target = None
    if args.yes:
        seeds = []
        for addr in config.redis.cluster_nodes:
            h, _, p = addr.rpartition(":")
            seeds.append(ClusterNode(h or "127.0.0.1", int(p)))  # type: ignore[no-untyped-call]
        target = RedisCluster(startup_nodes=seeds)
    try:
        counts = Migration(source, target, ClusterLayout(config.redis.cluster_shards)).run(
            apply=args.yes)
    finally:
        source.close()
        if target is not None:
            target.close()
    verb = "moved" if args.yes else "would move (dry run: run again with --yes to move)"
    print(f"{verb}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0
