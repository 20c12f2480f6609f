"""``/debug/pprof/`` on the metrics listener, through real console scripts: a profile under
load names the daemon's hot function, one profile at a time, nothing sampling in between,
task and thread dumps, and the test-only loop block."""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.ports import free_port, wait_for

BIN = Path(__file__).parents[2] / ".venv/bin"
DEMO = shutil.which("pazari-demo") or str(BIN / "pazari-demo")
SCRATCHD = shutil.which("scratchd") or str(BIN / "scratchd")


def _get(url: str, method: str = "GET", timeout: float = 30) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def _status(metrics: str) -> dict[str, Any]:
    status, body, _ = _get(metrics + "/debug/pprof/")
    assert status == 200
    doc: dict[str, Any] = orjson.loads(body)
    return doc


class Load:
    """Keep-alive requests against one path from a thread, until stopped."""

    def __init__(
        self, port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._args = (port, method, path, headers, body)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        port, method, path, headers, body = self._args
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while not self._stop.is_set():
                conn.request(method, path, body=body, headers=headers)
                conn.getresponse().read()
                self.count += 1
        finally:
            conn.close()

    def __enter__(self) -> Load:
        self._thread.start()
        wait_for(lambda: self.count > 0, 10, "the load's first answer")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture
def demo(daemon_factory: Callable[..., Any]) -> Iterator[tuple[Any, int, str]]:
    http_port, metrics_port = free_port(), free_port()
    daemon = daemon_factory(
        [DEMO, "--listen", f"127.0.0.1:{http_port}", "--metrics-addr",
         f"127.0.0.1:{metrics_port}"],
        # A watchdog interval makes the runtime start its long-lived sd-watchdog task.
        env={**os.environ, "WATCHDOG_USEC": "30000000"},
    )  # fmt: skip
    yield daemon, http_port, f"http://127.0.0.1:{metrics_port}"


@pytest.mark.parametrize(
    ("fmt", "ctype", "marker"),
    [("text", "text/plain", b"_garbage"), ("speedscope", "application/json", b"_garbage"),
     ("html", "text/html", b"<html")],
)  # fmt: skip
def test_profile_under_load_names_the_hot_function(
    demo: tuple[Any, int, str], fmt: str, ctype: str, marker: bytes
) -> None:
    _, port, metrics = demo
    with Load(port, "POST", "/garbage?n=20000", {}):
        status, body, got_ctype = _get(f"{metrics}/debug/pprof/profile?seconds=1.5&format={fmt}")
    assert status == 200, body[:300]
    assert got_ctype.startswith(ctype)
    assert marker in body
    if fmt == "speedscope":
        doc = orjson.loads(body)
        names = {frame["name"] for frame in doc["shared"]["frames"]}
        assert "_garbage" in names
    if fmt == "text":
        # The hot handler carries most of the loop's time under this load.
        line = next(row for row in body.decode().splitlines() if "_garbage" in row)
        assert "demo/__main__.py" in line


def test_scratchd_profile_and_tasks(daemon_factory: Callable[..., Any], tmp_path: Path) -> None:
    config = tmp_path / "scratchd.json"
    config.write_bytes(orjson.dumps({
        "tenants": [{"id": "t", "hosts": ["*"], "sinks": ["file"], "allowed_origins": ["*"]}],
        "sinks": {"file": {"type": "file", "path": str(tmp_path / "events")}},
        "spool": {"dir": str(tmp_path / "spool")},
    }))  # fmt: skip
    port, metrics_port = free_port(), free_port()
    daemon_factory(
        [SCRATCHD, "--config", str(config), "--listen", f"127.0.0.1:{port}",
         "--metrics-addr", f"127.0.0.1:{metrics_port}"]
    )  # fmt: skip
    metrics = f"http://127.0.0.1:{metrics_port}"
    status, body, _ = _get(metrics + "/debug/pprof/tasks?format=json")
    names = {task["name"] for task in orjson.loads(body)["tasks"]}
    assert {"forward-file", "spool-flusher"} <= names, names
    # POST /track goes through aiohttp to scratchd's own handler (the GET pixel has a
    # compiled fast path pyinstrument cannot see into).
    headers = {"Host": "shop.test", "Content-Type": "application/json"}
    with Load(port, "POST", "/track", headers, b'{"url": "https://shop.test/"}') as load:
        status, body, _ = _get(f"{metrics}/debug/pprof/profile?seconds=1.5&format=text")
    assert load.count > 0
    assert status == 200
    text = body.decode()
    assert "scratchd/" in text, text[:2000]


def test_one_profile_at_a_time_and_no_sampling_between(demo: tuple[Any, int, str]) -> None:
    _, _, metrics = demo
    idle = _status(metrics)
    assert idle["profiling"] is False
    assert idle["profile_hook"] is False
    # Not even imported before the first profile: nothing can be sampling.
    assert idle["pyinstrument_loaded"] is False
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(_get, f"{metrics}/debug/pprof/profile?seconds=3&format=text")
        wait_for(lambda: _status(metrics)["profiling"], 10, "the first profile running")
        during = _status(metrics)
        assert during["profile_hook"] is True
        second = _get(f"{metrics}/debug/pprof/profile?seconds=1&format=text")
        assert second[0] == 409
        assert first.result(30)[0] == 200
    after = _status(metrics)
    assert (after["profiling"], after["profile_hook"]) == (False, False)
    assert after["pyinstrument_loaded"] is True
    # The slot is free again.
    assert _get(f"{metrics}/debug/pprof/profile?seconds=0.2&format=text")[0] == 200


@pytest.mark.parametrize(
    "query",
    ["seconds=0", "seconds=61", "seconds=-1", "seconds=nan", "seconds=inf", "seconds=abc",
     "seconds=1e309", "format=pdf", "format=", "seconds=1&format=../../etc/passwd"],
)  # fmt: skip
def test_reject_bad_profile_parameters(demo: tuple[Any, int, str], query: str) -> None:
    _, _, metrics = demo
    status, body, _ = _get(f"{metrics}/debug/pprof/profile?{query}")
    assert status == 400, body
    assert _status(metrics)["profiling"] is False


def test_task_dump_lists_long_lived_tasks_with_stacks(demo: tuple[Any, int, str]) -> None:
    _, port, metrics = demo
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_get, f"http://127.0.0.1:{port}/slow?seconds=2")
        wait_for(lambda: b"_slow" in _get(metrics + "/debug/pprof/tasks")[1], 10,
                 "the slow handler in the dump")  # fmt: skip
        status, body, _ = _get(metrics + "/debug/pprof/tasks?format=json")
        text = _get(metrics + "/debug/pprof/tasks")[1].decode()
        assert slow.result(10)[1] == b"slow done"
    assert status == 200
    tasks = {task["name"]: task for task in orjson.loads(body)["tasks"]}
    watchdog = tasks["sd-watchdog"]
    assert watchdog["coro"] == "watchdog_loop"
    assert watchdog["state"] == "pending"
    assert any("notify.py" in row and "watchdog_loop" in row for row in watchdog["stack"])
    assert any("_slow" in row for task in tasks.values() for row in task["stack"])
    # The dump's own task is the one running.
    assert [t for t in tasks.values() if t["state"] == "running"]
    assert 'task "sd-watchdog" [pending] watchdog_loop' in text


