"""``--workers N``: N scratchd processes on one port with SO_REUSEPORT (spec "Scale").

The supervisor starts each worker with ``--worker-index i`` (its own spool under
``<spool>/worker-<i>``, its own file-sink files ``…-w<i>.jsonl``), gathers their READY=1 on a
private notify socket before it reports READY=1 itself, forwards SIGTERM/SIGINT and exits with
the worst worker exit code.
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
from pazari.runtime.notify import sd_notify

log = get_logger("scratchd.workers")
READY_TIMEOUT = 60.0


def supervise(argv: list[str], workers: int, port: int) -> int:
    if port == 0:
        print("--workers needs an explicit port (SO_REUSEPORT)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="scratchd-") as tmp:
        path = str(Path(tmp) / "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        notify.bind(path)
        env = {**os.environ, "NOTIFY_SOCKET": path}
        env.pop("WATCHDOG_USEC", None)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pazari.scratchd", *argv, "--worker-index", str(i)],
                env=env,
            )
            for i in range(workers)
        ]
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
        codes = [p.wait() for p in procs]
        if stop:
            sd_notify("STOPPING=1")
        notify.close()
        return max(max(codes), 0 if len(ready) == workers else 1)
