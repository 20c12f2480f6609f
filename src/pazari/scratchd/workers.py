"""``--workers N``: N scratchd processes on one port with SO_REUSEPORT (spec "Scale").

The supervisor starts each worker with ``--worker-index i`` (its own spool under
``<spool>/worker-<i>``, its own file-sink files ``…-w<i>.jsonl``), gathers their READY=1 on a
private notify socket before it reports READY=1 itself, forwards SIGTERM/SIGINT and exits with
the worst worker exit code.

Issue 12: a worker that dies is started again (after a backoff that grows while it keeps
dying young), and the spools of workers that no longer run (``worker-<j>`` for j ≥ N after N
was reduced, or the root spool of a single-process run) are handed to worker j % N, which
delivers them and removes them (``service.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pazari.runtime.logs import get_logger
from pazari.runtime.notify import sd_notify, watchdog_interval

log = get_logger("scratchd.workers")
READY_TIMEOUT = 60.0


RESTART_MIN = 0.1
RESTART_MAX = 5.0
STABLE = 10.0  # a worker that lived this long restarts at once the next time


def orphan_spools(spool_dir: str, workers: int, include_root: bool) -> list[str]:
    """Spool directories no worker 0..workers-1 owns: ``worker-<j>`` with j ≥ ``workers``,
    and the root itself (segments of a single-process run) when ``include_root``."""
    root = Path(spool_dir)
    found: list[tuple[int, str]] = []
    for path in root.glob("worker-*"):
        index = path.name.removeprefix("worker-")
        if index.isdigit() and int(index) >= workers and path.is_dir():
            found.append((int(index), str(path)))
    if include_root and any(root.glob("*.seg")):
        found.append((0, str(root)))
    return [p for _, p in sorted(found)]


def _owner(path: str, workers: int) -> int:
    index = Path(path).name.removeprefix("worker-")
    return int(index) % workers if index.isdigit() else 0


def supervise(argv: list[str], workers: int, port: int, spool_dir: str) -> int:
    if port == 0:
        print("--workers needs an explicit port (SO_REUSEPORT)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="scratchd-") as tmp:
        path = str(Path(tmp) / "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        notify.bind(path)
        env = {**os.environ, "NOTIFY_SOCKET": path}
        env.pop("WATCHDOG_USEC", None)
        orphans = orphan_spools(spool_dir, workers, include_root=True)

        def spawn(i: int) -> subprocess.Popen[bytes]:
            drains = [arg for p in orphans if _owner(p, workers) == i
                      for arg in ("--drain-spool", p)]
            return subprocess.Popen(
                [sys.executable, "-m", "pazari.scratchd", *argv, "--worker-index", str(i),
                 *drains], env=env)

        procs = [spawn(i) for i in range(workers)]
        started = [time.monotonic()] * workers
        backoff = [RESTART_MIN] * workers
        stop = False

        def forward(signum: int, _frame: object) -> None:
            nonlocal stop
            stop = True
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        ready: set[str] = set()
        notify.settimeout(0.2)
        deadline = time.monotonic() + READY_TIMEOUT
        while len(ready) < workers and not stop and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            try:
                message = notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in message.splitlines() if "=" in line)
            if fields.get("READY") == "1":
                ready.add(fields.get("MAINPID", str(len(ready))))
        if len(ready) == workers:
            sd_notify(f"READY=1\nSTATUS=scratchd serving with {workers} workers\n"
                      f"MAINPID={os.getpid()}")
            log.info("ready", extra={"workers": workers, "pid": os.getpid()})
        else:
            log.error("only %d of %d workers became ready", len(ready), workers)
            forward(signal.SIGTERM, None)
        # WatchdogSec= (scratchd.service): the workers' loops are not systemd's main process;
        # the supervisor pings for its own loop, which restarts a worker that dies.
        ping_every = watchdog_interval()
        pinged = 0.0
        while len(ready) == workers and not stop:
            if ping_every is not None and time.monotonic() - pinged >= ping_every:
                sd_notify("WATCHDOG=1")
                pinged = time.monotonic()
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is None or stop:
                    continue
                lived = time.monotonic() - started[i]
                backoff[i] = RESTART_MIN if lived > STABLE else min(backoff[i] * 2, RESTART_MAX)
                log.error("worker %d (pid %d) exited with %d after %.1f s: restarting in "
                          "%.1f s", i, proc.pid, code, lived, backoff[i])
                time.sleep(backoff[i])
                if not stop:
                    procs[i] = spawn(i)
                    started[i] = time.monotonic()
                    if stop:  # the signal came while it was starting
                        procs[i].send_signal(signal.SIGTERM)
        codes = [p.wait() for p in procs]
        if stop:
            sd_notify("STOPPING=1")
        notify.close()
        return max(max(codes), 0 if len(ready) == workers else 1)
