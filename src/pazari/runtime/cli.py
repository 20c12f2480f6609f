"""Flags every console script shares: ``--help``, ``--version``, ``--config`` and the runtime's
own (log format, metrics address, drain time)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, TypeVar

from pazari import __version__
from pazari.runtime.config import ConfigError, load_config

T = TypeVar("T")


def base_parser(
    prog: str,
    description: str,
    *,
    config_default: str | None = None,
    version: str | None = None,
    metrics_default: str | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with the flags shared by every pazari daemon."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "-v",
        "--version",
        action="version",
        version=f"{prog} version {version or __version__}",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=config_default,
        help="path to the JSON config file"
        + (f" (default: {config_default})" if config_default else ""),
    )
    parser.add_argument(
        "--log-format", choices=("logfmt", "json"), default="logfmt", help="log line format"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    parser.add_argument(
        "--metrics-addr",
        default=metrics_default,
        help="host:port of the /metrics and /debug/vars listener (port 0 picks a free one)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds a graceful stop may take before the daemon gives up (default 30)",
    )
    return parser


def config_exit(error: ConfigError | str) -> NoReturn:
    """Print a config error on one line (no traceback) and exit 2."""
    text = str(error).replace("\n", " ")
    print(text, file=sys.stderr, flush=True)
    raise SystemExit(2)


def load_or_exit(path: str | Path | None, cls: type[T]) -> T:
    """Load the config or exit 2 with the one-line error; no path means all defaults."""
    if path is None:
        return cls()
    try:
        return load_config(path, cls)
    except ConfigError as exc:
        config_exit(exc)
