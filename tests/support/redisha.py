"""Highly available Redis on loopback for failover tests (issue 16): a Redis Cluster of
masters with one replica each, made by ``redis-cli --cluster create``, and a Sentinel set
(one master, replicas, three sentinels). Debian's ``redis-server`` runs every role
(``redis-server --sentinel`` is what Debian's ``redis-sentinel`` runs).

Both are fixtures imported by the tests that use them; every process is stopped at teardown.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.ports import free_port, wait_for
from tests.support.services import START_TIMEOUT, RedisServer, require_binary

#: Failure detection in ~1 s, so a failover fits in a test: cluster-node-timeout for the
#: cluster, down-after-milliseconds for Sentinel.
NODE_TIMEOUT_MS = 1000


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free as well."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class ClusterNode(RedisServer):
    name = "redis-cluster-node"

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica with a stale link may still be promoted: the test kills masters.
                "--cluster-replica-validity-factor", "0"]

    def info(self, section: str) -> dict[str, str]:
        args = ("CLUSTER", "INFO") if section == "cluster" else ("INFO", section)
        raw = self.command(*args).decode(errors="replace")
        out = {}
        for line in raw.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def role(self) -> str:
        return self.info("replication").get("role", "")


class Cluster:
    """``masters`` masters with one replica each; ``nodes`` in creation order (the first
    ``masters`` start as masters)."""

    def __init__(self, base: Path, masters: int = 3) -> None:
        self.base = base
        self.binary = require_binary("redis-server", "apt-get install -y redis-server")
        self.cli = require_binary("redis-cli", "apt-get install -y redis-tools")
        self.nodes: list[ClusterNode] = []
        self.masters = masters

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def start(self) -> Cluster:
        for _ in range(self.masters * 2):
            port = _cluster_port()
            node = ClusterNode(self.binary, port, self.base / f"node-{port}")
            node.start()
            self.nodes.append(node)
        subprocess.run([self.cli, "--cluster", "create", *self.seeds,
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)
        self.wait_healthy()
        # Clients learn the replicas from CLUSTER SLOTS: wait until every node lists one for
        # every slot range (gossip spreads the replicas' roles a moment after the create).
        wait_for(lambda: all(self._slots_have_replicas(n) for n in self.nodes),
                 START_TIMEOUT, "every node to list a replica for every slot range")
        return self

    @staticmethod
    def _slots_have_replicas(node: ClusterNode) -> bool:
        r = redis.Redis(port=node.port)
        try:
            ranges = r.execute_command("CLUSTER SLOTS")
        finally:
            r.close()
        return bool(ranges) and all(len(rng) >= 4 for rng in ranges)

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.running]

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Every live node says cluster_state:ok and there are ``masters`` masters, each
        with a live replica attached (as after the create, or after a failover settles)."""

        def ok() -> bool:
            live = self.live()
            if not all(n.info("cluster").get("cluster_state") == "ok" for n in live):
                return False
            return sum(n.role() == "master" for n in live) == self.masters

        wait_for(ok, timeout, "the cluster to be ok")

    def masters_now(self) -> list[ClusterNode]:
        return [n for n in self.live() if n.role() == "master"]

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        for n in self.live():
            info = n.info("replication")
            if info.get("role") == "slave" and info.get("master_port") == str(master.port):
                return n
        raise AssertionError(f"no live replica of {master.port}")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh 3-master, 3-replica cluster on loopback."""
    cluster = Cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class SentinelProcess(RedisServer):
    name = "redis-sentinel"

    def __init__(self, binary: str, port: int, workdir: Path, master_port: int) -> None:
        super().__init__(binary, port, workdir)
        self.master_port = master_port

    def _argv(self) -> list[str]:
        conf = self.workdir / "sentinel.conf"
        if not conf.exists():  # sentinel rewrites its config; keep its changes on restart
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor pz 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds pz {NODE_TIMEOUT_MS}\n"
                "sentinel failover-timeout pz 5000\n")
        return [self.binary, str(conf), "--sentinel"]


class SentinelSet:
    """One master (``servers[0]`` at start), ``replicas`` replicas and three sentinels with a
    quorum of two, monitoring the master as ``pz``."""

    MASTER_NAME = "pz"

    def __init__(self, base: Path, replicas: int = 2) -> None:
        self.base = base
        self.binary = require_binary("redis-server", "apt-get install -y redis-server")
        self.replicas = replicas
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelProcess] = []

    @property
    def sentinel_addrs(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> SentinelSet:
        master = RedisServer(self.binary, free_port(), self.base / "master")
        master.start()
        self.servers.append(master)
        for i in range(self.replicas):
            replica = RedisServer(self.binary, free_port(), self.base / f"replica-{i}")
            replica.start()
            reply = replica.command("REPLICAOF", "127.0.0.1", str(master.port))
            assert reply.startswith(b"+OK"), reply
            self.servers.append(replica)
        wait_for(lambda: f"connected_slaves:{self.replicas}" in
                 master.command("INFO", "replication").decode(), START_TIMEOUT,
                 "the replicas to attach")
        for i in range(3):
            s = SentinelProcess(self.binary, free_port(), self.base / f"sentinel-{i}",
                                master.port)
            s.start()
            self.sentinels.append(s)
        wait_for(lambda: all(b"num-other-sentinels\r\n$1\r\n2" in
                             s.command("SENTINEL", "MASTER", self.MASTER_NAME)
                             for s in self.sentinels), START_TIMEOUT,
                 "the sentinels to see each other")
        return self

    def master_port(self) -> int:
        reply = self.sentinels[0].command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                          self.MASTER_NAME).decode()
        return int(reply.split("\r\n")[4])

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def stop(self) -> None:
        for s in [*self.sentinels, *self.servers]:
            s.stop()


@pytest.fixture
def redis_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A fresh master with two replicas and three sentinels on loopback."""
    sentinels = SentinelSet(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        yield sentinels.start()
    finally:
        sentinels.stop()
