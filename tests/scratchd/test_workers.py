"""``--workers N``: N processes on one port (SO_REUSEPORT), one READY=1, clean SIGTERM."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.scratchd.conftest import SCRATCHD, Http, read_file_sink, tenant
from tests.support.ports import free_port, wait_for


def test_two_workers_share_the_port(daemon_factory: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "events"
    config = {"tenants": [tenant("a", ["a.test"], ["file"])],
              "sinks": {"file": {"type": "file", "path": str(out)}},
              "spool": {"dir": str(tmp_path / "spool")}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    port = free_port()
    daemon = daemon_factory([SCRATCHD, "--config", str(tmp_path / "c.json"), "--listen",
                             f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
                            env={**os.environ})
    pids = set()
    for n in range(40):
        http = Http(port)  # a new connection each time: the kernel spreads them
        assert http.request("GET", f"/track?n={n}").status == 200
        pids.add(http.request("GET", "/debug/vars").json()["pid"])
        http.close()
    assert len(pids) == 2 and daemon.pid not in pids
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["worker-0", "worker-1"]
    daemon.stop(within=30)
    wait_for(lambda: len(read_file_sink(out)) == 40, 5, "40 events from both workers")
    assert sorted(int(e["params"]["n"]) for e in read_file_sink(out)) == list(range(40))
