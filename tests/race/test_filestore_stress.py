"""The nogil code under stress (issue 19): ext/filestore's commit_files from 8 threads at
once into shared directories, with the release build, the ``PAZARI_DEBUG_EXT=1`` build
(checked indexing) and an AddressSanitizer build (gcc -fsanitize=address, libasan
preloaded into a fresh interpreter). ThreadSanitizer is not used: CPython itself is not
TSan-clean, so its reports would drown any of ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pazari import filestore
from tests.race.filestore_stress import BATCHES, PER_BATCH, THREADS, stress

ROOT = Path(__file__).resolve().parents[2]
STRESS = Path(__file__).with_name("filestore_stress.py")


def _build(kind: str, out: Path) -> Path:
    """Build ext/filestore alone into ``out`` and return the module's path."""
    env = {**os.environ, "PAZARI_EXT_ONLY": "filestore"}
    if kind == "debug":
        env["PAZARI_DEBUG_EXT"] = "1"
    elif kind == "asan":
        env["CFLAGS"] = "-fsanitize=address -fno-omit-frame-pointer -g"
        env["LDFLAGS"] = "-fsanitize=address"
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out),
                    "--build-temp", str(out / "tmp"), "--force"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    found = sorted(out.glob("pazari/filestore/_commit*.so"))
    assert found, list(out.rglob("*"))
    return found[0]


@pytest.mark.skipif(not filestore.COMPILED, reason="the compiled module is not built")
def test_release_build_under_threads(tmp_path: Path) -> None:
    assert stress(filestore._impl, tmp_path) == THREADS * BATCHES * PER_BATCH


@pytest.mark.parametrize("kind", ["debug", "asan"])
def test_checked_builds_under_threads(kind: str, tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the extension")
    module = _build(kind, tmp_path / "build")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    if kind == "asan":
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        assert os.path.isabs(libasan), libasan
        env["LD_PRELOAD"] = libasan
        # CPython's own allocations at exit are not ours to judge; memory errors are.
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.run([sys.executable, str(STRESS), str(module), str(data)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split() == ["ok", str(THREADS * BATCHES * PER_BATCH)], proc.stdout
    assert "ERROR: AddressSanitizer" not in proc.stderr
