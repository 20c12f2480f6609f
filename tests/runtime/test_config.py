"""Config files load strictly into dataclasses; errors name the file, the JSON path and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from pazari.runtime.config import ConfigError, from_json, load_config


@dataclass
class Listener:
    addr: str
    tls: bool = False


@dataclass
class Example:
    name: str
    workers: int = 1
    ratio: float = 0.5
    mode: Literal["fast", "safe"] = "safe"
    listeners: list[Listener] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    kafka: dict[str, Any] = field(default_factory=dict)  # pass-through (librdkafka properties)
    proxy: str | None = None

    def validate(self) -> tuple[str, str] | None:
        if self.workers < 1:
            return "workers", "must be at least 1"
        return None


def test_valid_config_builds_typed_objects() -> None:
    cfg = from_json(
        {
            "name": "x",
            "workers": 4,
            "ratio": 1,
            "mode": "fast",
            "listeners": [{"addr": ":80"}, {"addr": ":443", "tls": True}],
            "limits": {"a": 1},
            "kafka": {"bootstrap.servers": "k:9092", "session.timeout.ms": 6000, "x": [1]},
            "proxy": None,
        },
        Example,
    )
    assert cfg.workers == 4
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.listeners == [Listener(":80"), Listener(":443", True)]
    assert cfg.kafka["session.timeout.ms"] == 6000
    assert cfg.proxy is None


@pytest.mark.parametrize(
    ("doc", "path", "what"),
    [
        ({}, "$.name", "required key is missing"),
        ({"name": 1}, "$.name", "expected a string, got an integer"),
        ({"name": "x", "workers": "2"}, "$.workers", "expected an integer, got a string"),
        ({"name": "x", "workers": True}, "$.workers", "expected an integer, got a boolean"),
        ({"name": "x", "workers": 1.5}, "$.workers", "expected an integer, got a number"),
        ({"name": "x", "ratio": "1"}, "$.ratio", "expected a number, got a string"),
        ({"name": "x", "mode": "slow"}, "$.mode", "must be one of 'fast', 'safe', got 'slow'"),
        ({"name": "x", "listeners": {}}, "$.listeners", "expected an array, got an object"),
        ({"name": "x", "listeners": [{"addr": 1}]}, "$.listeners[0].addr", "expected a string"),
        ({"name": "x", "listeners": [{"adr": ":1"}]}, "$.listeners[0].adr", "unknown key"),
        ({"name": "x", "limits": {"a": "b"}}, "$.limits.a", "expected an integer, got a string"),
        ({"name": "x", "kafka": []}, "$.kafka", "expected an object, got an array"),
        ({"name": "x", "surprise": 1}, "$.surprise", "unknown key"),
        ({"name": "x", "workers": 0}, "$.workers", "must be at least 1"),
        ([], "$", "expected an object, got an array"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_errors_name_the_json_path(doc: Any, path: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_json(doc, Example, file="svc.json")
    assert info.value.path == path
    assert what in info.value.what
    assert str(info.value).startswith(f"config error: svc.json: {path}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (None, "cannot read file"),
        (b"{not json", "invalid JSON"),
        (b"", "invalid JSON"),
    ],
    ids=["missing", "malformed", "empty"],
)
def test_file_errors(tmp_path: Path, content: bytes | None, what: str) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, Example)
    assert info.value.file == str(path)
    assert info.value.path == "$"
    assert what in info.value.what


def test_dashes_in_keys_map_to_underscores() -> None:
    @dataclass
    class Dashed:
        metrics_addr: str = ""

    assert from_json({"metrics-addr": ":9"}, Dashed).metrics_addr == ":9"
