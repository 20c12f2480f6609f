"""``rafka --host 0.0.0.0 --port 6380 --config librdkafka.json`` (spec §2.1)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import confluent_kafka

from pazari import __version__
from pazari.rafka import RAFKA_COMPAT_VERSION
from pazari.rafka.config import RafkaConfig, check_librdkafka, masked
from pazari.rafka.server import RafkaServer
from pazari.runtime import base_parser, get_logger, setup_logging
from pazari.runtime.cli import config_exit, load_or_exit
from pazari.runtime.config import ConfigError
from pazari.runtime.service import options_from_args, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(
        "rafka",
        "Kafka proxy speaking the Redis protocol.",
        config_default="librdkafka.json",
        version=f"{RAFKA_COMPAT_VERSION}-pazari.{__version__}",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("-p", "--port", type=int, default=6380, help="port to listen on")
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    if not args.config:
        print("No librdkafka configuration provided", file=sys.stderr)
        return 1
    config = load_or_exit(args.config, RafkaConfig)
    try:
        check_librdkafka(args.config, config)
    except ConfigError as exc:
        config_exit(exc)
    consumer, producer = config.merged()
    get_logger("rafka.server").info(
        "librdkafka %s | consumer=%s producer=%s",
        confluent_kafka.libversion()[0], masked(consumer), masked(producer),
    )
    return run(RafkaServer(config, args.host, args.port), options_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
