"""The built wheel carries the compiled modules and works from outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOT_PATHS = sorted(f"pazari/{p.parent.name}/{p.stem}" for p in (ROOT / "ext").glob("*/*.pyx"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: the build uses this venv's pinned Cython instead of fetching one.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, timeout=600,
    )
    (path,) = out.glob("pazari-*.whl")
    return path


def test_wheel_contains_compiled_modules(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for hot_path in HOT_PATHS:
        assert any(n.startswith(hot_path) and n.endswith(".so") for n in names), (
            f"{hot_path} is not compiled into {wheel.name}"
        )
        assert f"{hot_path}_py.py" in names
    assert not any(n.endswith((".pyx", ".c")) for n in names)


def test_wheel_contains_the_clients(wheel: Path) -> None:
    """Issue 14: the rafka driver, the downloader client and the browser tracker ship."""
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("pazari/rafka/client/__init__.py", "pazari/rafka/client/asyncio.py",
                 "pazari/downloader/client.py", "pazari/scratchd/tracker/tracker.js"):
        assert name in names, f"{name} is not in {wheel.name}"


@pytest.mark.slow
def test_wheel_installs_and_runs_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600
    )
    # Run from a directory without the source tree, so only the installed copy can be found.
    version = subprocess.run(
        [str(env_dir / "bin" / "rafka"), "--version"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    )
    assert version.stdout.startswith("rafka version 0.6.2")
    probe = subprocess.run(
        [str(python), "-c",
         "import pazari.resp as r, pazari.resp._parser as c; "
         "assert r.Reader is c.Reader; print(c.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    )
    assert probe.stdout.strip().endswith(".so")
    assert str(env_dir) in probe.stdout
