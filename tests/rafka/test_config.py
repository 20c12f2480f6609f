"""The rafka config file: merge rules (spec §2.2) and librdkafka's own checks."""

from __future__ import annotations

from typing import Any

import pytest

from pazari.rafka.config import (
    CLIENT_CONFIG_NEVER,
    RafkaConfig,
    check_librdkafka,
    client_key_allowed,
)
from pazari.runtime.config import ConfigError, from_json

SAMPLE: dict[str, Any] = {
    "general": {
        "api.version.request": True,
        "bootstrap.servers": "kafka-1.example.com,kafka-2.example.com",
        "session.timeout.ms": 6000,
        "log.connection.close": False,
    },
    "consumer": {
        "go.events.channel.enable": False,
        "go.application.rebalance.enable": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 10000,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "latest",
        "enable.partition.eof": False,
    },
    "producer": {"go.delivery.reports": True, "go.events.channel.size": 1000},
}


def test_sample_config_of_the_original_loads() -> None:
    config = from_json(SAMPLE, RafkaConfig)
    check_librdkafka("librdkafka.json", config)
    consumer, producer = config.merged()
    assert not any(k.startswith("go.") for k in (*consumer, *producer))
    assert consumer["session.timeout.ms"] == "6000"
    assert producer["bootstrap.servers"] == "kafka-1.example.com,kafka-2.example.com"
    assert consumer["auto.offset.reset"] == "latest"


def test_general_does_not_override_sections() -> None:
    config = from_json(
        {"general": {"client.id": "g"}, "consumer": {"client.id": "c"}}, RafkaConfig
    )
    consumer, producer = config.merged()
    assert consumer["client.id"] == "c"
    assert producer["client.id"] == "g"


@pytest.mark.parametrize(
    ("doc", "path", "what"),
    [
        ({"consumer": {"foo": "bar"}}, "$.consumer.foo",
         'Error in librdkafka config (foo): No such configuration property: "foo"'),
        ({"general": {"session.timeout.ms": "soon"}}, "$.general.session.timeout.ms",
         "Error in librdkafka config (session.timeout.ms): Invalid value"),
        ({"producer": {"acks": "some"}}, "$.producer.acks",
         "Error in librdkafka config (acks)"),
        ({"consumer": {"enable.auto.offset.store": True}}, "$.consumer.enable.auto.offset.store",
         "must be false"),
        ({"extra": {}}, "$.extra", "unknown key"),
        ({"rafka": {"max_args": 0}}, "$.rafka.max_args", "must be at least 1"),
        ({"rafka": {"tls_cert": "c.pem"}}, "$.rafka.tls_cert", "must be given together"),
        ({"rafka": {"producers": "many"}}, "$.rafka.producers", "must be one of"),
        ({"general": []}, "$.general", "expected an object"),
    ],
    ids=["unknown-property", "bad-value", "bad-enum", "offset-store", "unknown-section",
         "max-args", "tls-half", "producers-mode", "section-type"],
)
def test_config_errors_name_the_key(doc: dict[str, Any], path: str, what: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_librdkafka("c.json", from_json(doc, RafkaConfig, file="c.json"))
    assert info.value.path == path
    assert what in info.value.what


# -- issue 12: what a client may set in the BLPOP JSON ------------------------------------

#: Every key a client may set with no operator allowlist (issue 12's list).
_ALLOWED = ["auto.offset.reset", "session.timeout.ms", "max.poll.interval.ms",
            "fetch.wait.max.ms", "fetch.min.bytes", "queued.min.messages",
            "queued.max.messages.kbytes", "rafka.reply", "AUTO.OFFSET.RESET"]
#: Never, even with `client_config_allow: ["*"]`. No librdkafka 2.16 key contains "oidc"
#: (rd_kafka_conf_properties_show lists none; the OIDC keys are `sasl.oauthbearer.*`); the
#: OIDC and TLS trust keys outside `sasl.*` and `ssl.*` are listed here by name.
_NEVER = ["group.id", "group.instance.id", "client.id", "enable.auto.offset.store",
          "Enable.Auto.Offset.Store", "enable.auto.commit", "auto.commit.enable",
          "offset.store.method", "offset.store.path", "bootstrap.servers",
          "metadata.broker.list", "plugin.library.paths", "sasl.oauthbearer.method",
          "sasl.oauthbearer.token.endpoint.url", "sasl.kerberos.kinit.cmd", "sasl.password",
          "ssl.key.location", "ssl_key", "https.ca.location", "https.ca.pem",
          "enable.ssl.certificate.verification", "enable.sasl.oauthbearer.unsecure.jwt",
          "security.protocol", "internal.termination.signal", "debug", "interceptor.x",
          "x.oidc.y", "oidc.issuer"]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "extra", "allowed"),
    [*((k, [], True) for k in _ALLOWED),
     ("check.crcs", [], False),
     ("check.crcs", ["check.*"], True),
     ("statistics.interval.ms", [], False),
     *((k, ["*"], False) for k in _NEVER)],
    ids=[*(f"allowed-{k}" for k in _ALLOWED), "unlisted", "widened", "unlisted-2",
         *(f"never-{k}" for k in _NEVER)],
)  # fmt: skip
def test_client_key_allowed(key: str, extra: list[str], allowed: bool) -> None:
    assert client_key_allowed(key, extra) is allowed


def test_every_never_key_is_a_librdkafka_key_or_pattern() -> None:
    """The never-list names keys librdkafka has (so a typo cannot leave one open): every
    literal entry of CLIENT_CONFIG_NEVER is accepted by librdkafka's config parser, or is
    refused only for its value, not as an unknown property."""
    import confluent_kafka

    for key in CLIENT_CONFIG_NEVER:
        if "*" in key:
            continue
        try:
            confluent_kafka.Consumer({"group.id": "x", key: "?", "log_level": "0"}).close()
        except confluent_kafka.KafkaException as exc:
            assert "No such configuration property" not in str(exc), key
        except (TypeError, ValueError):
            pass  # a value confluent-kafka refuses before librdkafka: the key exists


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"consumer": {"enable.auto.offset.store": True}}, "$.consumer.enable.auto.offset.store"),
        ({"consumer": {"enable.auto.offset.store": "true"}},
         "$.consumer.enable.auto.offset.store"),
        ({"consumer": {"enable.auto.offset.store": 1}}, "$.consumer.enable.auto.offset.store"),
        # general fills the consumer section: the same refusal.
        ({"general": {"enable.auto.offset.store": True}}, "$.consumer.enable.auto.offset.store"),
    ],
    ids=["consumer-bool", "consumer-string", "consumer-number", "general"],
)  # fmt: skip
def test_operator_config_cannot_enable_auto_offset_store(doc: dict[str, Any], path: str) -> None:
    """Issue 12: at-least-once needs offsets stored on `RPUSH acks` only, whoever asks."""
    with pytest.raises(ConfigError) as info:
        check_librdkafka("c.json", from_json(doc, RafkaConfig, file="c.json"))
    assert info.value.path == path
    assert "must be false" in info.value.what


@pytest.mark.parametrize("value", [False, "false"], ids=["bool", "string"])
def test_operator_config_may_say_auto_offset_store_false(value: Any) -> None:
    config = from_json({"consumer": {"enable.auto.offset.store": value}}, RafkaConfig)
    check_librdkafka("c.json", config)
    assert config.merged()[0]["enable.auto.offset.store"] == "false"
