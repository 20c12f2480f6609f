"""Proof that the real-service fixtures in tests/support work against real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import textwrap
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from tests.support.daemon import Daemon, DaemonError, DaemonFactory, parse_notification
from tests.support.ports import (
    ProcessExited,
    WaitTimeout,
    async_wait_for,
    free_port,
    port_is_open,
    wait_for,
)
from tests.support.services import (
    DockerEngine,
    KafkaBroker,
    RedisFactory,
    RedisServer,
    consume_all,
    demux_docker_stream,
    produce_messages,
)

# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [(lambda: 42, 42), (lambda: "ready", "ready"), (lambda: [1], [1])],
)
def test_wait_for_returns_first_truthy_value(predicate: object, expected: object) -> None:
    assert wait_for(predicate, 1.0, "value") == expected  # type: ignore[arg-type]


def test_wait_for_timeout_reports_what_last_error_and_log() -> None:
    def probe() -> bool:
        raise ConnectionRefusedError("nobody home")

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_for(probe, 0.3, "the thing", log=lambda: "service said: port taken")
    assert time.monotonic() - started < 2.0
    text = str(info.value)
    assert "the thing" in text
    assert "nobody home" in text
    assert "service said: port taken" in text


def test_wait_for_fails_fast_when_process_is_gone() -> None:
    started = time.monotonic()
    with pytest.raises(ProcessExited, match="exited while waiting for ready"):
        wait_for(lambda: False, 30.0, "ready", alive=lambda: False)
    assert time.monotonic() - started < 2.0


async def test_async_wait_for_accepts_coroutine_predicates() -> None:
    calls = 0

    async def probe() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    assert await async_wait_for(probe, 2.0, "third call") == 3


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


# ------------------------------------------------------------------------------- redis


def test_redis_ping_set_get(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        assert client.set("fixture:key", "value") is True
        assert client.get("fixture:key") == b"value"
    finally:
        client.close()


def test_redis_server_is_flushed_per_test(redis_server: RedisServer) -> None:
    # test_redis_ping_set_get wrote fixture:key into the same shared server.
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


@pytest.mark.parametrize(("appendonly", "survives"), [(True, True), (False, False)])
def test_redis_restart_same_port(
    redis_factory: RedisFactory, appendonly: bool, survives: bool
) -> None:
    server = redis_factory(appendonly=appendonly)
    port, old_pid = server.port, server.pid
    client = redis.Redis(host=server.host, port=server.port)
    try:
        client.set("persist:me", "1")
        server.restart()
        assert server.port == port
        assert server.pid is not None and server.pid != old_pid
        assert client.ping() is True  # redis-py reconnects to the same address
        assert (client.get("persist:me") == b"1") is survives
    finally:
        client.close()


def test_redis_stop_then_start(redis_server: RedisServer) -> None:
    redis_server.stop()
    assert not redis_server.running
    assert not port_is_open(redis_server.host, redis_server.port)
    redis_server.start()
    assert redis_server.command("PING").startswith(b"+PONG")


# ------------------------------------------------------------------------------- kafka


@pytest.mark.parametrize("use_group", [True, False], ids=["consumer-group", "assign"])
def test_kafka_produce_then_consume_exactly(
    kafka_broker: KafkaBroker, kafka_topic: str, use_group: bool
) -> None:
    values = [f"msg-{i}" for i in range(50)]
    acks = produce_messages(kafka_broker.bootstrap, kafka_topic, values, key="k")
    assert len(acks) == len(values)

    group = f"g-{uuid.uuid4().hex[:8]}" if use_group else None
    # settle: keep reading a moment after the 50th so duplicates would be counted.
    records = consume_all(
        kafka_broker.bootstrap, kafka_topic, len(values), timeout=30.0, group=group, settle=1.0
    )
    assert sorted(r.value for r in records) == sorted(v.encode() for v in values)
    assert {r.key for r in records} == {b"k"}

    if group is not None:
        # The commit must be visible to a fresh member of the same group: committed
        # offsets (next offset to read) add up to the number of messages consumed.
        consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": group})
        try:
            partitions = {r.partition for r in records}
            committed = consumer.committed(
                [TopicPartition(kafka_topic, p) for p in partitions], timeout=10.0
            )
        finally:
            consumer.close()
        assert sum(tp.offset for tp in committed) == len(values)


def test_kafka_broker_stop_start_same_port(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    bootstrap = kafka_broker.bootstrap
    kafka_broker.stop()
    assert not kafka_broker.running
    assert not port_is_open(kafka_broker.host, kafka_broker.port)
    kafka_broker.start()
    assert kafka_broker.bootstrap == bootstrap
    produce_messages(bootstrap, kafka_topic, [b"after-restart"])
    records = consume_all(bootstrap, kafka_topic, 1, timeout=30.0)
    assert [r.value for r in records] == [b"after-restart"]


# ------------------------------------------------------------------------------ podman


@pytest.mark.parametrize("transport", ["stdlib", "aiohttp"])
async def test_docker_ping(docker_engine: DockerEngine, transport: str) -> None:
    assert docker_engine.url == f"unix://{docker_engine.socket}"
    if transport == "stdlib":
        status, body = docker_engine.client().request("GET", "/_ping")
    else:
        async with docker_engine.aiohttp_session() as session, session.get("/_ping") as resp:
            status, body = resp.status, await resp.read()
    assert (status, body.strip()) == (200, b"OK")


def test_docker_lists_base_image(docker_engine: DockerEngine) -> None:
    images = docker_engine.client().call("GET", "/images/json")
    tags = {tag for image in images for tag in image.get("RepoTags") or []}
    assert docker_engine.base_image in tags


@pytest.mark.parametrize(
    ("cmd", "exit_code", "stdout", "stderr"),
    [
        (["echo", "hi"], 0, b"hi\n", b""),
        (["sh", "-c", "echo oops >&2; exit 3"], 3, b"", b"oops\n"),
        (
            ["sh", "-c", "ls /bin/sh && cat /etc/passwd"],
            0,
            b"/bin/sh\nroot:x:0:0:root:/root:/bin/sh\n",
            b"",
        ),
    ],
    ids=["echo", "stderr-and-exit-code", "rootfs-layout"],
)
def test_docker_runs_busybox_container(
    docker_engine: DockerEngine, cmd: list[str], exit_code: int, stdout: bytes, stderr: bytes
) -> None:
    api = docker_engine.client()
    result = api.run_container(docker_engine.base_image, cmd, timeout=60.0)
    assert (result.exit_code, result.stdout, result.stderr) == (exit_code, stdout, stderr)
    status, _ = api.request("GET", f"/containers/{result.id}/json")
    assert status == 404, "run_container(remove=True) must delete the container"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", (b"", b"")),
        (b"\x01\0\0\0\0\0\0\x03hi\n", (b"hi\n", b"")),
        (b"\x02\0\0\0\0\0\0\x01e\x01\0\0\0\0\0\0\x01o", (b"o", b"e")),
    ],
)
def test_demux_docker_stream(raw: bytes, expected: tuple[bytes, bytes]) -> None:
    assert demux_docker_stream(raw) == expected


# ------------------------------------------------------------------------------ daemon

# A stand-in for a pazari daemon: sd_notify READY=1, log on both streams, exit on SIGTERM.
NOTIFY_DAEMON = textwrap.dedent(
    """
    import os, signal, socket, sys

    def notify(message):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(os.environ["NOTIFY_SOCKET"])
        sock.send(message.encode())
        sock.close()

    def on_term(signum, frame):
        print("stopping on SIGTERM", flush=True)
        sys.exit(int(os.environ.get("EXIT_CODE", "0")))

    signal.signal(signal.SIGTERM, on_term)
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("hello on stdout", flush=True)
    print("hello on stderr", file=sys.stderr, flush=True)
    notify("STATUS=starting")
    notify("READY=1\\nSTATUS=serving\\nMAINPID=%d" % os.getpid())
    while True:
        signal.pause()
    """
)

HTTP_DAEMON = textwrap.dedent(
    """
    import http.server, signal, sys, threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"ok")

    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("serving", flush=True)
    server.serve_forever()
    print("shut down cleanly", flush=True)
    """
)


def py(source: str, *args: str) -> list[str]:
    return [sys.executable, "-c", source, *args]


def test_parse_notification() -> None:
    assert parse_notification("READY=1\nSTATUS=a=b\njunk\n") == {"READY": "1", "STATUS": "a=b"}


def test_daemon_notify_ready_logs_and_clean_sigterm_exit() -> None:
    with Daemon(py(NOTIFY_DAEMON), timeout=30.0) as daemon:
        assert daemon.running
        ready = daemon.wait_notification("READY", "1")
        assert ready["MAINPID"] == str(daemon.pid)
        assert daemon.notifications[0] == {"STATUS": "starting"}
        assert "hello on stdout" in daemon.logs()
        assert "hello on stderr" in daemon.logs()
        assert daemon.stop(signal.SIGTERM, expect_code=0, within=10.0) == 0
        assert "stopping on SIGTERM" in daemon.logs()
        assert not daemon.running


def test_daemon_http_readiness() -> None:
    port = free_port()
    health = f"http://127.0.0.1:{port}/health"
    with Daemon(py(HTTP_DAEMON, str(port)), ready="http", health_url=health) as daemon:
        assert "serving" in daemon.logs()
        assert daemon.stop() == 0
        assert "shut down cleanly" in daemon.logs()


@pytest.mark.parametrize(
    ("source", "timeout", "message", "log_line"),
    [
        (
            "import sys; print('boom: bad config', file=sys.stderr); sys.exit(3)",
            30.0,
            "exited with 3 before READY=1",
            "boom: bad config",
        ),
        (
            "import time; print('never ready', flush=True); time.sleep(600)",
            1.0,
            "not ready (READY=1) within 1.0s",
            "never ready",
        ),
    ],
    ids=["exits-early", "never-ready"],
)
def test_daemon_start_failure_reports_logs(
    source: str, timeout: float, message: str, log_line: str
) -> None:
    daemon = Daemon(py(source), timeout=timeout)
    with pytest.raises(DaemonError) as info:
        daemon.start()
    assert message in str(info.value)
    assert log_line in str(info.value)
    assert not daemon.running, "a daemon that failed to start must not be left running"


@pytest.mark.parametrize(
    ("exit_code", "expect_code", "fails"),
    [(0, 0, False), (2, 2, False), (2, 0, True), (2, None, False)],
)
def test_daemon_stop_asserts_exit_code(
    daemon_factory: DaemonFactory, exit_code: int, expect_code: int | None, fails: bool
) -> None:
    daemon = daemon_factory(py(NOTIFY_DAEMON), env={**_env(), "EXIT_CODE": str(exit_code)})
    if fails:
        with pytest.raises(DaemonError, match=f"exited with {exit_code}, expected 0"):
            daemon.stop(expect_code=expect_code)
    else:
        assert daemon.stop(expect_code=expect_code) == exit_code


def test_daemon_stop_kills_a_daemon_that_ignores_sigterm(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(py(NOTIFY_DAEMON), env={**_env(), "IGNORE_TERM": "1"})
    with pytest.raises(DaemonError, match=re.escape("did not exit within 1.0s")):
        daemon.stop(within=1.0)
    assert not daemon.running


def test_daemon_kill9_and_wait_exit(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(py(NOTIFY_DAEMON))
    assert daemon.kill9() == -signal.SIGKILL
    assert daemon.wait_exit(1.0) == -signal.SIGKILL


def test_daemon_wait_exit_times_out_on_a_running_daemon(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(py(NOTIFY_DAEMON))
    with pytest.raises(DaemonError, match=re.escape("still running after 0.2s")):
        daemon.wait_exit(0.2)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(10.0) == 0


async def test_daemon_async_api() -> None:
    async with Daemon(py(NOTIFY_DAEMON)) as daemon:
        assert daemon.notifications[-1]["READY"] == "1"
        assert await daemon.astop() == 0


def _env() -> dict[str, str]:
    return dict(os.environ)
