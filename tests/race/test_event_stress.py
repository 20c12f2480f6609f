"""The other nogil section under stress (issue 19): ext/event's ``sync_loop`` (the spool's
fdatasync server, issue 17) with 4 syncer threads sharing one request and one result pipe
and 6 Python threads writing requests at once, with the release build, the
``PAZARI_DEBUG_EXT=1`` build and an AddressSanitizer build (tests/race/ext_build.py). The
pure twin runs the same stress as the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from pazari import event
from pazari.event import _encoder_py
from tests.race.event_stress import PER_PRODUCER, PRODUCERS, stress
from tests.race.ext_build import build, run_stress

STRESS = Path(__file__).with_name("event_stress.py")
TOTAL = PRODUCERS * PER_PRODUCER


@pytest.mark.skipif(not event.COMPILED, reason="the compiled module is not built")
def test_release_build_under_threads(tmp_path: Path) -> None:
    assert stress(event._impl, tmp_path) == TOTAL  # type: ignore[attr-defined]


def test_pure_twin_under_threads(tmp_path: Path) -> None:
    assert stress(_encoder_py, tmp_path) == TOTAL


@pytest.mark.parametrize("kind", ["debug", "asan"])
def test_checked_builds_under_threads(kind: str, tmp_path: Path) -> None:
    module = build("event", "_encoder", kind, tmp_path / "build")
    data = tmp_path / "data"
    data.mkdir()
    proc = run_stress(STRESS, module, kind, str(data))
    assert proc.stdout.split() == ["ok", str(TOTAL)], proc.stdout
