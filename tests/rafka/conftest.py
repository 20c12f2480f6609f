"""rafka fixtures: a real `rafka` console script against the session's tansu broker.

`rafka_server` is one daemon per test module (tests use unique topics and group ids, so
they do not interfere); `start_rafka` spawns private daemons for tests that stop, kill or
reconfigure the server. `Raw` speaks RESP over a plain socket so tests can assert exact
bytes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.daemon import Daemon, DaemonFactory
from tests.support.ports import free_port, wait_for
from tests.support.services import KafkaBroker

RAFKA_BIN = str(Path(sys.executable).parent / "rafka")

# The original's test config (spec §2.2), with tansu-friendly group timings.
CONSUMER: dict[str, Any] = {
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 200,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    "go.events.channel.enable": False,
    "go.application.rebalance.enable": False,
}
GENERAL: dict[str, Any] = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 500,
    "topic.metadata.refresh.interval.ms": 1000,
    "api.version.request": True,
    "log.connection.close": False,
}
PRODUCER: dict[str, Any] = {
    "go.delivery.reports": True,
    "queue.buffering.max.ms": 0,
    "message.send.max.retries": 2,
    "retry.backoff.ms": 100,
}


def rafka_config(bootstrap: str, rafka: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "general": {"bootstrap.servers": bootstrap, **GENERAL},
        "consumer": dict(CONSUMER),
        "producer": dict(PRODUCER),
    }
    if rafka:
        doc["rafka"] = rafka
    return doc


@dataclass
class Rafka:
    """A running (or restartable) rafka daemon and the ways to talk to it."""

    daemon: Daemon
    host: str
    port: int
    metrics_port: int
    config_path: Path
    tls: bool = False
    password: str | None = None
    _clients: list[Any] = field(default_factory=list)

    def redis(self, protocol: int = 2, **kw: Any) -> redis.Redis:
        """A redis-py client (protocol=3 is what a default `redis.Redis()` negotiates)."""
        options: dict[str, Any] = {"socket_timeout": 30, "protocol": protocol}
        if self.tls:
            options.update(ssl=True, ssl_cert_reqs=None)
        if self.password is not None:
            options["password"] = self.password
        options.update(kw)
        client = redis.Redis(host=self.host, port=self.port, **options)
        self._clients.append(client)
        return client

    def raw(self, timeout: float = 30.0) -> Raw:
        raw = Raw(self.host, self.port, timeout)
        self._clients.append(raw)
        return raw

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def debug_vars(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(self.url("/debug/vars"), timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as resp:
            text: str = resp.read().decode()
            return text

    def close_clients(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()

    def restart(self, daemon_factory: DaemonFactory) -> None:
        """Start a new process on the same port and config (after a stop or kill -9)."""
        self.daemon = spawn_rafka(daemon_factory, self.config_path, self.port, self.metrics_port)


class Raw:
    """A RESP connection over a plain socket: send bytes, read exact replies."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    @property
    def peer(self) -> str:
        """This connection's initial client id on the server: its remote address."""
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, *args: bytes | str | int) -> None:
        self.send(encode(*args))

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; buffered {self.buf!r}")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_reply(self) -> bytes:
        """Exactly the bytes of the next complete reply (nested types included)."""
        line = self._line()
        out = line + b"\r\n"
        kind, rest = line[:1], line[1:]
        if kind == b"$" and int(rest) >= 0:
            size = int(rest) + 2
            while len(self.buf) < size:
                self._fill()
            out += self.buf[:size]
            self.buf = self.buf[size:]
        elif kind in (b"*", b"%", b">", b"~") and int(rest) > 0:
            n = int(rest) * (2 if kind == b"%" else 1)
            for _ in range(n):
                out += self.read_reply()
        return out

    def call(self, *args: bytes | str | int) -> bytes:
        self.cmd(*args)
        return self.read_reply()

    def read_until_closed(self, timeout: float = 10.0) -> bytes:
        """Everything the server sends until it closes the connection."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()


def encode(*args: bytes | str | int) -> bytes:
    out = b"*%d\r\n" % len(args)
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return out


def spawn_rafka(
    daemon_factory: DaemonFactory, config_path: Path, port: int, metrics_port: int
) -> Daemon:
    argv = [
        RAFKA_BIN, "--host", "127.0.0.1", "--port", str(port), "--config", str(config_path),
        "--metrics-addr", f"127.0.0.1:{metrics_port}",
    ]  # fmt: skip
    return daemon_factory(argv, timeout=60.0)


def write_config(directory: Path, doc: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rafka-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(doc))
    return path


StartRafka = Callable[..., Rafka]


def _starter(
    daemon_factory: DaemonFactory, broker: KafkaBroker, directory: Path
) -> tuple[StartRafka, list[Rafka]]:
    started: list[Rafka] = []

    def start(
        rafka: dict[str, Any] | None = None,
        bootstrap: str | None = None,
        producer: dict[str, Any] | None = None,
    ) -> Rafka:
        doc = rafka_config(bootstrap or broker.bootstrap, rafka)
        doc["producer"].update(producer or {})
        path = write_config(directory, doc)
        port, metrics_port = free_port(), free_port()
        daemon = spawn_rafka(daemon_factory, path, port, metrics_port)
        server = Rafka(
            daemon, "127.0.0.1", port, metrics_port, path,
            tls=bool(rafka and rafka.get("tls_cert")),
            password=(rafka or {}).get("password"),
        )  # fmt: skip
        started.append(server)
        return server

    return start, started


@pytest.fixture
def start_rafka(
    daemon_factory: DaemonFactory, kafka_broker: KafkaBroker, tmp_path: Path
) -> Iterator[StartRafka]:
    """`start_rafka(rafka=None, bootstrap=None, producer=None) -> Rafka`: a private daemon
    (optionally with its own `rafka` section, bootstrap servers and producer overrides),
    stopped after the test."""
    start, started = _starter(daemon_factory, kafka_broker, tmp_path)
    yield start
    for server in started:
        server.close_clients()


@pytest.fixture(scope="module")
def _module_daemons(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonFactory]:
    # daemon_factory is function-scoped; a module-wide daemon needs its own owner.
    daemons: list[Daemon] = []
    base = tmp_path_factory.mktemp("rafka-module")

    def make(argv: list[str], timeout: float = 30.0, **kw: Any) -> Daemon:
        daemon = Daemon(argv, timeout=timeout, workdir=base / f"d{len(daemons)}", **kw)
        daemons.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in daemons:
        daemon.terminate_quietly()


@pytest.fixture(scope="module")
def rafka_server(
    _module_daemons: DaemonFactory,
    _kafka_session: KafkaBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rafka]:
    """One rafka daemon shared by a module's tests (unique topics and groups per test)."""
    _kafka_session.start()
    start, _ = _starter(_module_daemons, _kafka_session, tmp_path_factory.mktemp("cfg"))
    server = start()
    yield server
    server.close_clients()


