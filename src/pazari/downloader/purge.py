r"""``downloader purge-assets [--purge]`` (spec §6, the original's utils/purge-assets):
nginx access-log lines on stdin; each successful ``GET /assets/<id[0:3]>/<id>`` names a file
under ``ASSETS_PATH``. The default dry run prints the paths that exist; ``--purge`` deletes
them, ignoring errors. Directories are kept.

Unlike the original's unanchored ``/GET \/assets(\/\S+\/\S+) .+ 200/``, a line must be in
nginx's ``combined`` format from its first character, the request being the quoted
``"GET /assets/... HTTP/x"`` field and 200 the status field after it: a User-Agent or a
Referer saying ``GET /assets/../x ... 200`` names nothing. Each path is resolved (``..``,
symlinks) and refused unless it stays inside ASSETS_PATH (issue 11).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

#: nginx ``combined``: $remote_addr - $remote_user [$time_local] "$request" $status
#: $body_bytes_sent "$http_referer" "$http_user_agent", anchored at the line start.
ASSET_LINE = re.compile(
    r'\S+ \S+ \S+ \[[^\]]*\] "GET /assets(/[^\s"]+/[^\s"]+) HTTP/[0-9.]+" 200 ')


def asset_paths(lines: Iterable[str], assets_path: str) -> Iterator[str]:
    """Existing files named by the log lines, once each, in order of appearance; only
    those whose resolved path is inside ``assets_path``."""
    root = os.path.realpath(assets_path)
    seen: set[str] = set()
    for line in lines:
        m = ASSET_LINE.match(line)
        if m is None:
            continue
        path = assets_path + m.group(1)
        if path in seen:
            continue
        seen.add(path)
        resolved = os.path.realpath(path)
        if os.path.commonpath([root, resolved]) != root or resolved == root:
            continue
        if os.path.isfile(path):
            yield path


def main(argv: Sequence[str], stdin: TextIO | None = None, stdout: TextIO | None = None
         ) -> int:
    parser = argparse.ArgumentParser(
        prog="downloader purge-assets",
        description="Delete downloaded files that clients fetched successfully (nginx log "
                    "lines on stdin; ASSETS_PATH is the directory nginx serves as /assets).")
    parser.add_argument("--purge", action="store_true", help="delete (default: dry run)")
    args = parser.parse_args(list(argv))
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    assets_path = os.environ.get("ASSETS_PATH", "")
    if not assets_path:
        print("purge-assets: ASSETS_PATH is not set", file=sys.stderr)
        return 2
    if stdin.isatty():
        print("purge-assets: pipe nginx access-log lines on stdin", file=sys.stderr)
        return 2
    for path in asset_paths(stdin, assets_path.rstrip("/")):
        if args.purge:
            with contextlib.suppress(OSError):
                os.unlink(path)
        print(path, file=stdout)
    return 0
