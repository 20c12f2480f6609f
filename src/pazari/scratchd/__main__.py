"""``scratchd --config C --listen HOST:PORT --workers N`` (spec scratchd.md, issue 6), and
``scratchd spool inspect|replay --config C`` (issue 12, ``spoolcli.py``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pazari.runtime import base_parser, setup_logging
from pazari.runtime.cli import config_exit, load_or_exit
from pazari.runtime.config import ConfigError, from_json
from pazari.runtime.metrics import parse_addr
from pazari.runtime.service import options_from_args, run
from pazari.scratchd.config import ScratchdConfig, default_config


def main(argv: Sequence[str] | None = None) -> int:
    rest = sys.argv[1:] if argv is None else list(argv)
    if rest[:1] == ["spool"]:  # scratchd spool inspect|replay (spoolcli.py)
        from pazari.scratchd.spoolcli import main as spool_main

        return spool_main(rest[1:])
    parser = base_parser("scratchd", "Multi-tenant web-analytics collector.")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the port with SO_REUSEPORT (default 1)")
    parser.add_argument("--worker-index", type=int, default=None, help=argparse_hidden())
    # Spools left by workers that no longer run (--workers N reduced), given to worker
    # j % N by the supervisor (workers.py); a single process takes them all.
    parser.add_argument("--drain-spool", action="append", default=[], help=argparse_hidden())
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    if args.config:
        config = load_or_exit(args.config, ScratchdConfig)
    else:
        try:
            config = from_json(default_config(), ScratchdConfig, file="<embedded default>")
        except ConfigError as exc:  # pragma: no cover - the embedded default is tested
            config_exit(exc)
    try:
        host, port = parse_addr(args.listen)
    except ValueError as exc:
        config_exit(f"--listen: {exc}")
    if args.workers < 1:
        config_exit("--workers must be at least 1")
    if args.workers > 1 and args.worker_index is None:
        from pazari.scratchd.workers import supervise

        return supervise(rest, args.workers, port, config.spool.dir)
    reuse_port = args.worker_index is not None
    orphans = list(args.drain_spool)
    if args.worker_index is None:
        from pazari.scratchd.workers import orphan_spools

        orphans = orphan_spools(config.spool.dir, 0, include_root=False)
    if args.worker_index is not None:
        config.spool.dir = f"{config.spool.dir}/worker-{args.worker_index}"
        if args.metrics_addr:
            # One metrics listener per worker: worker i on the given port + i (0 stays 0).
            mhost, mport = parse_addr(args.metrics_addr)
            if mport:
                args.metrics_addr = f"[{mhost}]:{mport + args.worker_index}" if ":" in mhost \
                    else f"{mhost}:{mport + args.worker_index}"
    from pazari.scratchd.service import Scratchd

    return run(Scratchd(config, host, port, reuse_port, args.worker_index, orphans),
               options_from_args(args))


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
