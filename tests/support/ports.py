"""Small, dependency-free helpers shared by the service fixtures and the Daemon helper.

`free_port` hands out ports that are free *now* on 127.0.0.1 (there is an unavoidable
window before the service binds it; callers that start services retry on a bind
failure). `wait_for` is the one way tests wait for readiness: it polls a real condition
with short, growing waits and, on timeout, raises with the last probe error and the
service log so a CI failure is diagnosable from the report alone.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Linux sun_path is 108 bytes including the NUL; keep a margin for names appended later.
_MAX_SOCKET_DIR_LEN = 80

LogSource = Callable[[], str] | str | None


class WaitTimeout(TimeoutError):
    """A probed condition did not become true within its bound."""


class ProcessExited(RuntimeError):
    """The process being waited on exited before the condition became true."""


def free_port() -> int:
    """Return a TCP port that is currently free on 127.0.0.1 (kernel-chosen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def short_socket_dir(prefix: str = "pz-") -> Path:
    """Make a fresh private directory whose path is short enough for unix sockets.

    pytest's tmp paths embed test names and can exceed the 108-byte sun_path limit, so
    sockets live in a short mkdtemp dir (the caller removes it).
    """
    base = tempfile.gettempdir()
    if len(base) > _MAX_SOCKET_DIR_LEN - 20:
        base = "/tmp"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    # Owners remove it on teardown; this covers runs whose teardown never happened.
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _render_log(log: LogSource) -> str:
    if log is None:
        return ""
    try:
        text = log() if callable(log) else log
    except Exception as exc:  # the log is a diagnostic; never mask the real error
        text = f"<could not read log: {exc!r}>"
    # Keep reports readable: the tail is what explains a failed start.
    if len(text) > 20_000:
        text = "...<truncated>...\n" + text[-20_000:]
    return f"\n--- captured log ---\n{text}\n--- end of log ---" if text else ""


def _failure_message(what: str, timeout: float, last_exc: BaseException | None) -> str:
    msg = f"timed out after {timeout:.1f}s waiting for {what}"
    if last_exc is not None:
        msg += f" (last probe error: {last_exc!r})"
    return msg


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    log: LogSource = None,
    alive: Callable[[], bool] | None = None,
    max_interval: float = 0.1,
) -> T:
    """Poll `predicate` until it returns something truthy and return that value.

    Exceptions raised by the predicate count as "not yet" (a refused connection is the
    normal state of a starting service) and the last one is reported on timeout. If
    `alive` is given and returns False, fail at once with ProcessExited rather than
    waiting out the timeout for a process that is already gone.
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:
            last_exc = exc
        else:
            if result:
                return result
        if alive is not None and not alive():
            # One last probe: the condition may have been met just before the exit.
            try:
                result = predicate()
                if result:
                    return result
            except Exception as exc:
                last_exc = exc
            raise ProcessExited(
                f"process exited while waiting for {what}"
                + (f" (last probe error: {last_exc!r})" if last_exc else "")
                + _render_log(log)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(_failure_message(what, timeout, last_exc) + _render_log(log))
        time.sleep(min(interval, remaining))
        interval = min(interval * 2, max_interval)


async def async_wait_for(
    predicate: Callable[[], T] | Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    *,
    log: LogSource = None,
    alive: Callable[[], bool] | None = None,
    max_interval: float = 0.1,
) -> T:
    """Async twin of `wait_for`; `predicate` may be a plain or an async callable."""

    async def probe() -> T:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            return await value  # type: ignore[no-any-return]
        return value  # type: ignore[return-value]

    deadline = time.monotonic() + timeout
    interval = 0.01
    last_exc: BaseException | None = None
    while True:
        try:
            result = await probe()
        except Exception as exc:
            last_exc = exc
        else:
            if result:
                return result
        if alive is not None and not alive():
            raise ProcessExited(
                f"process exited while waiting for {what}"
                + (f" (last probe error: {last_exc!r})" if last_exc else "")
                + _render_log(log)
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(_failure_message(what, timeout, last_exc) + _render_log(log))
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, max_interval)


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ci_mode() -> bool:
    """True when running under CI (env CI=true), where missing tools must fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
