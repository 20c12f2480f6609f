"""Fixtures for the RESP parser/writer tests: every behaviour test runs against both twins."""

from __future__ import annotations

from types import ModuleType

import pytest

from pazari.resp import _parser_py

try:
    from pazari.resp import _parser as _compiled
except ImportError:  # test_compiled_module_loaded fails loudly in that case
    _compiled = None

IMPLS = [
    pytest.param(
        _compiled,
        id="compiled",
        marks=pytest.mark.skipif(
            _compiled is None, reason="compiled pazari.resp._parser not built"
        ),
    ),
    pytest.param(_parser_py, id="pure"),
]


@pytest.fixture(params=IMPLS)
def resp_impl(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled module (``compiled``) or its pure-Python twin (``pure``)."""
    impl: ModuleType = request.param
    return impl
