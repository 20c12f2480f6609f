"""The rafka config file: ``general``, ``consumer`` and ``producer`` librdkafka sections
(spec §2.2), plus a ``rafka`` section for what the original did not have (auth, TLS, limits).

Merge rules (spec §2.2): ``general`` keys go into ``consumer`` and ``producer`` only where the
key is not already set there; ``go.*`` keys belong to confluent-kafka-go and are dropped.
Every librdkafka value is checked by librdkafka itself, at startup.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

from pazari.runtime.config import ConfigError

#: Bulk cap of the original: ``MaxBulkSize = 32*1024*1000`` (spec §1.1).
DEFAULT_MAX_BULK = 32 * 1024 * 1000


@dataclass
class ServerOptions:
    """The ``rafka`` section: options of this server beyond the original's librdkafka file."""

    password: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_bulk: int = DEFAULT_MAX_BULK
    # go-redisproto's inline line limit: a longer inline command is `LineTooLong` (spec §1.1).
    max_inline: int = 1024
    # The original allowed 20 arguments (go-redisproto MaxNumArg); HELLO with AUTH and
    # SETNAME needs 7, BLMPOP with COUNT 6.
    max_args: int = 20
    blpop_default_timeout: float = 5.0
    # One librdkafka producer per distinct producer config, shared by all connections (fixes
    # the original's issue #39), or the original's one producer per connection.
    producers: Literal["shared", "per-connection"] = "shared"
    close_flush_timeout: float = 5.0
    # How long an RPUSHX waits for room when librdkafka's queue is full before it answers
    # `-PROD Local: Queue full` (the original answered at once; 0 restores that).
    queue_full_timeout: float = 5.0
    monitor_buffer: int = 1000
    prefetch: int = 100
    # Extra librdkafka keys (fnmatch patterns) clients may set in the BLPOP JSON, beyond
    # CLIENT_CONFIG_ALLOWED; CLIENT_CONFIG_NEVER wins over both (issue 12).
    client_config_allow: list[str] = field(default_factory=list)
    # As Redis `maxclients`: connections past this are answered
    # `-ERR max number of clients reached` and closed.
    max_clients: int = 10000
    # As Redis `timeout`: close a client idle this many seconds (0: never). Clients waiting
    # in a blocking command and MONITOR clients are not idle.
    timeout: float = 0.0
    # As Redis `client-output-buffer-limit` (hard limit): a client whose unread replies pass
    # this many bytes is disconnected (0: no limit). Large enough for a BLMPOP of big
    # messages; a client reading its replies never comes near it.
    client_output_buffer_limit: int = 256 * 1024 * 1024
    # KIP-345 static membership: `CLIENT SETNAME <group>:<name>` also sets the consumer's
    # group.instance.id to <name>, so a client that reconnects within session.timeout.ms
    # (a rafka restart or redeploy) takes its partitions back without a rebalance. Names
    # must then be unique per group across every rafka instance (a duplicate is fenced).
    static_membership: bool = False
    # Seconds a consumer may poll without a partition assignment before it is re-created
    # (issue 18); None derives it from the consumer config (consumer.assignment_timeout).
    assignment_timeout: float | None = None

    def validate(self) -> tuple[str, str] | None:
        if (self.tls_cert is None) != (self.tls_key is None):
            return "tls_cert", "tls_cert and tls_key must be given together"
        for name in ("max_bulk", "max_inline", "max_args", "monitor_buffer", "prefetch"):
            if getattr(self, name) < 1:
                return name, "must be at least 1"
        if self.max_clients < 1:
            return "max_clients", "must be at least 1"
        if self.client_output_buffer_limit < 0:
            return "client_output_buffer_limit", "must not be negative"
        if self.timeout < 0:
            return "timeout", "must not be negative"
        if self.blpop_default_timeout <= 0:
            return "blpop_default_timeout", "must be greater than 0"
        if self.assignment_timeout is not None and self.assignment_timeout <= 0:
            return "assignment_timeout", "must be greater than 0"
        return None


