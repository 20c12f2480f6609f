"""The race checker: asyncio's and Python's misuse detectors turned into test failures.

Go has ``-race`` for its load tests; asyncio has debug mode, ``-X dev`` and a handful of
warnings that nobody reads. With ``PAZARI_RACE=1`` (``make test-race`` sets it, with
``PYTHONDEVMODE=1`` and ``PYTHONASYNCIODEBUG=1``) the runtime installs this checker in
every daemon, and each misuse is written to stderr as one line the test helper scans::

    PAZARI-RACE kind=<kind> <detail>
    PAZARI-RACE|   <stack line>            (zero or more)

The kinds (issue 19):

- ``unretrieved-exception``: a task or future ended with an exception nobody retrieved
  (the loop's exception handler; asyncio reports it when the task is collected);
- ``never-awaited``: a coroutine object collected without being awaited (RuntimeWarning);
- ``slow-callback``: one callback or task step held the loop longer than 100 ms
  (``loop.slow_callback_duration``) while the daemon serves (from READY=1 to the end of the
  drain), with the loop thread's stack, unless :data:`SLOW_CALLBACK_ALLOWLIST` says why.
  Start-up before READY=1 (imports, CA bundles, ``gc.freeze``) holds no request up. The
  time the loop thread spent waiting for a CPU (other processes' load) is not its own;
- ``cross-thread``: ``call_soon``/``call_later``/``call_at`` called from a thread that does
  not run the loop (only ``call_soon_threadsafe`` and ``run_coroutine_threadsafe`` may be;
  ``create_task`` and ``Future.set_result`` from a thread go through ``call_soon``);
- ``resource-warning``: an unclosed socket, file or transport (ResourceWarning);
- ``pending-task``: a task still pending after the drain that nobody cancelled;
- ``unnamed-thread`` / ``unjoined-thread``: a thread with Python's default ``Thread-N``
  name, or one still alive when the daemon exits (nobody owns and joins it);
- ``thread-exception``: an exception that ended a thread.

Nothing here runs unless the variable is set: production pays nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import gc
import io
import logging
import os
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVarTuple

import uvloop

PREFIX = "PAZARI-RACE"
ENV = "PAZARI_RACE"
SLOW_CALLBACK_SECONDS = 0.1

#: Slow callbacks that are accepted, each with the reason: a substring of asyncio's
#: "Executing <handle> took N seconds" line -> why it may block the loop. Empty: every entry
#: must be argued for in review, with the measurement that shows it cannot be avoided.
SLOW_CALLBACK_ALLOWLIST: Mapping[str, str] = {}

#: The shortest reason an allowlist entry may give, in words ("needed" is not a reason).
MIN_REASON_WORDS = 5


def check_allowlist(allowlist: Mapping[str, str]) -> None:
    """Refuse an allowlist entry without a reason (issue 19: "an allowlist that must say why
    for each entry") or with a needle so short it would match any callback."""
    for needle, why in allowlist.items():
        if len(needle.strip()) < 8:
            raise ValueError(f"slow-callback allowlist: needle {needle!r} is too short to "
                             "name one callback")
        if len(why.split()) < MIN_REASON_WORDS:
            raise ValueError(f"slow-callback allowlist: {needle!r} needs a reason of at least "
                             f"{MIN_REASON_WORDS} words, got {why!r}")

#: How long exiting threads get to finish before they count as unjoined.
THREAD_GRACE_SECONDS = 1.0

_Ts = TypeVarTuple("_Ts")
_DEFAULT_THREAD_NAME = re.compile(r"Thread-\d+( \(.*\))?")


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def report(kind: str, detail: str, stack: Iterable[str] = ()) -> None:
    """Write one finding to fd 2 directly: no logging config or buffering can lose it."""
    lines = [f"{PREFIX} kind={kind} {' '.join(detail.split())}"]
    for frame in stack:
        lines.extend(f"{PREFIX}|   {line}" for line in frame.rstrip("\n").splitlines())
    with contextlib.suppress(OSError):
        os.write(2, ("\n".join(lines) + "\n").encode(errors="replace"))


def _task_stack(task: asyncio.Task[Any]) -> list[str]:
    out = io.StringIO()
    task.print_stack(file=out)
    return [out.getvalue()]


class RaceLoop(uvloop.Loop):
    """uvloop's loop, with the thread check on the scheduling calls that are not
    thread-safe. uvloop's own debug check raises in the offending thread, where a worker
    may swallow it; this one reports first, then lets uvloop raise.

    A handle's "created at" is the caller's top Python frame, which is now this wrapper;
    the slow-callback report drops that part (the callback's name is what identifies it)."""

    def __init__(self) -> None:
        super().__init__()
        self._race_owner = threading.get_ident()

    def _race_check(self, what: str) -> None:
        if threading.get_ident() != self._race_owner:
            report("cross-thread", f"loop.{what} called from thread "
                   f"{threading.current_thread().name!r}", traceback.format_stack()[:-2])

    def call_soon(self, callback: Callable[[*_Ts], object], *args: *_Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        self._race_check("call_soon")
        return super().call_soon(callback, *args, context=context)

    def call_later(self, delay: float, callback: Callable[[*_Ts], object],
                   *args: *_Ts, context: contextvars.Context | None = None
                   ) -> asyncio.TimerHandle:
        self._race_check("call_later")
        return super().call_later(delay, callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[[*_Ts], object],
                *args: *_Ts, context: contextvars.Context | None = None
                ) -> asyncio.TimerHandle:
        self._race_check("call_at")
        return super().call_at(when, callback, *args, context=context)


def loop_factory() -> Callable[[], uvloop.Loop]:
    """The loop the runtime should create: RaceLoop when the checker is on."""
    return RaceLoop if enabled() else uvloop.new_event_loop


def _run_queue_wait(native_id: int) -> float | None:
    """Seconds a thread of this process has spent runnable but waiting for a CPU: the second
    field of /proc/<pid>/task/<tid>/schedstat, in ns (Documentation/scheduler/sched-stats);
    None where the kernel does not keep it."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class _StallMonitor:
    """Takes the loop thread's stack while a callback is holding the loop, so the
    slow-callback report says where it blocked (asyncio only names the handle or task).

    The loop stamps a heartbeat every 20 ms; a thread (``race-stall-monitor``) that sees no
    stamp for SLOW_CALLBACK_SECONDS takes the loop thread's stack once per stall.

    It also samples, every tick, how long the loop thread has waited for a CPU: asyncio
    measures a callback in wall-clock time, and on a loaded machine (make test-race beside
    other jobs on 2 cores) a 20 ms step of a thread that gets a sixth of a CPU "takes"
    150 ms without blocking anything of its own (:meth:`waited_during`)."""

    TICK = 0.02

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._loop_native = threading.get_native_id()
        self._samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=1000)
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self.stack: list[str] = []
        self._thread = threading.Thread(target=self._watch, name="race-stall-monitor",
                                        daemon=True)

    def start(self) -> None:
        self._loop.call_soon(self._tick)
        self._thread.start()

    def _tick(self) -> None:
        self._beat = time.monotonic()
        # A sample from the loop itself too, between two callbacks: the monitor thread may
        # be starved as well, and then its samples are far apart.
        waited = _run_queue_wait(self._loop_native)
        if waited is not None:
            self._samples.append((time.monotonic(), waited))
        if not self._stop.is_set():
            self._loop.call_later(self.TICK, self._tick)

    def _watch(self) -> None:
        taken_for = 0.0
        while not self._stop.wait(self.TICK):
            waited = _run_queue_wait(self._loop_native)
            if waited is not None:
                self._samples.append((time.monotonic(), waited))
            beat = self._beat
            if beat != taken_for and time.monotonic() - beat > SLOW_CALLBACK_SECONDS:
                frame = sys._current_frames().get(self._loop_thread)
                self.stack = traceback.format_stack(frame) if frame is not None else []
                taken_for = beat

    def waited_during(self, took: float) -> float:
        """How much of the callback that just ended, after ``took`` seconds, the loop thread
        spent waiting for a CPU (called on the loop thread right after it). The wait is
        known from the last sample before the callback began; whatever of it may fall
        between that sample and the start is not counted, so a real block is never hidden
        by this correction."""
        now_waited = _run_queue_wait(self._loop_native)
        start = time.monotonic() - took
        before = [sample for sample in list(self._samples) if sample[0] <= start]
        if now_waited is None or not before:
            return 0.0
        at, waited = before[-1]
        return max(0.0, now_waited - waited - (start - at))

    def take(self) -> list[str]:
        stack, self.stack = self.stack, []
        return stack

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


_monitor: _StallMonitor | None = None
_serving = False


def serving(on: bool) -> None:
    """The runtime marks the span in which a blocked loop holds requests up."""
    global _serving
    _serving = on


class _AsyncioLog(logging.Filter):
    """asyncio's debug mode reports slow callbacks as warnings on the ``asyncio`` logger. The
    checker takes them over (a finding, or an excused line): asyncio's own warning is
    dropped, so a daemon's log in race mode says it once, and tests that require a quiet
    log are not failed by a stall the checker excused."""

    _SLOW = re.compile(r"Executing (?P<what>.*) took (?P<took>[0-9.]+) seconds", re.S)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        match = self._SLOW.match(msg)
        if match is None:
            return True
        self._check(msg, match)
        return False

    def _check(self, msg: str, match: re.Match[str]) -> None:
        took = float(match["took"])
        waited = _monitor.waited_during(took) if _monitor is not None else 0.0
        stack = _monitor.take() if _monitor is not None else []
        if not _serving:
            return
        # The loop's own time: a callback held up only by other processes taking the CPUs
        # blocks nothing (the bound itself stays 100 ms of the loop's own time).
        what = re.sub(rf" created at {re.escape(__file__)}:\d+", "", match["what"])
        if took - waited <= SLOW_CALLBACK_SECONDS:
            # Not a finding, but not silent either: the log shows what was excused and why.
            with contextlib.suppress(OSError):
                os.write(2, (f"{PREFIX}-EXCUSED slow-callback {match['took']}s, of which "
                             f"{waited:.3f}s waiting for a CPU: {' '.join(what.split())}\n")
                         .encode(errors="replace"))
            return
        for needle, _why in SLOW_CALLBACK_ALLOWLIST.items():
            if needle in msg:
                return
        report("slow-callback", f"{match['took']}s > {SLOW_CALLBACK_SECONDS}s: {what} "
               f"(of which {waited:.3f}s waiting for a CPU)", stack)


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    message = str(context.get("message", ""))
    if "never retrieved" in message:
        exc = context.get("exception")
        what = context.get("task") or context.get("future")
        stack = traceback.format_exception(exc) if isinstance(exc, BaseException) else []
        report("unretrieved-exception", f"{message}: {what!r}", stack)
    loop.default_exception_handler(context)


_original_showwarning = warnings.showwarning


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    text = str(message)
    if issubclass(category, ResourceWarning):
        report("resource-warning", f"{text} ({filename}:{lineno})")
    elif issubclass(category, RuntimeWarning) and "was never awaited" in text:
        report("never-awaited", f"{text} ({filename}:{lineno})")
    _original_showwarning(message, category, filename, lineno, file, line)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "?"
    stack = traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
    report("thread-exception", f"thread {name!r}: {args.exc_type.__name__}: {args.exc_value}",
           stack)
    threading.__excepthook__(args)


_original_start = threading.Thread.start


def _checked_start(self: threading.Thread) -> None:
    # At start, not at exit: a short-lived unnamed thread is gone by then. asyncio's own
    # (the Runner's default-executor shutdown) is the standard library's, not ours.
    target = getattr(self, "_target", None)
    stdlib = (getattr(target, "__module__", None) or "uvloop").startswith(("asyncio", "uvloop"))
    if _DEFAULT_THREAD_NAME.fullmatch(self.name) and not stdlib:
        report("unnamed-thread", f"thread {self.name!r} has Python's default name; name it "
               "after its owner", traceback.format_stack()[:-1])
    _original_start(self)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Turn the checker on for ``loop`` (called by the runtime when :func:`enabled`)."""
    check_allowlist(SLOW_CALLBACK_ALLOWLIST)
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    loop.set_exception_handler(_exception_handler)
    logging.getLogger("asyncio").addFilter(_AsyncioLog())
    warnings.simplefilter("always", ResourceWarning)
    warnings.filterwarnings("always", message=".*was never awaited", category=RuntimeWarning)
    warnings.showwarning = _showwarning
    threading.excepthook = _thread_excepthook
    threading.Thread.start = _checked_start  # type: ignore[method-assign]
    global _monitor
    _monitor = _StallMonitor(loop)
    _monitor.start()


async def check_pending_tasks() -> None:
    """After the drain: every task still pending that nobody cancelled is reported.

    Cancelled tasks get one loop turn to finish; a task that is being cancelled has an
    owner who noticed it, so it is not reported."""
    await asyncio.sleep(0)
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current or task.done() or task.cancelling():
            continue
        report("pending-task", f"task {task.get_name()!r} still pending after the drain: "
               f"{task.get_coro()!r}", _task_stack(task))


def check_at_exit() -> None:
    """After the loop is closed: collect garbage (so unretrieved exceptions and unclosed
    resources report now, not after stderr is gone), then check every thread."""
    if _monitor is not None:
        _monitor.close()
    gc.collect()
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    for thread in threading.enumerate():
        if thread is threading.main_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            frame = sys._current_frames().get(thread.ident or -1)
            stack = traceback.format_stack(frame) if frame is not None else []
            report("unjoined-thread", f"thread {thread.name!r} still alive at exit "
                   f"(daemon={thread.daemon})", stack)
