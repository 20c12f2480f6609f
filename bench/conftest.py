"""Benchmarks: ``make bench`` runs all of them, ``make bench-gate`` only the ``gate`` ones.

A gate asserts a ratio measured within one run (compiled vs reference, ours vs a peer), never
an absolute time, and records what it measured under bench/results/.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gate: short ratio gate run by `make bench-gate` in CI")