@dataclass
class RafkaConfig:
    general: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    rafka: ServerOptions = field(default_factory=ServerOptions)

    def merged(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The effective (consumer, producer) librdkafka configs."""
        consumer = _librdkafka(self.consumer)
        producer = _librdkafka(self.producer)
        for key, value in _librdkafka(self.general).items():
            consumer.setdefault(key, value)
            producer.setdefault(key, value)
        # At-least-once needs offsets stored only on acks and committed by auto-commit
        # (spec §0, §1.4); the README of the original requires exactly this.
        consumer.setdefault("enable.auto.commit", True)
        consumer.setdefault("enable.auto.offset.store", False)
        # Only failed deliveries call back into Python: that keeps produce cheap, and the
        # stats only count failures (spec §1.5).
        producer.setdefault("delivery.report.only.error", True)
        return consumer, producer


#: librdkafka keys a client may set through the BLPOP JSON (issue 12): consumer tuning only.
#: The original passed any key on, so a client could load a shared library into the server
#: (`plugin.library.paths`) or break at-least-once (`enable.auto.offset.store`).
CLIENT_CONFIG_ALLOWED: tuple[str, ...] = (
    "auto.offset.reset", "session.timeout.ms", "max.poll.interval.ms", "fetch.*", "queued.*",
    "rafka.*",
)
#: Never settable by a client, whatever the operator allows: identity, delivery semantics,
#: where to connect, code loading and credentials. Aliases of these keys count too
#: (librdkafka CONFIGURATION.md: `metadata.broker.list`, `auto.commit.enable`). No
#: librdkafka 2.16 key contains "oidc" (`*oidc*` guards later ones); the OIDC and TLS trust
#: keys outside `sasl.*`/`ssl.*` are `https.ca.*` (the OIDC token endpoint's CA),
#: `enable.ssl.certificate.verification` and `enable.sasl.oauthbearer.unsecure.jwt`, and
#: `security.protocol` would downgrade to plaintext: never a client's either. So is
#: `internal.termination.signal` (librdkafka would send that signal to its own threads).
CLIENT_CONFIG_NEVER: tuple[str, ...] = (
    "group.id", "group.instance.id", "client.id", "enable.auto.offset.store",
    "enable.auto.commit", "auto.commit.enable", "offset.store.*", "bootstrap.servers",
    "metadata.broker.list", "plugin.*", "*.oidc.*", "*oidc*", "ssl.*", "ssl_*", "sasl.*",
    "https.*", "enable.ssl.*", "enable.sasl.*", "security.protocol",
    "internal.termination.signal", "debug", "interceptor.*",
)


def client_key_allowed(key: str, extra: list[str]) -> bool:
    """May a client set librdkafka ``key`` in the BLPOP JSON? Matched case-insensitively, so
    no spelling slips past the never-list."""
    low = key.lower()
    if any(fnmatch.fnmatchcase(low, p) for p in CLIENT_CONFIG_NEVER):
        return False
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in (*CLIENT_CONFIG_ALLOWED, *extra))


def is_secret(key: str) -> bool:
    """Keys whose values never reach a log: ``*.password``, ``*.secret``, ``sasl.*``."""
    low = key.lower()
    return low.startswith("sasl.") or "password" in low or "secret" in low


def masked(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` as logged: secrets masked, callbacks dropped."""
    return {k: ("***" if is_secret(k) else v) for k, v in conf.items() if not callable(v)}


def _librdkafka(section: dict[str, Any]) -> dict[str, Any]:
    return {k: to_librdkafka(v) for k, v in copy.deepcopy(section).items()
            if not k.startswith("go.")}


def to_librdkafka(value: Any) -> Any:
    """JSON values as librdkafka takes them: booleans as "true"/"false", numbers as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def check_librdkafka(file: str, config: RafkaConfig) -> None:
    """Let librdkafka check every key and value (spec §2.2: SetKey type checks)."""
    consumer, producer = config.merged()
    if consumer.get("enable.auto.offset.store") not in ("false", False):
        raise ConfigError(
            file, "$.consumer.enable.auto.offset.store",
            "must be false: rafka stores offsets on `RPUSH acks`",
        )
    _check(file, "producer", producer, {}, config)
    _check(file, "consumer", consumer, {"group.id": "rafka-config-check"}, config)


def _check(
    file: str, section: str, conf: dict[str, Any], extra: dict[str, Any], config: RafkaConfig
) -> None:
    error = _try_client(section, {**conf, **extra})
    if error is None:
        return
    # Find the key librdkafka objects to, so the message can name it and where it came from.
    for key, value in conf.items():
        single = _try_client(section, {key: value, **extra})
        if single is not None:
            source = section if key in getattr(config, section) else "general"
            raise ConfigError(
                file, f"$.{source}.{key}", f"Error in librdkafka config ({key}): {single}"
            )
    raise ConfigError(file, f"$.{section}", f"Error in librdkafka config: {error}")


def _try_client(section: str, conf: dict[str, Any]) -> str | None:
    import confluent_kafka

    # No broker is contacted: without bootstrap.servers librdkafka only parses the config.
    conf = {k: v for k, v in conf.items() if k != "bootstrap.servers"}
    conf["log_level"] = "0"
    try:
        if section == "producer":
            confluent_kafka.Producer(conf).flush(0)
        else:
            confluent_kafka.Consumer(conf).close()
    except confluent_kafka.KafkaException as exc:
        return str(exc.args[0].str() if exc.args else exc)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None
