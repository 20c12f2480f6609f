"""BuildInfo: the JSON contract of the original (spec §1.6), field names and order kept.

Times are Go's ``time.Time`` RFC3339Nano in local time (trailing zeros of the fraction
trimmed, ``Z`` for UTC); durations are integer nanoseconds, ``-1s`` until finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

PENDING_EXIT_CODE = -999
UNFINISHED_DURATION = -1_000_000_000


def format_time(ns: int) -> str:
    """Unix nanoseconds → Go RFC3339Nano in the local zone."""
    secs, frac = divmod(ns, 1_000_000_000)
    local = datetime.fromtimestamp(secs).astimezone()
    out = local.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        out += "." + f"{frac:09d}".rstrip("0")
    offset = local.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return out + "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{out}{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


def parse_time(text: str) -> int:
    """Go RFC3339(Nano) → Unix nanoseconds (0 for the zero or an unparsable time)."""
    try:
        main, frac_ns = text, 0
        if "." in text:
            head, rest = text.split(".", 1)
            digits = ""
            for ch in rest:
                if not ch.isdigit():
                    break
                digits += ch
            frac_ns = int((digits + "000000000")[:9]) if digits else 0
            main = head + rest[len(digits) :]
        if main.endswith("Z"):
            main = main[:-1] + "+00:00"
        dt = datetime.fromisoformat(main)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + frac_ns
    except ValueError:
        return 0


def index_time(ns: int) -> str:
    """``/index/`` startedAt: Go layout ``Mon, 02 Jan 2006 15:04:05``, local, no zone."""
    return datetime.fromtimestamp(ns / 1e9).strftime("%a, %d %b %Y %H:%M:%S")


@dataclass
class BuildInfo:
    params: dict[str, str] | None = None
    group: str = ""
    path: str = ""
    cached: bool = False
    coalesced: bool = False
    incremental: bool = False
    exit_code: int = PENDING_EXIT_CODE
    err_build: str = ""
    container_stdouterr: str = ""
    container_stderr: str = ""
    transport_method: str = "rsync"
    started_at_ns: int = field(default_factory=time.time_ns)
    duration_ns: int = UNFINISHED_DURATION
    url: str = ""

    def to_doc(self, *, logs: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "Params": self.params,
            "Group": self.group,
            "Path": self.path,
            "Cached": self.cached,
            "Coalesced": self.coalesced,
            "Incremental": self.incremental,
            "ExitCode": self.exit_code,
            "ErrBuild": self.err_build,
        }
        # omitempty in the original, and never stored in build_info.json
        if logs and self.container_stdouterr:
            doc["ContainerStdouterr"] = self.container_stdouterr
        if logs and self.container_stderr:
            doc["ContainerStderr"] = self.container_stderr
        doc["TransportMethod"] = self.transport_method
        doc["StartedAt"] = format_time(self.started_at_ns)
        doc["Duration"] = self.duration_ns
        doc["URL"] = self.url
        return doc

    def to_json(self, *, logs: bool = True) -> bytes:
        return orjson.dumps(self.to_doc(logs=logs))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> BuildInfo:
        # Go's decoder matches keys case-insensitively; so do we.
        low = {k.lower(): v for k, v in doc.items()}
        params = low.get("params")
        return cls(
            params={str(k): str(v) for k, v in params.items()} if params else None,
            group=str(low.get("group") or ""),
            path=str(low.get("path") or ""),
            cached=bool(low.get("cached")),
            coalesced=bool(low.get("coalesced")),
            incremental=bool(low.get("incremental")),
            exit_code=int(low.get("exitcode", PENDING_EXIT_CODE)),
            err_build=str(low.get("errbuild") or ""),
            container_stdouterr=str(low.get("containerstdouterr") or ""),
            container_stderr=str(low.get("containerstderr") or ""),
            transport_method=str(low.get("transportmethod") or "rsync"),
            started_at_ns=parse_time(str(low.get("startedat") or "")),
            duration_ns=int(low.get("duration", UNFINISHED_DURATION)),
            url=str(low.get("url") or ""),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> BuildInfo:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("build_info.json is not an object")
        return cls.from_doc(doc)

    def copy(self, **changes: Any) -> BuildInfo:
        return replace(self, **changes)
