"""The nogil code under stress (issue 19): ext/filestore's commit_files from 8 threads at
once into shared directories, with the release build, the ``PAZARI_DEBUG_EXT=1`` build
(checked indexing) and an AddressSanitizer build (tests/race/ext_build.py says how, and why
not ThreadSanitizer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pazari import filestore
from tests.race.ext_build import build, run_stress
from tests.race.filestore_stress import BATCHES, PER_BATCH, THREADS, stress

STRESS = Path(__file__).with_name("filestore_stress.py")


@pytest.mark.skipif(not filestore.COMPILED, reason="the compiled module is not built")
def test_release_build_under_threads(tmp_path: Path) -> None:
    assert stress(filestore._impl, tmp_path) == THREADS * BATCHES * PER_BATCH


@pytest.mark.parametrize("kind", ["debug", "asan"])
def test_checked_builds_under_threads(kind: str, tmp_path: Path) -> None:
    module = build("filestore", "_commit", kind, tmp_path / "build")
    data = tmp_path / "data"
    data.mkdir()
    proc = run_stress(STRESS, module, kind, str(data))
    assert proc.stdout.split() == ["ok", str(THREADS * BATCHES * PER_BATCH)], proc.stdout
