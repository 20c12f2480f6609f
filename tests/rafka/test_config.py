"""The rafka config file: merge rules (spec §2.2) and librdkafka's own checks."""

from __future__ import annotations

from typing import Any

import pytest

from pazari.rafka.config import RafkaConfig, check_librdkafka
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
