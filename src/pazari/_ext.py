"""Choose between a compiled hot path and its pure-Python twin.

Production code never falls back silently: a missing compiled module raises an ImportError
that names it. ``PAZARI_NO_EXTENSIONS=1`` asks for the pure twins on purpose (for debugging and
for the differential tests).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("PAZARI_NO_EXTENSIONS", "") == "1"


def select(compiled: str, pure: str) -> ModuleType:
    """Import ``compiled`` (or ``pure`` when PAZARI_NO_EXTENSIONS=1)."""
    if NO_EXTENSIONS:
        return importlib.import_module(pure)
    try:
        return importlib.import_module(compiled)
    except ImportError as exc:
        raise ImportError(
            f"compiled extension {compiled} is not built ({exc}); run `make build`, "
            f"or set PAZARI_NO_EXTENSIONS=1 to use the pure-Python {pure}",
            name=compiled,
        ) from exc
