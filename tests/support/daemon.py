"""Spawn a pazari console script as a real subprocess and drive it like systemd would.

`Daemon` gives the child a NOTIFY_SOCKET (a unix datagram socket we own), captures its
output to files (so a chatty child can never block on a full pipe), and waits for
`READY=1` (sd_notify) or for a health URL to answer 200. Any failure to start reports the
child's captured log. `daemon_factory` guarantees teardown even when the test fails.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest

from tests.support.ports import (
    ProcessExited,
    WaitTimeout,
    async_wait_for,
    short_socket_dir,
    wait_for,
)
from tests.support.services import forget_process, spawn

ReadyMode = Literal["notify", "http", "none"]

#: The race checker's line prefix (pazari.runtime.race.PREFIX; not imported, so that the
#: helper works without the package installed).
RACE_PREFIX = "PAZARI-RACE kind="


def race_mode() -> bool:
    """``make test-race``: every daemon runs under the race checker, and any finding fails
    the test that started it (issue 19)."""
    return os.environ.get("PAZARI_RACE") == "1"


def race_findings(log: str) -> list[str]:
    """The race checker's findings in a daemon's log, each with its stack lines."""
    out: list[str] = []
    for line in log.splitlines():
        if line.startswith(RACE_PREFIX):
            out.append(line)
        elif line.startswith("PAZARI-RACE|") and out:
            out[-1] += "\n" + line
    return out


class DaemonError(AssertionError):
    """The daemon did not start, stop or exit as the test expected (message has its log)."""


def parse_notification(message: str) -> dict[str, str]:
    """sd_notify payload: newline-separated KEY=VALUE lines (lines without '=' ignored)."""
    fields: dict[str, str] = {}
    for line in message.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


class Daemon:
    """One daemon process under test.

    Use as `with Daemon([...]) as d:` / `async with Daemon([...]) as d:`, or call
    `start()` / `await astart()` and then `stop()`.

    argv: the full command line (e.g. `[sys.executable, "-m", "pazari.scratchd", ...]` or
        a console script path from `.venv/bin`).
    env: environment for the child; default is a copy of ours. NOTIFY_SOCKET is always
        set by the helper (removed for ready="none" only if it was not given).
    ready: "notify" waits for READY=1 on NOTIFY_SOCKET, "http" for `health_url` to answer
        200, "none" returns as soon as the process is spawned (for expected failures).
    timeout: bound for readiness.
    workdir: where stdout/stderr files go (default: a fresh temp dir removed at exit;
        `daemon_factory` uses a pytest tmp dir, which pytest keeps for inspection).
    merge_output: stderr goes into the stdout file so `logs()` is in true order; with
        False, `stdout_text()`/`stderr_text()` are separate and `logs()` concatenates.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        ready: ReadyMode = "notify",
        health_url: str | None = None,
        timeout: float = 30.0,
        *,
        workdir: Path | None = None,
        cwd: str | os.PathLike[str] | None = None,
        merge_output: bool = True,
        name: str | None = None,
        race_check: bool | None = None,
    ) -> None:
        if ready == "http" and not health_url:
            raise ValueError('ready="http" needs health_url')
        if ready not in ("notify", "http", "none"):
            raise ValueError(f"unknown ready mode {ready!r}")
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        # In race mode the child runs with -X dev and asyncio debug on, and its findings
        # fail the test; race_check=False is for tests that plant defects on purpose.
        self.race_check = race_mode() if race_check is None else race_check
        if race_mode():
            self.env.setdefault("PAZARI_RACE", "1")
            self.env.setdefault("PYTHONDEVMODE", "1")
            self.env.setdefault("PYTHONASYNCIODEBUG", "1")
        self.ready_mode: ReadyMode = ready
        self.health_url = health_url
        self.timeout = timeout
        self.cwd = cwd
        self.merge_output = merge_output
        self.name = name or Path(argv[0]).name
        if workdir is None:
            # Logs must outlive stop() so tests can assert on them; remove at exit.
            workdir = Path(tempfile.mkdtemp(prefix="pazari-daemon-"))
            atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.workdir / f"{self.name}.out"
        self.stderr_path = self.stdout_path if merge_output else self.workdir / f"{self.name}.err"
        self._sockdir = short_socket_dir("pz-notify-")
        self.notify_socket_path = str(self._sockdir / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.notify_socket_path)
        self._raw: list[str] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._reader: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ notifications

    def _read_notifications(self) -> None:
        # A background reader keeps the socket drained: a daemon sending WATCHDOG=1 with a
        # blocking sendto() must never stall because the test is not looking.
        while not self._closing.is_set():
            try:
                readable, _, _ = select.select([self._sock], [], [], 0.1)
                if not readable:
                    continue
                data = self._sock.recv(65536)
            except OSError:
                return
            with self._arrived:
                self._raw.append(data.decode(errors="replace"))
                self._arrived.notify_all()

    @property
    def raw_notifications(self) -> list[str]:
        """Every datagram received on NOTIFY_SOCKET, verbatim, in arrival order."""
        with self._lock:
            return list(self._raw)

    @property
    def notifications(self) -> list[dict[str, str]]:
        """Every received sd_notify message, parsed into KEY -> VALUE."""
        return [parse_notification(m) for m in self.raw_notifications]

    def _find(self, key: str, value: str | None) -> dict[str, str] | None:
        for fields in self.notifications:
            if key in fields and (value is None or fields[key] == value):
                return fields
        return None

    def wait_notification(
        self, key: str, value: str | None = None, timeout: float = 10.0
    ) -> dict[str, str]:
        """Block until a message with `key` (and `value`, if given) has arrived; return it."""
        try:
            return wait_for(
                lambda: self._find(key, value),
                timeout,
                f"{self.name} to send {key}={value if value is not None else '*'}",
                log=self._diagnostics,
                alive=lambda: self.running,
            )
        except (WaitTimeout, ProcessExited) as exc:
            raise DaemonError(str(exc)) from None

    # ------------------------------------------------------------------------ process

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DaemonError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stdout_text(self) -> str:
        return _read(self.stdout_path)

    def stderr_text(self) -> str:
        return _read(self.stderr_path)

    def logs(self) -> str:
        """The child's captured output (stdout and stderr)."""
        if self.merge_output:
            return self.stdout_text()
        return self.stderr_text() + self.stdout_text()

    def _diagnostics(self) -> str:
        code = self.returncode
        state = "running" if code is None else f"exited with {code}"
        return (
            f"[{self.name} pid={self._proc.pid if self._proc else '-'} {state}; "
            f"argv={self.argv!r}; notifications={self.raw_notifications!r}]\n{self.logs()}"
        )

    def race_findings(self) -> list[str]:
        return race_findings(self.logs())

    def check_race(self) -> None:
        """Raise DaemonError naming every race-checker finding in the log (race mode)."""
        if not self.race_check:
            return
        findings = self.race_findings()
        if findings:
            raise self._fail(f"{self.name}: the race checker reported {len(findings)} "
                             "finding(s):\n" + "\n".join(findings))

    def _fail(self, message: str) -> DaemonError:
        return DaemonError(f"{message}\n--- {self.name} log ---\n{self._diagnostics()}")

    def _spawn(self) -> None:
        if self._proc is not None:
            raise DaemonError(f"{self.name} already started")
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = self.notify_socket_path
        env.setdefault("PYTHONUNBUFFERED", "1")  # so logs() is current for Python children
        self._reader = threading.Thread(
            target=self._read_notifications, name=f"notify-{self.name}", daemon=True
        )
        self._reader.start()
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(self.stdout_path, "ab"))
            err = out if self.merge_output else files.enter_context(open(self.stderr_path, "ab"))
            self._proc = spawn(self.argv, log_file=err, stdout=out, env=env, cwd=self.cwd)

    def _is_ready(self) -> bool:
        if self.ready_mode == "notify":
            return self._find("READY", "1") is not None
        if self.ready_mode == "http":
            assert self.health_url is not None
            try:
                with urllib.request.urlopen(self.health_url, timeout=1.0) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        return True

    def _what(self) -> str:
        return "READY=1" if self.ready_mode == "notify" else f"200 from {self.health_url}"

    def _not_ready(self, exc: BaseException) -> BaseException:
        """Kill a child that failed to become ready and build the error to raise."""
        self._cleanup_process()
        if isinstance(exc, ProcessExited | WaitTimeout):
            if isinstance(exc, ProcessExited):
                why = f"exited with {self.returncode} before {self._what()}"
            else:
                why = f"not ready ({self._what()}) within {self.timeout}s"
            exc = self._fail(f"{self.name} {why}")
        # else: KeyboardInterrupt or a bug; release everything and re-raise it as is.
        self.close()
        return exc

    def start(self) -> Daemon:
        """Spawn and block until ready; on failure kill the child and raise DaemonError."""
        self._spawn()
        what = f"{self.name} {self._what()}"
        try:
            wait_for(self._is_ready, self.timeout, what, alive=lambda: self.running)
        except BaseException as exc:
            raise self._not_ready(exc) from None
        return self

    async def astart(self) -> Daemon:
        """Async `start()`: the event loop keeps running while we wait for readiness."""
        self._spawn()  # in the caller's (main) thread so the parent-death signal holds
        what = f"{self.name} {self._what()}"
        try:
            await async_wait_for(
                self._is_ready_async, self.timeout, what, alive=lambda: self.running
            )
        except BaseException as exc:
            raise self._not_ready(exc) from None
        return self

    async def _is_ready_async(self) -> bool:
        if self.ready_mode == "http":
            # urllib blocks; keep the loop (which may host the code under test) responsive.
            return await asyncio.to_thread(self._is_ready)
        return self._is_ready()

    def send_signal(self, sig: int) -> None:
        if not self.running:
            raise self._fail(f"cannot send signal {sig} to {self.name}: not running")
        assert self._proc is not None
        self._proc.send_signal(sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit on its own; raise DaemonError after `timeout`."""
        if self._proc is None:
            raise DaemonError(f"{self.name} was never started")
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._fail(f"{self.name} still running after {timeout}s") from None
        forget_process(self._proc)
        return code

    async def await_exit(self, timeout: float = 10.0) -> int:
        """Async `wait_exit`."""
        try:
            await async_wait_for(lambda: not self.running, timeout, f"{self.name} to exit")
        except WaitTimeout:
            raise self._fail(f"{self.name} still running after {timeout}s") from None
        return self.wait_exit(0.1)

    def stop(
        self, sig: int = signal.SIGTERM, expect_code: int | None = 0, within: float = 10.0
    ) -> int:
        """Send `sig` and assert the exit code is `expect_code` within `within` seconds.

        If it does not exit in time it is SIGKILLed and DaemonError is raised. With
        `expect_code=None` any code is accepted. Returns the exit code.
        """
        if self._proc is None:
            raise DaemonError(f"{self.name} was never started")
        if self.running:
            self._proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=within)
        return self._finish_stop(sig, expect_code, within)

    async def astop(
        self, sig: int = signal.SIGTERM, expect_code: int | None = 0, within: float = 10.0
    ) -> int:
        """Async `stop()`: the event loop keeps running while the daemon shuts down."""
        if self._proc is None:
            raise DaemonError(f"{self.name} was never started")
        if self.running:
            self._proc.send_signal(sig)
        with contextlib.suppress(WaitTimeout):
            await async_wait_for(lambda: not self.running, within, f"{self.name} to exit")
        return self._finish_stop(sig, expect_code, within)

    def _finish_stop(self, sig: int, expect_code: int | None, within: float) -> int:
        try:
            if self.running:
                self._cleanup_process()
                raise self._fail(
                    f"{self.name} did not exit within {within}s of signal {sig}; SIGKILLed"
                )
            code = self.returncode
            assert code is not None
            if expect_code is not None and code != expect_code:
                raise self._fail(f"{self.name} exited with {code}, expected {expect_code}")
            self.check_race()
            return code
        finally:
            self.close()

    def kill9(self) -> int:
        """SIGKILL (a crash, as far as the daemon can tell) and reap; returns the code."""
        if self._proc is None:
            raise DaemonError(f"{self.name} was never started")
        if self.running:
            self._proc.kill()
        code = self._proc.wait(timeout=10.0)
        forget_process(self._proc)
        return code

    def _cleanup_process(self) -> None:
        if self._proc is not None and self.running:
            self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10.0)
        if self._proc is not None and self._proc.poll() is not None:
            forget_process(self._proc)

    def close(self) -> None:
        """Release the notify socket (keeps log files). The process must be gone already
        for a clean stop; anything still running is killed."""
        self._cleanup_process()
        self._closing.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
        with contextlib.suppress(OSError):
            self._sock.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def terminate_quietly(self, within: float = 10.0) -> None:
        """Teardown path: SIGTERM, wait, SIGKILL; never raises."""
        with contextlib.suppress(Exception):
            if self.running:
                assert self._proc is not None
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=within)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10.0)
        self.close()

    def __enter__(self) -> Daemon:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate_quietly()

    async def __aenter__(self) -> Daemon:
        if self._proc is None:
            await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate_quietly()

    def __repr__(self) -> str:
        return f"<Daemon {self.name} pid={self._proc.pid if self._proc else None}>"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def daemon_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonFactory]:
    """`daemon_factory(argv, env=None, ready="notify", health_url=None, timeout=30.0,
    start=True, **kw) -> Daemon`: started (unless start=False) and stopped at teardown.

    If the test failed, each daemon's log is printed in the teardown section of the report.
    """
    daemons: list[Daemon] = []
    base = tmp_path_factory.mktemp("daemons")

    def make(
        argv: list[str],
        env: dict[str, str] | None = None,
        ready: ReadyMode = "notify",
        health_url: str | None = None,
        timeout: float = 30.0,
        *,
        start: bool = True,
        **kwargs: object,
    ) -> Daemon:
        workdir = base / f"d{len(daemons)}"
        daemon = Daemon(argv, env, ready, health_url, timeout, workdir=workdir, **kwargs)  # type: ignore[arg-type]
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make

    report = getattr(request.node, "rep_call", None)
    failed = report is not None and report.failed
    raced: list[str] = []
    for daemon in daemons:
        daemon.terminate_quietly()
        if failed:
            print(f"\n===== {daemon!r} log =====\n{daemon._diagnostics()}")
        if daemon.race_check:
            raced.extend(f"{daemon!r}: {f}" for f in daemon.race_findings())
    if raced and not failed:
        pytest.fail("the race checker reported:\n" + "\n".join(raced), pytrace=False)
