"""The client's dynamic params, everything after ``--`` (spec §3, the original's table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ParamError(ValueError):
    pass


def parse_params(tokens: Sequence[str]) -> dict[str, str]:
    """``--a b c=d`` → ``{a: b, c: d}``. Leading dashes are a cutset (``---x`` → ``x``);
    ``k=v`` keeps only the second ``=``-piece (``a=b=c`` → ``a: b``); a key without ``=``
    takes the next token as its value; a lone trailing key is dropped."""
    params: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        arg = tokens[i].lstrip("-")
        if "=" in arg:
            parts = arg.split("=")
            params[parts[0]] = parts[1]
        elif i + 1 < len(tokens):
            params[arg] = tokens[i + 1]
            i += 1
        i += 1
    return params


def expand_files(params: dict[str, str], base: Path | None = None) -> dict[str, str]:
    """A value ``@path`` is replaced by that file's contents; a read error aborts."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if value.startswith("@"):
            path = Path(value[1:])
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                value = path.read_bytes().decode()
            except (OSError, UnicodeDecodeError) as exc:
                raise ParamError(f"could not read {path}: {exc}") from None
        out[key] = value
    return out
