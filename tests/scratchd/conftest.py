"""Helpers for the scratchd tests: write a config, spawn the real ``scratchd`` console script,
talk to it over HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

SCRATCHD = str(Path(sys.executable).with_name("scratchd"))


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """A keep-alive client of the public port; ``vars``/``metrics`` ask the metrics port."""

    def __init__(self, port: int, metrics_port: int | None = None) -> None:
        self.port = port
        self.metrics_port = metrics_port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, host: str = "a.test") -> Reply:
        hdrs = {"Host": host, "User-Agent": "Mozilla/5.0 test", **(headers or {})}
        try:
            self.conn.request(method, target, body=body, headers=hdrs)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            self.conn.request(method, target, body=body, headers=hdrs)
            resp = self.conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())

    def close(self) -> None:
        self.conn.close()

    def _metrics_get(self, path: str) -> bytes:
        assert self.metrics_port is not None, "started without --metrics-addr"
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=20)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200, resp.status
            return resp.read()
        finally:
            conn.close()

    def vars(self) -> Any:
        """/debug/vars from the --metrics-addr listener."""
        return json.loads(self._metrics_get("/debug/vars"))

    def metrics(self) -> str:
        return self._metrics_get("/metrics").decode()


def tenant(tid: str, hosts: list[str], sinks: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": tid, "hosts": hosts, "sinks": sinks, **extra}


@pytest.fixture
def scratchd(daemon_factory: Callable[..., Any], tmp_path: Path) -> Callable[..., Any]:
    """``scratchd(config_dict, port=None, start=True) -> (daemon, Http)``; the spool goes to
    tmp_path/spool unless the config names one."""

    def make(config: dict[str, Any], port: int | None = None, start: bool = True,
             name: str = "scratchd.json") -> tuple[Any, Http]:
        config.setdefault("spool", {}).setdefault("dir", str(tmp_path / "spool"))
        path = tmp_path / name
        path.write_text(json.dumps(config))
        port = port or free_port()
        metrics_port = free_port()
        daemon = daemon_factory(
            [SCRATCHD, "--config", str(path), "--listen", f"127.0.0.1:{port}",
             "--metrics-addr", f"127.0.0.1:{metrics_port}",
             "--log-level", "warning", "--drain-timeout", "40"],
            env={**os.environ}, start=start,
        )
        return daemon, Http(port, metrics_port)

    return make


def read_file_sink(directory: Path) -> list[dict[str, Any]]:
    """Every event in a file sink directory (.jsonl and rotated .jsonl.gz), in file order."""
    import gzip

    events: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl*")):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        events.extend(json.loads(line) for line in data.splitlines() if line)
    return events
