"""``--workers N``: N processes on one port (SO_REUSEPORT), one READY=1, clean SIGTERM, and
file sinks that never share a file between processes."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.scratchd.conftest import SCRATCHD, Http, tenant
from tests.support.ports import free_port


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
