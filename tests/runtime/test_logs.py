"""Log lines: logfmt by default, JSON on request, one line per event."""

from __future__ import annotations

import logging

import orjson
import pytest

from pazari.runtime.logs import JsonFormatter, LogfmtFormatter


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pazari.rafka.server", logging.WARNING, "f.py", 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


@pytest.mark.parametrize(
    ("msg", "extra", "expected_tail"),
    [
        ("ready", {}, "level=warning component=rafka.server msg=ready"),
        ("two words", {}, 'msg="two words"'),
        ('say "hi"', {}, r'msg="say \"hi\""'),
        ("line\nbreak", {}, r'msg="line\nbreak"'),
        ("ready", {"port": 6380}, "msg=ready port=6380"),
        ("ready", {"url": "http://a b"}, 'url="http://a b"'),
        ("", {}, 'msg=""'),
    ],
    ids=["plain", "spaces", "quotes", "newline", "extra-int", "extra-quoted", "empty"],
)
def test_logfmt(msg: str, extra: dict[str, object], expected_tail: str) -> None:
    line = LogfmtFormatter().format(_record(msg, **extra))
    assert line.startswith("ts=")
    assert expected_tail in line
    assert "\n" not in line


def test_json_lines_carry_the_same_fields() -> None:
    line = JsonFormatter().format(_record("hello", port=1))
    doc = orjson.loads(line)
    assert doc["level"] == "warning"
    assert doc["component"] == "rafka.server"
    assert doc["msg"] == "hello"
    assert doc["port"] == 1
    assert doc["ts"].endswith("Z")


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    line = LogfmtFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in line
