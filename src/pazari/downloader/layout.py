"""The Redis Cluster key layout (issue 16); the single-Redis layout is the original's, in
:mod:`pazari.downloader.store`, and stays the default.

Redis Cluster runs a script only if every key it touches hashes to one slot. The job hash,
its aggregation's hash and queue, and the process-wide queues a script moves the job between
must therefore share a hash tag. The process-wide sets are split into ``S`` shards
(``redis.cluster_shards``, default 16); shard ``k`` has tag ``T = {dl:k}`` and its keys are

- ``T job:<id>``, ``T aggr:<aggr_id>``, ``T jobs:<aggr_id>`` (written without the space);
- ``T CallbackQueue``, ``T JobDeletionQueue``, ``T DownloadsInFlight``,
  ``T CallbacksInFlight``: the original's process-wide ZSETs, one per shard;
- ``T Aggregations``: SET, the aggregation index (an id is added by every script that adds
  to its queue and removed only when its queue is empty), which replaces the single
  layout's SCAN for ``jobs:*``: a SCAN would have to visit every node.

A job's shard is its aggregation's: ``crc32(aggr_id) mod S``, so an aggregation's jobs,
queue and lease live in one slot. The tag comes first in every key: an aggregation id may
itself contain braces, and Redis hashes only the first ``{...}``.

Lookups by job id alone (``POST /retry/<id>``) try the S shards in one pipelined round per
node instead of keeping an id → shard index key: such a key would live in another slot, so
it could not be written atomically with the job, and every enqueue and delivery would pay an
extra write for a lookup only the retry endpoint needs. Processes that popped a job keep its
shard in memory until they finish it (:class:`pazari.downloader.clusterstore.ClusterStore`).

``stats:<component>`` keys are touched by no script and keep their names.
"""

from __future__ import annotations

import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

DEFAULT_SHARDS = 16


def shard_tags(shards: int) -> list[str]:
    """Tag of each shard: ``{dl:k}``, or ``{dl:k.n}`` with the first ``n`` whose slot falls in
    shard k's ``1/shards`` of the slot space, so the shards spread over the slot ranges (and
    so over the masters) evenly whatever ``crc16("dl:k")`` happens to be. Deterministic:
    every process computes the same tags."""
    tags = []
    for k in range(shards):
        lo = k * REDIS_CLUSTER_HASH_SLOTS // shards
        hi = (k + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        name, n = f"dl:{k}", 0
        while not lo <= key_slot(name.encode()) < hi:
            n += 1
            name = f"dl:{k}.{n}"
        tags.append("{" + name + "}")
    return tags


class ClusterLayout:
    """Key names of the cluster layout for ``shards`` shards."""

    def __init__(self, shards: int = DEFAULT_SHARDS) -> None:
        self.shards = shards
        self.tags = shard_tags(shards)

    def shard(self, aggr_id: str) -> int:
        return zlib.crc32(aggr_id.encode("utf-8", "surrogatepass")) % self.shards

    def tag(self, aggr_id: str) -> str:
        return self.tags[self.shard(aggr_id)]

    # Keys of one job or aggregation, in its shard k.
    def job(self, k: int, job_id: str) -> str:
        return f"{self.tags[k]}job:{job_id}"

    def aggr(self, k: int, aggr_id: str) -> str:
        return f"{self.tags[k]}aggr:{aggr_id}"

    def jobs(self, k: int, aggr_id: str) -> str:
        return f"{self.tags[k]}jobs:{aggr_id}"

    # The process-wide sets of shard k.
    def callback_queue(self, k: int) -> str:
        return f"{self.tags[k]}CallbackQueue"

    def deletion_queue(self, k: int) -> str:
        return f"{self.tags[k]}JobDeletionQueue"

    def downloads_inflight(self, k: int) -> str:
        return f"{self.tags[k]}DownloadsInFlight"

    def callbacks_inflight(self, k: int) -> str:
        return f"{self.tags[k]}CallbacksInFlight"

    def index(self, k: int) -> str:
        return f"{self.tags[k]}Aggregations"