@pytest.fixture
def rafka(
    rafka_server: Rafka, kafka_broker: KafkaBroker, request: pytest.FixtureRequest
) -> Iterator[Rafka]:
    """The module's daemon, checked to be alive; its clients are closed after the test."""
    assert rafka_server.daemon.running, rafka_server.daemon.logs()[-5000:]
    yield rafka_server
    rafka_server.close_clients()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n===== rafka log (tail) =====\n{rafka_server.daemon.logs()[-8000:]}")


@pytest.fixture
def group() -> str:
    """A consumer group id unique to the test."""
    return f"g-{uuid.uuid4().hex[:10]}"


def consume_values(
    client: redis.Redis,
    key: str,
    count: int,
    timeout: float = 60.0,
    ack: bool = True,
    blpop_timeout: float = 1,
) -> list[list[Any]]:
    """BLPOP (and ack) until `count` messages arrived; bounded by `timeout` seconds."""
    got: list[list[Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)}/{count} messages within {timeout}s"
        reply = client.execute_command("BLPOP", key, blpop_timeout)
        if reply is None:
            continue
        msg = list(reply)
        got.append(msg)
        if ack:
            assert client.execute_command("RPUSH", "acks", f"{_s(msg[1])}:{msg[3]}:{msg[5]}") == 1
    return got


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(predicate, timeout, what)


def require_tool(name: str, install: str) -> str:
    from tests.support.services import require_binary

    return require_binary(name, install) if shutil.which(name) is None else name


def tls_context_unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
