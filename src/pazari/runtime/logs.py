"""One line per event on stderr: logfmt by default, JSON with ``--log-format json``.

Every line carries ``ts``, ``level``, ``component`` and ``msg``; extra key/values passed as
``logger.info("msg", extra={"kv": {...}})`` follow them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


def _ts(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _component(record: logging.LogRecord) -> str:
    name = record.name
    return name[len("pazari.") :] if name.startswith("pazari.") else name


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key not in _RESERVED and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' ="\n\t\\') and text.isprintable():
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return '"' + escaped + '"'


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info component=rafka.server msg="Listening on ..." key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_ts(record)}",
            f"level={record.levelname.lower()}",
            f"component={_logfmt_value(_component(record))}",
            f"msg={_logfmt_value(record.getMessage())}",
        ]
        parts.extend(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "component": _component(record),
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        return orjson.dumps(doc, default=str).decode()


def setup_logging(fmt: str = "logfmt", level: str = "info") -> None:
    """Route every logger to one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def get_logger(component: str) -> logging.Logger:
    """The logger of one component, e.g. ``get_logger("rafka.server")``."""
    return logging.getLogger(f"pazari.{component}")