def test_thread_dump_lists_every_thread(demo: tuple[Any, int, str]) -> None:
    _, _, metrics = demo
    status, body, _ = _get(metrics + "/debug/pprof/threads?format=json")
    assert status == 200
    threads = orjson.loads(body)["threads"]
    main = next(t for t in threads if t["name"] == "MainThread")
    assert any("thread_dump" in row for row in main["stack"])
    assert all(t["native_id"] for t in threads)
    assert _get(metrics + "/debug/pprof/threads?format=xml")[0] == 400


def test_block_loop_exists_only_when_asked_for(demo: tuple[Any, int, str]) -> None:
    _, _, metrics = demo
    assert _get(metrics + "/debug/pprof/block-loop?seconds=1", method="POST")[0] in (404, 405)
    assert "block-loop" not in _status(metrics)["endpoints"]


def test_block_loop_blocks_the_loop(daemon_factory: Callable[..., Any]) -> None:
    http_port, metrics_port = free_port(), free_port()
    daemon_factory(
        [DEMO, "--listen", f"127.0.0.1:{http_port}", "--metrics-addr",
         f"127.0.0.1:{metrics_port}"],
        env={**os.environ, "PAZARI_DEBUG_BLOCK_LOOP": "1"},
    )  # fmt: skip
    metrics = f"http://127.0.0.1:{metrics_port}"
    assert "block-loop" in _status(metrics)["endpoints"]
    assert _get(metrics + "/debug/pprof/block-loop?seconds=abc", method="POST")[0] == 400
    status, _, _ = _get(metrics + "/debug/pprof/block-loop?seconds=2", method="POST")
    assert status == 202
    began = time.monotonic()
    # Requests during the block wait for the loop: one of them takes about the block's time
    # (a lower bound only; the loop blocks shortly after the answer).
    slowest = 0.0
    while time.monotonic() - began < 3:
        sent = time.monotonic()
        assert _get(f"http://127.0.0.1:{http_port}/")[1] == b"hello"
        slowest = max(slowest, time.monotonic() - sent)
    assert slowest >= 1.5


