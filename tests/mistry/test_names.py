"""Name validation: every name that becomes a path component (spec §8: path traversal)."""

from __future__ import annotations

import pytest

from pazari.mistry.names import (
    InvalidName,
    check_group,
    check_job_id,
    check_param,
    check_project,
    is_opaque,
)

VALID = [
    (check_project, "simple"),
    (check_project, "my-app.v2_x"),
    (check_project, "a"),
    (check_group, ""),
    (check_group, "master"),
    (check_group, "Feature-1.2_x"),
    (check_param, "Gemfile.lock"),
    (check_param, "_production"),
    (check_param, "@c"),
    (check_job_id, "a" * 64),
]
INVALID = [
    (check_project, ""),
    (check_project, ".."),
    (check_project, "../etc"),
    (check_project, "a/b"),
    (check_project, "Upper"),
    (check_project, "-dash"),
    (check_project, "x" * 200),
    (check_group, "."),
    (check_group, ".."),
    (check_group, "feature/x"),
    (check_group, "a\x00b"),
    (check_param, ".."),
    (check_param, ".hidden"),
    (check_param, "a/b"),
    (check_param, ""),
    (check_job_id, "A" * 64),
    (check_job_id, "abc"),
    (check_job_id, "../" + "a" * 61),
]


@pytest.mark.parametrize(("check", "name"), VALID, ids=[f"{c.__name__}:{n}" for c, n in VALID])
def test_valid_names(check: object, name: str) -> None:
    assert check(name) == name  # type: ignore[operator]


@pytest.mark.parametrize(
    ("check", "name"), INVALID, ids=[f"{c.__name__}:{n!r}" for c, n in INVALID]
)
def test_invalid_names(check: object, name: str) -> None:
    with pytest.raises(InvalidName):
        check(name)  # type: ignore[operator]


@pytest.mark.parametrize(("name", "opaque"), [("_x", True), ("x", False), ("x_", False)])
def test_opaque_params(name: str, opaque: bool) -> None:
    assert is_opaque(name) is opaque
