"""The client's dynamic-param parsing: the original's table (spec §3), Go durations."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pazari.mistry.client import split_argv
from pazari.mistry.duration import parse_duration
from pazari.mistry.params import ParamError, expand_files, parse_params

TABLE = [
    ("--a b c=d e=f --g h", {"a": "b", "c": "d", "e": "f", "g": "h"}),
    ("a=b --@c d e=f --g h", {"a": "b", "@c": "d", "e": "f", "g": "h"}),
    ("a=b --c d", {"a": "b", "c": "d"}),
    ("--a b @c=d", {"a": "b", "@c": "d"}),
    ("a=b c=d", {"a": "b", "c": "d"}),
    ("a b --c d", {"a": "b", "c": "d"}),
    ("--a b", {"a": "b"}),
    ("a=b", {"a": "b"}),
    # The quirks kept: dashes are a cutset, only the 2nd "=" piece counts, a lone key drops.
    ("---x y", {"x": "y"}),
    ("a=b=c", {"a": "b"}),
    ("a=b lonely", {"a": "b"}),
    ("--lockfile=@yarn.lock --foo=bar --_ignored=true",
     {"lockfile": "@yarn.lock", "foo": "bar", "_ignored": "true"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_original_table(line: str, expected: dict[str, str]) -> None:
    assert parse_params(line.split()) == expected


@given(st.lists(st.text(min_size=0, max_size=5), max_size=12))
def test_never_raises(tokens: list[str]) -> None:
    params = parse_params(tokens)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


def test_file_values(tmp_path: Path) -> None:
    (tmp_path / "Gemfile").write_text("source 'x'\n")
    got = expand_files({"Gemfile": f"@{tmp_path}/Gemfile", "plain": "v"})
    assert got == {"Gemfile": "source 'x'\n", "plain": "v"}
    with pytest.raises(ParamError, match="could not read"):
        expand_files({"x": f"@{tmp_path}/missing"})


def test_split_argv() -> None:
    assert split_argv(["--project", "p", "--", "--a", "b", "--", "c"]) == (
        ["--project", "p"], ["--a", "b", "--", "c"]
    )  # fmt: skip
    assert split_argv(["--project", "p"]) == (["--project", "p"], [])


DURATIONS = [("60m", 3600.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("300ms", 0.3), ("0", 0.0)]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS, ids=[d[0] for d in DURATIONS])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1x", "m", "1h-2m"])
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
