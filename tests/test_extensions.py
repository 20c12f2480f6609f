"""The compiled hot paths must be the ones in use: a silent fallback would hide a broken build."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYX = sorted((ROOT / "ext").glob("*/*.pyx"))


def test_every_hot_path_has_a_pure_twin() -> None:
    assert PYX, "no Cython sources found under ext/"
    for pyx in PYX:
        pure = ROOT / "src" / "pazari" / pyx.parent.name / f"{pyx.stem}_py.py"
        assert pure.exists(), f"{pyx} has no pure-Python twin at {pure}"


@pytest.mark.parametrize("pyx", PYX, ids=[f"{p.parent.name}.{p.stem}" for p in PYX])
def test_compiled_module_loaded(pyx: Path) -> None:
    if os.environ.get("PAZARI_NO_EXTENSIONS") == "1":
        pytest.skip("PAZARI_NO_EXTENSIONS=1 asks for the pure twins")
    name = f"pazari.{pyx.parent.name}.{pyx.stem}"
    module = importlib.import_module(name)
    assert module.__file__ is not None and module.__file__.endswith(".so"), (
        f"{name} was not loaded from a compiled extension: {module.__file__}"
    )
    package = importlib.import_module(f"pazari.{pyx.parent.name}")
    selected = getattr(package, "_impl", None)
    assert selected is module, f"pazari.{pyx.parent.name} does not use the compiled {name}"


def test_missing_extension_raises_naming_it() -> None:
    from pazari._ext import select

    if os.environ.get("PAZARI_NO_EXTENSIONS") == "1":
        pytest.skip("PAZARI_NO_EXTENSIONS=1 asks for the pure twins")
    with pytest.raises(ImportError, match=r"pazari\.nothing\._compiled"):
        select("pazari.nothing._compiled", "pazari.nothing._pure")
