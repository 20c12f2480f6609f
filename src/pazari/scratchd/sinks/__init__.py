"""Sinks: where spooled events go (spec "Persistence"). Each takes whole batches of spool
records, raises on failure (the forwarder retries with backoff) and makes what it delivered
durable in ``sync`` before the forwarder's cursor is persisted."""

from __future__ import annotations

from pazari.scratchd.config import SinkConfig
from pazari.scratchd.sinks.base import Sink


def build_sink(name: str, config: SinkConfig, worker: int | None = None) -> Sink:
    """``worker``: the index of this process under ``--workers N`` (None: single process)."""
    if config.type == "file":
        from pazari.scratchd.sinks.file import FileSink

        return FileSink(name, config, worker)
    if config.type == "redis":
        from pazari.scratchd.sinks.redis import RedisSink

        return RedisSink(name, config)
    if config.type == "kafka":
        from pazari.scratchd.sinks.kafka import KafkaSink

        return KafkaSink(name, config)
    from pazari.scratchd.sinks.stdout import StdoutSink

    return StdoutSink(name, config)


__all__ = ["Sink", "build_sink"]
