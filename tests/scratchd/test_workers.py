"""``--workers N``: N processes on one port (SO_REUSEPORT), one READY=1, clean SIGTERM, and
file sinks that never share a file between processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.scratchd.conftest import SCRATCHD, Http, read_file_sink, tenant
from tests.support.ports import free_port, wait_for


def free_ports_in_a_row(n: int) -> int:
    """A port p with p .. p+n-1 all free right now."""
    for _ in range(50):
        first = free_port()
        socks = []
        try:
            for i in range(n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", first + i))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first
    raise AssertionError("no run of free ports")


def _load(port: int, first: int, count: int, per_connection: int) -> None:
    """``count`` pixels numbered from ``first``, a new connection every ``per_connection``
    (new connections are what the kernel spreads over the workers)."""
    http = Http(port)
    for n in range(first, first + count):
        if n % per_connection == 0:
            http.close()
            http = Http(port)
        assert http.request("GET", f"/track?n={n}&pad={'x' * 3000}").status == 200
    http.close()


def test_two_workers_share_the_port_and_never_a_file(daemon_factory: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "events"
    config = {"tenants": [tenant("a", ["a.test"], ["file"])],
              "sinks": {"file": {"type": "file", "path": str(out)}},
              "spool": {"dir": str(tmp_path / "spool")}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    port, metrics = free_port(), free_ports_in_a_row(2)
    daemon = daemon_factory([SCRATCHD, "--config", str(tmp_path / "c.json"), "--listen",
                             f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning",
                             "--metrics-addr", f"127.0.0.1:{metrics}"],
                            env={**os.environ})
    for n in range(40):
        http = Http(port)  # a new connection each time: the kernel spreads them
        assert http.request("GET", f"/track?n={n}").status == 200
        http.close()
    # Worker i serves its metrics on the given port + i; both took some of the 40.
    docs = [Http(port, metrics + i).vars() for i in range(2)]
    pids = {doc["pid"] for doc in docs}
    assert len(pids) == 2 and daemon.pid not in pids
    assert all(doc["scratchd"]["events_total"] > 0 for doc in docs), docs
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["worker-0", "worker-1"]
    # Concurrent load with 3 KB lines (a delivered batch is far above PIPE_BUF): with a shared
    # file the two processes' buffered writes would interleave mid-line.
    threads = [threading.Thread(target=_load, args=(port, 1000 * (i + 1), 300, 10))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    daemon.stop(within=30)
    files = sorted(out.glob("*.jsonl*"))
    assert {f.name.split(".")[0].rsplit("-", 1)[1] for f in files} == {"w0", "w1"}, files
    numbers = []
    for path in files:
        for line in path.read_bytes().splitlines():
            numbers.append(int(json.loads(line)["params"]["n"]))  # a torn line fails here
    expected = list(range(40)) + [n for i in range(4) for n in range(1000 * (i + 1),
                                                                        1000 * (i + 1) + 300)]
    assert sorted(numbers) == expected


def _workers(daemon_factory: Callable[..., Any], config_path: Path, port: int, metrics: int,
             workers: int) -> Any:
    return daemon_factory([SCRATCHD, "--config", str(config_path), "--listen",
                           f"127.0.0.1:{port}", "--workers", str(workers), "--log-level",
                           "warning", "--metrics-addr", f"127.0.0.1:{metrics}"],
                          env={**os.environ})


@pytest.mark.parametrize("workers", [1, 2])
def test_watchdog_is_pinged(daemon_factory: Callable[..., Any], tmp_path: Path,
                            workers: int) -> None:
    """scratchd.service has WatchdogSec= (issue 13): one process pings from its event loop,
    the --workers supervisor from its own loop; either way systemd hears WATCHDOG=1."""
    config = {"tenants": [tenant("a", ["a.test"], ["file"])],
              "sinks": {"file": {"type": "file", "path": str(tmp_path / "events")}},
              "spool": {"dir": str(tmp_path / "spool")}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    daemon = daemon_factory([SCRATCHD, "--config", str(tmp_path / "c.json"), "--listen",
                             f"127.0.0.1:{free_port()}", "--workers", str(workers),
                             "--log-level", "warning"],
                            env={**os.environ, "WATCHDOG_USEC": "1000000"})
    wait_for(lambda: sum(m.get("WATCHDOG") == "1" for m in daemon.notifications) >= 3, 10,
             "three WATCHDOG=1 pings (every 0.5 s)")
    daemon.stop(within=30)


def test_dead_worker_is_restarted(daemon_factory: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "events"
    config = {"tenants": [tenant("a", ["a.test"], ["file"])],
              "sinks": {"file": {"type": "file", "path": str(out)}},
              "spool": {"dir": str(tmp_path / "spool")}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    port, metrics = free_port(), free_ports_in_a_row(2)
    daemon = _workers(daemon_factory, tmp_path / "c.json", port, metrics, 2)
    victim = Http(port, metrics + 1).vars()["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        try:
            return bool(Http(port, metrics + 1).vars()["pid"] != victim)
        except (OSError, AssertionError):
            return False

    wait_for(replaced, 30, "worker 1 started again")
    assert daemon.running
    _load(port, 0, 60, 1)
    daemon.stop(within=30)
    numbers = sorted(int(e["params"]["n"]) for e in read_file_sink(out))
    assert numbers == list(range(60))


# (workers before, workers after, what the first run leaves in the spool, what must go)
ORPHANS = [
    ("3_to_2", 3, 2, ["worker-0", "worker-1", "worker-2"], ["worker-2"]),
    # The root spool of a single-process run is drained by worker 0 of a --workers run.
    ("1_to_2", 1, 2, ["00000000000000000000.seg"], ["00000000000000000000.seg"]),
    # A single process drains every worker-<i> spool of a --workers run.
    ("2_to_1", 2, 1, ["worker-0", "worker-1"], ["worker-0", "worker-1"]),
]


@pytest.mark.parametrize(("name", "before", "after", "left", "gone"), ORPHANS,
                         ids=[case[0] for case in ORPHANS])
def test_spool_of_a_worker_no_longer_running_is_drained(
    daemon_factory: Callable[..., Any], redis_server: Any, tmp_path: Path, name: str,
    before: int, after: int, left: list[str], gone: list[str],
) -> None:
    """``before`` processes spool while their sink is down; restarted as ``after``, the
    spools nobody owns any more are delivered and removed."""
    import redis

    key = f"orphan:{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool"

    def write_config(url: str) -> Path:
        config = {"tenants": [tenant("a", ["a.test"], ["redis"])],
                  "sinks": {"redis": {"type": "redis", "url": url, "key": key,
                                      "mode": "rpush"}},
                  "spool": {"dir": str(spool)}, "shutdown_deliver_timeout": 0.5}
        path = tmp_path / "c.json"
        path.write_text(json.dumps(config))
        return path

    port, metrics = free_port(), free_ports_in_a_row(max(before, after))
    down = _workers(daemon_factory, write_config(f"redis://127.0.0.1:{free_port()}/0"), port,
                    metrics, before)
    _load(port, 0, 90, 1)
    down.stop(within=30)
    assert sorted(p.name for p in spool.iterdir()) == left
    for orphan in gone:  # each holds events of its own (the kernel spread the connections)
        path = spool / orphan
        assert sum(p.stat().st_size for p in ([path] if path.is_file() else path.glob("*.seg"))
                   ) > 0, orphan
    up = _workers(daemon_factory, write_config(redis_server.url), port, metrics, after)
    client = redis.Redis.from_url(redis_server.url)
    wait_for(lambda: client.llen(key) >= 90, 30, "all 90 events delivered")
    wait_for(lambda: not any((spool / orphan).exists() for orphan in gone), 10,
             f"{gone} removed")
    numbers = sorted(int(json.loads(e)["params"]["n"]) for e in client.lrange(key, 0, -1))
    assert sorted(set(numbers)) == list(range(90))
    assert up.running
    up.stop(within=30)
