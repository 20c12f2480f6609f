"""Fixtures for the event encoder tests: behaviour tests run against both twins."""

from __future__ import annotations

from types import ModuleType

import pytest

from pazari.event import _encoder_py

try:
    from pazari.event import _encoder as _compiled
except ImportError:  # test_compiled_encoder_loaded fails loudly in that case
    _compiled = None

COMPILED = _compiled

IMPLS = [
    pytest.param(
        _compiled,
        id="compiled",
        marks=pytest.mark.skipif(_compiled is None, reason="pazari.event._encoder not built"),
    ),
    pytest.param(_encoder_py, id="pure"),
]


@pytest.fixture(params=IMPLS)
def encoder(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled encoder (``compiled``) or its pure-Python twin (``pure``)."""
    impl: ModuleType = request.param
    return impl
