"""Fixtures for the MIME tests: both sniffer twins, and the generated corpus."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from .corpus import Sample, build_corpus

Sniff = Callable[[bytes], str]

NO_EXTENSIONS = os.environ.get("PAZARI_NO_EXTENSIONS", "") == "1"


def _compiled() -> ModuleType | None:
    try:
        return importlib.import_module("pazari.mime._sniff")
    except ImportError:
        return None


def require(module: str, pip_name: str) -> ModuleType:
    """Import an optional test dependency: fail with the install hint in CI, else skip."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the machine
        hint = f"{module} is missing: .venv/bin/pip install {pip_name}"
        if os.environ.get("CI") == "true":
            pytest.fail(hint)
        pytest.skip(f"{hint} ({exc})")


@pytest.fixture(
    params=[
        pytest.param("compiled", id="compiled"),
        pytest.param("pure", id="pure"),
    ]
)
def sniff_impl(request: pytest.FixtureRequest) -> Sniff:
    """``sniff`` of the compiled module, then of the pure twin."""
    if request.param == "pure":
        return importlib.import_module("pazari.mime._sniff_py").sniff  # type: ignore[no-any-return]
    mod = _compiled()
    if mod is None:
        pytest.skip("compiled pazari.mime._sniff not built (see test_compiled_module_loaded)")
    return mod.sniff  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """The generated corpus, written to a temp dir; each sample holds the file's first 1 KiB."""
    require("PIL", "pillow")
    root: Path = tmp_path_factory.mktemp("mime-corpus")
    return build_corpus(root)