# -- every daemon: its own hot function in a profile, its own long-lived tasks in a dump ----


class RespLoad:
    """RPUSHX in pipelined rounds of 50 against rafka, from a thread, until stopped."""

    def __init__(self, port: int, topic: str) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._port, self._topic = port, topic
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import redis

        client = redis.Redis(port=self._port, socket_timeout=10)
        try:
            while not self._stop.is_set():
                pipe = client.pipeline(transaction=False)
                for i in range(50):
                    pipe.rpushx(f"topics:{self._topic}", f"v{i}")
                pipe.execute()
                self.count += 50
        finally:
            client.close()

    def __enter__(self) -> RespLoad:
        self._thread.start()
        wait_for(lambda: self.count > 0, 30, "the load's first replies")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


def _rafka(request: pytest.FixtureRequest, factory: Callable[..., Any], tmp: Path
           ) -> tuple[str, Any]:  # fmt: skip
    from tests.rafka.conftest import RAFKA_BIN, rafka_config

    broker = request.getfixturevalue("kafka_broker")
    config = tmp / "rafka.json"
    config.write_bytes(orjson.dumps(rafka_config(broker.bootstrap)))
    port, metrics_port = free_port(), free_port()
    factory([RAFKA_BIN, "--host", "127.0.0.1", "--port", str(port), "--config", str(config),
             "--metrics-addr", f"127.0.0.1:{metrics_port}"], timeout=60.0)  # fmt: skip
    return f"http://127.0.0.1:{metrics_port}", RespLoad(port, "pprof-" + tmp.name[-12:])


def _downloader_api(request: pytest.FixtureRequest, factory: Callable[..., Any], tmp: Path
                    ) -> tuple[str, Any]:  # fmt: skip
    from tests.downloader.conftest import DOWNLOADER_BIN, make_config, write_config

    config = write_config(tmp, make_config(tmp, request.getfixturevalue("redis_server")))
    port, metrics_port = free_port(), free_port()
    factory([DOWNLOADER_BIN, "api", "-c", str(config), "--host", "127.0.0.1", "-p", str(port),
             "--metrics-addr", f"127.0.0.1:{metrics_port}"])  # fmt: skip
    job = orjson.dumps({"url": "http://127.0.0.1:9/x.png", "aggr_id": "pprof",
                        "aggr_limit": 1000, "callback_url": "http://127.0.0.1:9/cb"})
    load = Load(port, "POST", "/download", {"Content-Type": "application/json"}, job)
    return f"http://127.0.0.1:{metrics_port}", load


def _mistryd(request: pytest.FixtureRequest, factory: Callable[..., Any], tmp: Path
             ) -> tuple[str, Any]:  # fmt: skip
    from pazari.mistry.buildinfo import BuildInfo
    from pazari.mistry.store import Layout, write_build_info
    from tests.mistry.conftest import MISTRYD

    # 100 finished jobs: the home page renders each of them per request (its own code, where
    # an empty /index/ would spend its time in aiohttp).
    layout = Layout(tmp / "builds")
    layout.bootstrap("hello", "")
    now = time.time_ns()
    for i in range(100):
        jid = f"{i:064x}"
        ready = layout.ready("hello", jid)
        (ready / "data").mkdir(parents=True)
        write_build_info(ready, BuildInfo(
            params={"i": str(i)}, exit_code=0, duration_ns=10**9, started_at_ns=now - i,
            path=str(layout.artifacts("hello", jid)), url=f"job/hello/{jid}"))  # fmt: skip
    (tmp / "projects").mkdir()
    config = tmp / "mistry.json"
    # No engine behind the socket: the pages answer without one.
    config.write_bytes(orjson.dumps({
        "projects_path": str(tmp / "projects"), "build_path": str(tmp / "builds"),
        "docker_host": f"unix://{tmp}/no-engine.sock"}))  # fmt: skip
    port, metrics_port = free_port(), free_port()
    factory([MISTRYD, "--config", str(config), "--addr", f"127.0.0.1:{port}",
             "--metrics-addr", f"127.0.0.1:{metrics_port}"], timeout=60.0)  # fmt: skip
    return f"http://127.0.0.1:{metrics_port}", Load(port, "GET", "/", {})


