"""Build one hot path's extension in a checked flavour for the nogil stress tests (issue 19),
and run a stress script against that build in a fresh interpreter.

- ``debug``: ``PAZARI_DEBUG_EXT=1`` (bounds, wraparound and initialisation checks on);
- ``asan``: gcc ``-fsanitize=address``, libasan preloaded into the interpreter (CPython's own
  leaks at exit are not ours to judge: ``detect_leaks=0``; a memory error aborts).

ThreadSanitizer is not used: CPython itself is not TSan-clean, so its reports would drown
any of ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build(ext: str, module: str, kind: str, out: Path) -> Path:
    """Build ``ext/<ext>`` alone into ``out`` and return ``pazari/<ext>/<module>*.so``."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the extension")
    env = {**os.environ, "PAZARI_EXT_ONLY": ext}
    if kind == "debug":
        env["PAZARI_DEBUG_EXT"] = "1"
    elif kind == "asan":
        env["CFLAGS"] = "-fsanitize=address -fno-omit-frame-pointer -g"
        env["LDFLAGS"] = "-fsanitize=address"
    else:
        raise ValueError(kind)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out),
                    "--build-temp", str(out / "tmp"), "--force"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    found = sorted(out.glob(f"pazari/{ext}/{module}*.so"))
    assert found, list(out.rglob("*"))
    return found[0]


def run_stress(script: Path, module: Path, kind: str, *args: str,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python script module args…`` with the build's sanitizer runtime preloaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    if kind == "asan":
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        assert os.path.isabs(libasan), libasan
        env["LD_PRELOAD"] = libasan
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    proc = subprocess.run([sys.executable, str(script), str(module), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ERROR: AddressSanitizer" not in proc.stderr
    return proc
