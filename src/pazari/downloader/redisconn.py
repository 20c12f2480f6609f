"""Redis clients for the three components: plain, Sentinel (spec §5 config ``redis``) or
Redis Cluster (issue 16)."""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pazari.downloader.layout import DEFAULT_SHARDS

# Given, redis-py does not look its own version up in the package metadata for every new
# connection (importlib.metadata parsing showed in the processor's profile).
DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


def connect(url: str, name: str, max_connections: int = 200) -> aioredis.Redis:
    """A client that survives a Redis restart: commands are retried with backoff on
    connection errors (the original used go-redis MaxRetries 5)."""
    return aioredis.Redis.from_url(
        url, client_name=name, max_connections=max_connections, health_check_interval=5,
        retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.05), 8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=5,
        driver_info=DRIVER,
    )


def connect_config(redis_cfg: Any, name: str, max_connections: int = 200) -> aioredis.Redis:
    """``connect`` for the config's ``redis`` section: Sentinel mode iff both ``sentinel`` and
    ``master_name`` are set (spec §5); redis-py's sentinel pool follows a failover by itself
    (the original re-created its client on ``+switch-master``). With ``cluster`` true, a
    RedisCluster client on the seed nodes, which :class:`pazari.downloader.store.Store`
    recognises to use the cluster key layout."""
    if redis_cfg.cluster:
        return connect_cluster(redis_cfg.cluster_nodes, name, max_connections,
                               redis_cfg.cluster_shards)
    if redis_cfg.sentinel and redis_cfg.master_name:
        hosts = []
        for addr in redis_cfg.sentinel:
            host, _, port = addr.rpartition(":")
            hosts.append((host or "127.0.0.1", int(port)))
        sentinel = Sentinel(hosts, socket_connect_timeout=5)  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
        client: aioredis.Redis = sentinel.master_for(
            redis_cfg.master_name, client_name=name, db=redis_cfg.db,
            max_connections=max_connections,
            retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.05), 8),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            driver_info=DRIVER)
        return client
    return connect(redis_cfg.url(), name, max_connections)


class ShardedCluster(RedisCluster):
    """A RedisCluster client that carries ``redis.cluster_shards`` to the store."""

    def __init__(self, *args: Any, shards: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shards = shards


def connect_cluster(nodes: list[str], name: str, max_connections: int = 200,
                    shards: int = DEFAULT_SHARDS) -> aioredis.Redis:
    """A Redis Cluster client on the seed ``host:port`` list. It follows MOVED/ASK and a
    failover by itself (topology refresh on a connection error); commands are retried with
    the same backoff as the plain client's. Typed as ``Redis``: it serves the same commands,
    and the store tells the two apart by type once, at construction."""
    seeds = []
    for addr in nodes:
        host, _, port = addr.rpartition(":")
        seeds.append(ClusterNode(host or "127.0.0.1", int(port)))
    client = ShardedCluster(
        shards=shards, startup_nodes=seeds, client_name=name, max_connections=max_connections,
        retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.05), 8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=2, driver_info=DRIVER)
    return cast(aioredis.Redis, client)
