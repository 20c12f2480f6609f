"""The shared runtime end to end, through the real `pazari-demo` console script: readiness,
metrics, GC numbers, logs, signals and config errors."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.ports import free_port, wait_for

DEMO = shutil.which("pazari-demo") or str(Path(__file__).parents[2] / ".venv/bin/pazari-demo")


def _get(url: str, method: str = "GET", timeout: float = 10) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.status, r.read(), r.headers.get("Content-Type", "")


def _start(daemon_factory: Callable[..., Any], *extra: str) -> tuple[Any, str, str]:
    http, metrics = free_port(), free_port()
    daemon = daemon_factory(
        [DEMO, "--listen", f"127.0.0.1:{http}", "--metrics-addr", f"127.0.0.1:{metrics}", *extra]
    )
    return daemon, f"http://127.0.0.1:{http}", f"http://127.0.0.1:{metrics}"


def test_ready_metrics_and_clean_stop(daemon_factory: Callable[..., Any]) -> None:
    daemon, app, metrics = _start(daemon_factory)
    assert daemon.notifications[0]["READY"] == "1"
    assert _get(app + "/")[1] == b"hello"
    _get(app + "/garbage?n=200000", method="POST")
    status, body, ctype = _get(metrics + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    text = body.decode()
    assert 'demo_requests_total{path="/"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert "python_gc_collections_total" in text
    doc = orjson.loads(_get(metrics + "/debug/vars")[1])
    assert doc["cmdline"][0].endswith("pazari-demo")
    assert doc["memstats"]["rss_bytes"] > 0
    assert doc["memstats"]["peak_rss_bytes"] >= doc["memstats"]["rss_bytes"] - (1 << 20)
    assert doc["memstats"]["allocated_blocks"] > 0
    assert sum(doc["gc"]["collections"]) > 0
    assert sum(doc["gc"]["collected"]) >= 150_000  # the youngest cycles may still wait
    assert doc["gc"]["pause_total_ms"] > 0
    assert doc["tasks"] >= 1 and doc["threads"] >= 1 and doc["open_fds"] > 0
    assert doc["uptime_seconds"] > 0
    assert doc["demo"]["garbage_made"] == 200000
    started = time.monotonic()
    assert daemon.stop(within=10) == 0
    assert time.monotonic() - started < 10
    assert any(n.get("STOPPING") == "1" for n in daemon.notifications)
    logs = daemon.logs()
    assert "level=info component=demo.runtime msg=ready" in logs
    assert 'msg="received SIGTERM, stopping gracefully"' in logs


def test_drain_waits_for_in_flight_requests(daemon_factory: Callable[..., Any]) -> None:
    daemon, app, _ = _start(daemon_factory)
    result: list[bytes] = []
    slow = threading.Thread(target=lambda: result.append(_get(app + "/slow?seconds=1")[1]))
    slow.start()
    wait_for(lambda: _in_flight(daemon) == 1, 10, "the slow request is in flight")
    assert daemon.stop(within=10) == 0
    slow.join(10)
    assert result == [b"slow done"]


def _in_flight(daemon: Any) -> int:
    # The demo logs nothing per request; ask its debug vars through the metrics listener.
    metrics = next(a for a in daemon.argv if a.startswith("127.0.0.1:") and a != daemon.argv[2])
    doc = orjson.loads(_get(f"http://{metrics}/debug/vars")[1])
    return int(doc["demo"]["in_flight"])


def test_drain_timeout_exits_non_zero(daemon_factory: Callable[..., Any]) -> None:
    daemon, app, _ = _start(daemon_factory, "--drain-timeout", "0.5")
    slow = threading.Thread(target=lambda: _swallow(lambda: _get(app + "/slow?seconds=20")))
    slow.start()
    wait_for(lambda: _in_flight(daemon) == 1, 10, "the slow request is in flight")
    assert daemon.stop(expect_code=1, within=10) == 1
    assert "drain did not finish within 0.5s" in daemon.logs()
    slow.join(30)


def test_slow_drain_logs_what_it_waits_for(daemon_factory: Callable[..., Any]) -> None:
    """A drain still running after SLOW_DRAIN_SECONDS logs every task with its stack, once:
    the in-flight handler the stop waits for is named (how a hung stop gets noticed)."""
    from pazari.runtime.service import SLOW_DRAIN_SECONDS

    hold = SLOW_DRAIN_SECONDS + 1.5
    daemon, app, _ = _start(daemon_factory, "--drain-timeout", "30")
    slow = threading.Thread(target=lambda: _swallow(lambda: _get(app + f"/slow?seconds={hold}")))
    slow.start()
    wait_for(lambda: _in_flight(daemon) == 1, 10, "the slow request is in flight")
    assert daemon.stop(within=hold + 10) == 0
    slow.join(30)
    logs = daemon.logs()
    assert logs.count("drain still running after") == 1, logs
    dump = logs.split("drain still running after", 1)[1]
    assert "tasks in pid" in dump and "slow" in dump, dump


def test_second_signal_exits_at_once(daemon_factory: Callable[..., Any]) -> None:
    daemon, app, _ = _start(daemon_factory, "--drain-timeout", "60")
    slow = threading.Thread(target=lambda: _swallow(lambda: _get(app + "/slow?seconds=30")))
    slow.start()
    wait_for(lambda: _in_flight(daemon) == 1, 10, "the slow request is in flight")
    daemon.send_signal(signal.SIGTERM)
    daemon.wait_notification("STOPPING", "1", timeout=10)
    started = time.monotonic()
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait_exit(timeout=5) == 1
    assert time.monotonic() - started < 5
    assert "received SIGINT again, exiting now" in daemon.logs()
    slow.join(40)


def _swallow(fn: Callable[[], object]) -> None:
    with contextlib.suppress(OSError):
        fn()


def test_json_logs(daemon_factory: Callable[..., Any]) -> None:
    daemon, _, _ = _start(daemon_factory, "--log-format", "json")
    daemon.stop(within=10)
    lines = [orjson.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    assert any(doc["msg"] == "ready" and doc["component"] == "demo.runtime" for doc in lines)
    assert all({"ts", "level", "component", "msg"} <= set(doc) for doc in lines)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"listen": 5}', "config error: {path}: $.listen: expected a string, got an integer"),
        (b'{"listn": "x"}', "config error: {path}: $.listn: unknown key"),
        (b'{"listen": "nowhere"}', "config error: {path}: $.listen: invalid address"),
        (b"{oops", "config error: {path}: $: invalid JSON"),
        (None, "config error: {path}: $: cannot read file"),
    ],
    ids=["wrong-type", "unknown-key", "validate", "bad-json", "missing-file"],
)
def test_config_errors_exit_2_on_one_line(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "demo.json"
    if content is not None:
        path.write_bytes(content)
    run = subprocess.run([DEMO, "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(expected.format(path=path))
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("--version", "pazari-demo version 0.1.0"), ("--help", "--metrics-addr")],
)
def test_cli_flags(flag: str, expected: str) -> None:
    run = subprocess.run([DEMO, flag], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    assert expected in run.stdout
