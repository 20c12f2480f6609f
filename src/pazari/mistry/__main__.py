"""``mistryd --addr 0.0.0.0:8462 --config config.json --filesystem plain|btrfs`` and the
subcommands ``rebuild``, ``delete-build`` (spec §4, issue #122) and ``rsync-check`` (the
rsync daemon module's ``pre-xfer exec``, issue 10)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from pazari import __version__
from pazari.mistry import MISTRY_COMPAT_VERSION
from pazari.mistry.admin import delete_builds, rebuild
from pazari.mistry.artifacts import check_rsync_request
from pazari.mistry.config import load_mistry_config
from pazari.mistry.filesystem import ADAPTERS, FilesystemError
from pazari.mistry.service import MistryService
from pazari.runtime import base_parser, setup_logging
from pazari.runtime.service import options_from_args, run


def parser() -> argparse.ArgumentParser:
    p = base_parser(
        "mistryd",
        "A powerful building service.",
        config_default="config.json",
        version=f"{MISTRY_COMPAT_VERSION}-pazari.{__version__}",
    )
    p.add_argument("-a", "--addr", default="0.0.0.0:8462", help="host:port to listen on")
    p.add_argument(
        "--filesystem",
        default="plain",
        choices=ADAPTERS,
        help=f"filesystem adapter for build dirs: {', '.join(ADAPTERS)} (default plain)",
    )
    sub = p.add_subparsers(dest="command")
    rb = sub.add_parser("rebuild", help="rebuild the project images and prune mistry's own")
    rb.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    rb.add_argument(
        "-p", "--project", action="append", default=[], help="project to rebuild (repeatable)"
    )
    rb.add_argument("-v", "--verbose", action="store_true", help="stream the build output")
    rb.add_argument(
        "--no-pull",
        action="store_true",
        help="do not pull the parent images (offline hosts); the original always pulled",
    )
    db = sub.add_parser("delete-build", help="delete ready builds (never a link target)")
    db.add_argument("-p", "--project", required=True, help="the project")
    db.add_argument("ids", nargs="+", help="job ids to delete")
    sub.add_parser(
        "rsync-check",
        help="pre-xfer exec of the rsync module: refuse all but a build's real artifacts dir",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "rsync-check":
        # rsync shows a failing pre-xfer exec's stdout to the client; no config is needed
        # (the module's path is build_path).
        why = check_rsync_request(os.environ)
        if why:
            print(why)
        return 1 if why else 0
    setup_logging(args.log_format, args.log_level)
    config = load_mistry_config(args.config)
    if not config.projects_path or not config.build_path:
        print(f"{args.config}: projects_path and build_path are required", file=sys.stderr)
        return 1
    try:
        if args.command == "rebuild":
            return asyncio.run(
                rebuild(config, args.project, args.fail_fast, args.verbose, not args.no_pull)
            )
        if args.command == "delete-build":
            return asyncio.run(delete_builds(config, args.filesystem, args.project, args.ids))
        service = MistryService(config, args.addr, args.filesystem, args.drain_timeout)
    except (FilesystemError, ValueError) as exc:
        print(f"mistryd: {exc}", file=sys.stderr)
        return 1
    return run(service, options_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