def _downloader_component(command: str) -> Callable[..., tuple[str, Any]]:
    def start(request: pytest.FixtureRequest, factory: Callable[..., Any], tmp: Path
              ) -> tuple[str, Any]:  # fmt: skip
        from tests.downloader.conftest import DOWNLOADER_BIN, make_config, write_config

        config = write_config(tmp, make_config(tmp, request.getfixturevalue("redis_server")))
        metrics_port = free_port()
        factory([DOWNLOADER_BIN, command, "-c", str(config),
                 "--metrics-addr", f"127.0.0.1:{metrics_port}"])  # fmt: skip
        return f"http://127.0.0.1:{metrics_port}", None

    return start


#: daemon -> (how to start it and load it; the function of its own, and its file, that a
#: profile under that load must name; the long-lived tasks a dump must list by name).
#: rafka and the downloader's api have no long-lived task of their own: they serve from
#: protocol callbacks, timers (rafka's producer poll) and short-lived batch tasks, so their
#: dump shows the runtime's sd-watchdog; the processor's and notifier's loads (downloads,
#: callbacks) are the end-to-end tests' business, their dumps are checked here.
DAEMONS: dict[str, tuple[Callable[..., tuple[str, Any]], tuple[str, str] | None, set[str]]] = {
    "rafka": (_rafka, ("Connection._rpushx_run", "pazari/rafka/connection.py"),
              {"sd-watchdog"}),
    "downloader-api": (_downloader_api, ("Api.submit", "pazari/downloader/api.py"),
                       {"sd-watchdog"}),
    "downloader-processor": (_downloader_component("processor"), None,
                             {"sd-watchdog", "processor-scan-loop", "processor-renew-loop",
                              "processor-renew-aggregations", "processor-reaper",
                              "processor-disk-checker", "processor-report-loop"}),
    "downloader-notifier": (_downloader_component("notifier"), None,
                            {"sd-watchdog", "notifier-dispatcher", "notifier-keeper",
                             "notifier-report-loop"}),
    "mistryd": (_mistryd, ("render_index", "pazari/mistry/web.py"),
                {"sd-watchdog", "mistry-hosted", "mistry-worker-0", "mistry-worker-1"}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(DAEMONS))
def test_each_daemon_profile_and_tasks(name: str, request: pytest.FixtureRequest,
                                       daemon_factory: Callable[..., Any],
                                       tmp_path: Path) -> None:  # fmt: skip
    """Issue 13: a profile under load names the daemon's own hot function, and a task dump
    lists its long-lived tasks by name, for every daemon (the demo and scratchd above)."""
    start, hot, long_lived = DAEMONS[name]

    def factory(argv: list[str], **kw: Any) -> Any:
        # A watchdog interval makes the runtime start its long-lived sd-watchdog task.
        return daemon_factory(argv, env={**os.environ, "WATCHDOG_USEC": "30000000"}, **kw)

    metrics, load = start(request, factory, tmp_path)
    status, body, _ = _get(metrics + "/debug/pprof/tasks?format=json")
    assert status == 200
    names = {task["name"] for task in orjson.loads(body)["tasks"]}
    assert long_lived <= names, names
    if hot is None:
        return
    function, source = hot
    with load:
        status, body, _ = _get(f"{metrics}/debug/pprof/profile?seconds=1&format=text")
    assert load.count > 0
    assert status == 200, body[:300]
    text = body.decode()
    assert any(function in row and source in row for row in text.splitlines()), text
