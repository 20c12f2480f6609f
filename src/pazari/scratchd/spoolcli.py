"""``scratchd spool inspect`` and ``scratchd spool replay`` (issue 12): the operator's view of
a spool (segments, cursors, lag per sink, dead letters) and the re-sending of dead letters.

Both work beside a running daemon: inspect only reads; replay renames a dead-letter file
aside before reading it (the daemon starts a new one for what it sets aside meanwhile) and
appends what it did not send back to the live file.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from pazari.runtime import setup_logging
from pazari.runtime.cli import config_exit, load_or_exit
from pazari.scratchd import deadletter
from pazari.scratchd.config import ScratchdConfig
from pazari.scratchd.spool import Record, count_records, segment_bases

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> int:
    """``--since``: ISO 8601 (UTC unless it says otherwise), unix seconds, or an age such as
    ``30m``/``2h``/``1d``; returns ms since the epoch."""
    now = datetime.datetime.now(datetime.UTC).timestamp() if now is None else now
    match = _RELATIVE.match(text)
    if match:
        return int((now - float(match.group(1)) * _UNITS[match.group(2)]) * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r}: expected ISO 8601, unix seconds or an age like 2h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def spool_dirs(config: ScratchdConfig) -> list[Path]:
    """The spool directory and those of ``--workers N`` (``worker-<i>``)."""
    root = Path(config.spool.dir)
    dirs = [root] if root.is_dir() else []
    dirs += sorted(p for p in root.glob("worker-*") if p.is_dir())
    return dirs


def inspect(config: ScratchdConfig) -> dict[str, Any]:
    sinks = sorted({s for t in config.tenants for s in t.sinks})
    report: dict[str, Any] = {}
    for directory in spool_dirs(config):
        bases = segment_bases(directory)
        if not bases and not any(directory.glob("cursor-*")):
            continue
        sizes = [(directory / f"{b:020d}.seg").stat().st_size for b in bases]
        end = bases[-1] + sizes[-1] if bases else 0
        doc: dict[str, Any] = {"segments": len(bases), "bytes": sum(sizes),
                               "first": bases[0] if bases else 0, "end": end,
                               "records": count_records(directory, bases, 0, end),
                               "sinks": {}}
        for sink in sinks:
            cursor = _cursor(directory, sink)
            start = bases[0] if bases else 0
            cursor = start if cursor is None else min(max(cursor, start), end)
            doc["sinks"][sink] = {
                "cursor": cursor, "lag_bytes": end - cursor,
                "lag_events": count_records(directory, bases, cursor, end),
                "dead_letters": deadletter.count(directory, sink),
            }
        report[str(directory)] = doc
    return report


def _cursor(directory: Path, sink: str) -> int | None:
    try:
        text = (directory / f"cursor-{sink}").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


async def replay(config: ScratchdConfig, sink_name: str, tenant: str | None,
                 since: int | None) -> dict[str, int]:
    from pazari.scratchd.sinks import build_sink
    from pazari.scratchd.sinks.file import FileSink

    sink = build_sink(sink_name, config.sinks[sink_name])
    if isinstance(sink, FileSink):
        # Its own files: a running daemon may be appending to the unsuffixed ones.
        sink.suffix = f"-replay{os.getpid()}"
    await sink.start()
    totals = {"replayed": 0, "kept": 0, "failed": 0}
    try:
        for directory in spool_dirs(config):
            for path in _claim(directory, sink_name):
                await _replay_file(sink, path, directory, tenant, since, totals)
        await sink.sync()
    finally:
        await sink.close()
    return totals


def _claim(directory: Path, sink: str) -> list[Path]:
    """Files to replay: leftovers of an interrupted replay, and the live file renamed aside."""
    claimed = sorted(directory.glob(f"{deadletter.PREFIX}{sink}.replaying-*"))
    live = deadletter.path_for(directory, sink)
    if live.exists():
        aside = directory / f"{deadletter.PREFIX}{sink}.replaying-{os.getpid()}"
        os.rename(live, aside)
        claimed.append(aside)
    return claimed


async def _replay_file(sink: Any, path: Path, directory: Path, tenant: str | None,
                       since: int | None, totals: dict[str, int]) -> None:
    keep: list[bytes] = []
    wanted: list[deadletter.DeadLetter] = []
    for letter in deadletter.read(path):
        if (tenant is not None and letter.tenant != tenant) or (
                since is not None and letter.at < since):
            keep.append(letter.line)
            totals["kept"] += 1
        else:
            wanted.append(letter)
    batch = max(1, sink.config.batch)
    for i in range(0, len(wanted), batch):
        part = wanted[i:i + batch]
        records = [Record(0, 0, d.tenant, d.key, d.event) for d in part]
        try:
            await sink.deliver(records)
        except Exception as exc:
            print(f"sink {sink.name}: {len(part)} dead letters not delivered: {exc}",
                  file=sys.stderr)
            keep.extend(d.line for d in part)
            totals["failed"] += len(part)
            continue
        totals["replayed"] += len(part)
    await sink.sync()  # what was sent is durable before its lines are dropped
    if keep:
        fd = os.open(deadletter.path_for(directory, sink.name),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, b"".join(keep))
            os.fsync(fd)
        finally:
            os.close(fd)
    path.unlink()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="scratchd spool",
                                     description="Inspect a scratchd spool, replay dead letters.")
    parser.add_argument("-c", "--config", required=True, help="the daemon's JSON config")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="warning")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect", help="segments, cursors, lag and dead letters per sink (JSON)")
    rep = sub.add_parser("replay", help="send a sink's dead letters again")
    rep.add_argument("--sink", required=True)
    rep.add_argument("--tenant", default=None)
    rep.add_argument("--since", type=parse_since, default=None,
                     help="only dead letters set aside since (ISO 8601, unix seconds, 2h)")
    args = parser.parse_args(list(argv))
    setup_logging("logfmt", args.log_level)
    config = load_or_exit(args.config, ScratchdConfig)
    if args.command == "inspect":
        sys.stdout.buffer.write(orjson.dumps(inspect(config), option=orjson.OPT_INDENT_2)
                                + b"\n")
        return 0
    if args.sink not in config.sinks:
        config_exit(f"--sink: no sink {args.sink!r} in {args.config}")
    totals = asyncio.run(replay(config, args.sink, args.tenant, args.since))
    sys.stdout.buffer.write(orjson.dumps(totals) + b"\n")
    return 0 if totals["failed"] == 0 else 1
