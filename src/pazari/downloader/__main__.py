"""``downloader api|processor|notifier [-c config.json]``, ``downloader version``,
``downloader purge-assets [--purge]`` (spec §5 CLI, §6) and ``downloader migrate-layout``
(issue 16)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence

from pazari import __version__
from pazari.downloader.config import Config, require_notifier, require_processor
from pazari.runtime import base_parser, setup_logging
from pazari.runtime.cli import config_exit
from pazari.runtime.config import ConfigError
from pazari.runtime.service import Service, options_from_args, run

USAGE = """usage: downloader COMMAND [options]

Async rate-limited downloading service

commands:
  api            run the HTTP API
  processor      run the download processor
  notifier       run the callback notifier
  purge-assets   delete files fetched successfully, from nginx access-log lines on stdin
  migrate-layout move a single-Redis dataset into the Redis Cluster layout (one-way)
  version        print the version
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "version":
        print(f"Downloader Version {__version__}")
        return 0
    if command == "purge-assets":
        from pazari.downloader.purge import main as purge_main

        return purge_main(rest)
    if command == "migrate-layout":
        from pazari.downloader.migrate import main as migrate_main

        return migrate_main(rest, _load)
    builders: dict[str, Callable[[Sequence[str]], int]] = {
        "api": _api, "processor": _processor, "notifier": _notifier,
    }
    if command not in builders:
        print(f"downloader: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    return builders[command](rest)


def _parser(command: str, description: str):  # type: ignore[no-untyped-def]
    return base_parser(f"downloader {command}", description, config_default="config.json")


def _load(path: str) -> Config:
    from pazari.downloader.config import load

    try:
        return load(path)
    except ConfigError as exc:
        config_exit(exc)


def _require(path: str, problem: tuple[str, str] | None) -> None:
    if problem is not None:
        config_exit(ConfigError(path, *problem))


def _run(service: Service, args: object) -> int:
    _tune_gc()
    return run(service, options_from_args(args))


#: Allocations between young collections (CPython's default is 700). Each job allocates a
#: few thousand short-lived objects in aiohttp, redis-py and asyncio; with the default the
#: collector ran every few jobs and, measured under the throughput gate, its pauses added
#: up to 0.1-0.15 ms per job in the processor and in the notifier.
GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Move what the imports left alive to the permanent generation (the full collections
    walked every module object again) and collect the young generation less often. Cyclic
    garbage is still collected; only the cadence changes."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _api(argv: Sequence[str]) -> int:
    parser = _parser("api", "The downloader's HTTP API.")
    parser.add_argument("--host", default="", help='address to listen on (default "": all)')
    parser.add_argument("-p", "--port", type=int, default=8000)
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    config = _load(args.config)
    from pazari.downloader.api import ApiService

    return _run(ApiService(config, args.host, args.port), args)


def _processor(argv: Sequence[str]) -> int:
    args = _parser("processor", "The downloader's download processor.").parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    config = _load(args.config)
    _require(args.config, require_processor(config))
    from pazari.downloader.processor import ProcessorService

    return _run(ProcessorService(config), args)


def _notifier(argv: Sequence[str]) -> int:
    args = _parser("notifier", "The downloader's callback notifier.").parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    config = _load(args.config)
    _require(args.config, require_notifier(config))
    from pazari.downloader.notifier import NotifierService

    return _run(NotifierService(config), args)


if __name__ == "__main__":
    sys.exit(main())
