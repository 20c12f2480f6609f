"""A throwaway daemon that plants one defect of the kind the race checker must catch.

``python -m tests.race.planted <defect>`` runs a real pazari runtime (uvloop, signals,
sd_notify, graceful stop) around a service whose ``start`` plants the defect; with
``PAZARI_RACE=1`` the checker must report it (tests/race/test_checker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from pazari.runtime.service import RuntimeOptions, Service, run


async def _boom() -> None:
    raise ValueError("planted: nobody retrieves this")


async def _never() -> None:
    """A coroutine nobody awaits."""


def _unretrieved(service: PlantedService) -> None:
    # No reference kept: the task is collected with its exception unread.
    asyncio.get_running_loop().create_task(_boom(), name="planted-boom")


def _never_awaited(service: PlantedService) -> None:
    _never()  # type: ignore[unused-coroutine]  # the defect


def _slow(service: PlantedService) -> None:
    # After READY=1: the checker watches the loop while the daemon serves. The drain waits
    # until it has happened, however early the test's SIGTERM comes.
    service.planted.clear()

    def block() -> None:
        time.sleep(0.2)
        service.planted.set()

    asyncio.get_running_loop().call_later(0.05, block)


def _cross_thread(service: PlantedService) -> None:
    loop = asyncio.get_running_loop()

    def worker() -> None:
        # uvloop's own debug check raises; the checker reported before it did.
        with contextlib.suppress(RuntimeError):
            loop.call_soon(print, "from another thread")

    thread = threading.Thread(target=worker, name="planted-cross")
    thread.start()
    thread.join()


def _leaked_socket(service: PlantedService) -> None:
    sock = socket.socket()
    del sock  # never closed


def _unjoined_thread(service: PlantedService) -> None:
    threading.Thread(target=time.sleep, args=(30,), name="planted-sleeper", daemon=True).start()


def _thread_exception(service: PlantedService) -> None:
    def crash() -> None:
        raise RuntimeError("planted: this ends the thread")

    thread = threading.Thread(target=crash, name="planted-crasher")
    thread.start()
    thread.join()  # joined: only the exception that ended it is the defect


def _unnamed_thread(service: PlantedService) -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()


def _pending_task(service: PlantedService) -> None:
    service.forgotten = asyncio.get_running_loop().create_task(
        asyncio.sleep(3600), name="planted-forgotten")


def _starved(service: PlantedService) -> None:
    """Not a defect: a 30 ms step of CPU work on a loop thread that a busy process starves
    (same CPU, nice 10 against 0: about a tenth of it), so asyncio sees it take ~300 ms."""
    service.planted.clear()
    cpu = min(os.sched_getaffinity(0))
    service.hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(service.hog.pid, {cpu})
    os.sched_setaffinity(0, {cpu})  # Linux: this thread, the loop's
    os.nice(10)  # Linux: this thread too

    def work() -> None:
        until = time.thread_time() + 0.03
        while time.thread_time() < until:
            pass
        service.planted.set()

    asyncio.get_running_loop().call_later(0.05, work)


def _clean(service: PlantedService) -> None:
    service.forgotten = asyncio.get_running_loop().create_task(
        asyncio.sleep(3600), name="owned")


DEFECTS: dict[str, Callable[[PlantedService], None]] = {
    "unretrieved-exception": _unretrieved,
    "never-awaited": _never_awaited,
    "slow-callback": _slow,
    "cross-thread": _cross_thread,
    "resource-warning": _leaked_socket,
    "unjoined-thread": _unjoined_thread,
    "unnamed-thread": _unnamed_thread,
    "thread-exception": _thread_exception,
    "pending-task": _pending_task,
    "clean": _clean,
    "starved": _starved,
}


class PlantedService(Service):
    name = "planted"

    def __init__(self, defect: str) -> None:
        super().__init__()
        self.defect = defect
        self.forgotten: asyncio.Task[None] | None = None
        self.planted = asyncio.Event()
        self.hog: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.planted.set()
        DEFECTS[self.defect](self)

    async def stop(self) -> None:
        await self.planted.wait()
        if self.hog is not None:
            self.hog.kill()
            self.hog.wait()
        if self.defect == "clean" and self.forgotten is not None:
            self.forgotten.cancel()  # an owner that notices its task's end
            await asyncio.gather(self.forgotten, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(run(PlantedService(sys.argv[1]), RuntimeOptions(drain_timeout=5.0)))
