"""pytest plugin exposing the real-service fixtures.

Enable with `pytest_plugins = ["tests.support.plugin"]` in tests/conftest.py, or
`pytest -p tests.support.plugin`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator
from types import FrameType

import pytest

from tests.support.daemon import daemon_factory
from tests.support.services import (
    _kafka_session,
    _redis_session,
    docker_engine,
    kafka_broker,
    kafka_topic,
    redis_binary,
    redis_factory,
    redis_server,
)

__all__ = [
    "_kafka_session",
    "_redis_session",
    "daemon_factory",
    "docker_engine",
    "kafka_broker",
    "kafka_topic",
    "redis_binary",
    "redis_factory",
    "redis_server",
]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets fixtures (daemon_factory) see in teardown whether the test body failed, so
    # they print the daemon logs only when they help.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM'd pytest (CI timeout, `kill`) would otherwise die without running fixture
    # teardown or atexit, leaving redis/tansu/podman containers behind. Turning it into
    # KeyboardInterrupt gives the same orderly cleanup as Ctrl-C. Only when nobody else
    # installed a handler.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
