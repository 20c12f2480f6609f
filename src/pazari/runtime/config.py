"""JSON config files loaded into typed dataclasses, strictly.

A validation error names the file, the JSON path and what is wrong, so that the daemon can
print it on one line and exit 2. Unknown keys are errors, except inside fields typed as
``dict[str, Any]``: those are pass-through sections (librdkafka properties), handed on as-is.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import orjson

T = TypeVar("T")


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` is the one line the daemon prints."""

    def __init__(self, file: str, path: str, what: str) -> None:
        self.file = file
        self.path = path
        self.what = what
        super().__init__(f"config error: {file}: {path}: {what}")


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read ``path`` as JSON and build ``cls`` (a dataclass) from it, checking every value."""
    return from_json(read_json(path), cls, file=str(path))


def read_json(path: str | Path) -> Any:
    """``path`` parsed as JSON; an unreadable file or bad JSON is a ConfigError at ``$``."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(file, "$", f"cannot read file: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(file, "$", f"invalid JSON: {exc}") from None
    return data


def from_json(data: Any, cls: type[T], *, file: str = "<config>", path: str = "$") -> T:
    """Build ``cls`` from already decoded JSON (used by load_config and by tests)."""
    return typing.cast(T, _convert(data, cls, file, path))


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp) or get_origin(tp) is dict:
        return "an object"
    if get_origin(tp) is list:
        return "an array"
    return getattr(tp, "__name__", str(tp))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _convert(value: Any, tp: Any, file: str, path: str) -> Any:
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        last: ConfigError | None = None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, file, path)
            except ConfigError as exc:
                last = exc
        assert last is not None
        raise last
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(file, path, f"must be one of {choices}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, file, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(file, path, f"expected an array, got {_json_kind(value)}")
        (item,) = get_args(tp) or (Any,)
        return [_convert(v, item, file, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, path, f"expected an object, got {_json_kind(value)}")
        _, vt = get_args(tp) or (str, Any)
        return {k: _convert(v, vt, file, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, path, f"expected a boolean, got {_json_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, path, f"expected an integer, got {_json_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, path, f"expected a number, got {_json_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, path, f"expected a string, got {_json_kind(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _convert_dataclass(value: Any, cls: Any, file: str, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(file, path, f"expected an object, got {_json_kind(value)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # JSON keys may use dashes where Python names use underscores ("metrics-addr").
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(file, f"{path}.{key}", "unknown key")
        kwargs[name] = _convert(item, hints[name], file, f"{path}.{key}")
    for name, f in fields.items():
        if name in kwargs:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(file, f"{path}.{name}", "required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            where, what = problem
            raise ConfigError(file, f"{path}.{where}" if where else path, what)
    return obj
