"""rafka under hostile clients (issue 12): every finding, named after the attack.

Each test talks to a real `rafka` daemon against the session's tansu broker; the ones that
reconfigure the server start their own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.rafka.conftest import Rafka, Raw, StartRafka
from tests.support.services import KafkaBroker, produce_messages

# -- client config allowlist ---------------------------------------------------------------

_CONSTRUCTOR = r"""
#include <stdio.h>
__attribute__((constructor)) static void pwned(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("pwned", f); fclose(f); }
}
int conf_init(void *conf, void **plug_opaquep, char *errstr, size_t errstr_size) { return 0; }
"""


def _evil_library(directory: Path, marker: Path) -> Path:
    """A shared library whose constructor writes ``marker`` when anything loads it."""
    source = directory / f"{marker.stem}.c"
    source.write_text(_CONSTRUCTOR % marker)
    library = directory / f"{marker.stem}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def _named_raw(server: Rafka, name: str) -> Raw:
    raw = server.raw()
    assert raw.call("CLIENT", "SETNAME", name) == b"$2\r\nOK\r\n"
    return raw


def test_plugin_library_paths_loads_no_code(
    start_rafka: StartRafka, tmp_path: Path, kafka_topic: str, group: str
) -> None:
    # Positive control: librdkafka really runs the constructor of a plugin it is given, so
    # the refusal below is what keeps it out of the server.
    control = tmp_path / "control-marker"
    control_lib = _evil_library(tmp_path, control)
    subprocess.run(
        [sys.executable, "-c", "import confluent_kafka,sys; "
         "confluent_kafka.Consumer({'group.id':'x','plugin.library.paths':sys.argv[1]})",
         str(control_lib)],
        check=False, capture_output=True, timeout=60,
    )  # fmt: skip
    assert control.exists(), "the positive control did not load the library"
    marker = tmp_path / "server-marker"
    library = _evil_library(tmp_path, marker)
    # Even an operator allowing every key cannot let plugin.* through.
    for allow in ([], ["*"], ["plugin.*"]):
        server = start_rafka({"client_config_allow": allow})
        for spelling in ("plugin.library.paths", "PLUGIN.library.paths"):
            raw = _named_raw(server, f"{group}:{spelling}{len(allow)}")
            key = f'topics:{kafka_topic}:{{"{spelling}":"{library}"}}'
            assert raw.call("BLPOP", key, "1") == (
                f"-CONS Config key not allowed: {spelling}\r\n".encode()
            )
        assert not marker.exists()
        server.daemon.stop()
    assert not marker.exists()


@pytest.mark.parametrize(
    "key",
    ["group.id", "enable.auto.offset.store", "enable.auto.commit", "auto.commit.enable",
     "bootstrap.servers", "metadata.broker.list", "plugin.library.paths",
     "sasl.oauthbearer.oidc.client.id", "sasl.password", "ssl.key.location", "debug",
     "group.instance.id", "client.id"],
)  # fmt: skip
def test_never_allowed_client_keys(start_rafka: StartRafka, kafka_topic: str, key: str) -> None:
    server = start_rafka({"client_config_allow": ["*"]})
    raw = _named_raw(server, "g-never:c")
    assert raw.call("BLPOP", f'topics:{kafka_topic}:{{"{key}":"x"}}', "1") == (
        f"-CONS Config key not allowed: {key}\r\n".encode()
    )


def test_client_config_allow_widens(
    start_rafka: StartRafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    produce_messages(kafka_broker.bootstrap, kafka_topic, ["v"])
    key = f'topics:{kafka_topic}:{{"check.crcs":true,"fetch.wait.max.ms":50}}'
    default = start_rafka()
    raw = _named_raw(default, f"{group}:a")
    assert raw.call("BLPOP", key, "1") == b"-CONS Config key not allowed: check.crcs\r\n"
    widened = start_rafka({"client_config_allow": ["check.*"]})
    raw = _named_raw(widened, f"{group}:b")
    deadline = time.monotonic() + 60
    while (reply := raw.call("BLPOP", key, "1")) == b"*-1\r\n":
        assert time.monotonic() < deadline
    assert reply.startswith(b"*8\r\n"), reply


def test_enable_auto_offset_store_cannot_break_at_least_once(
    rafka: Rafka, kafka_broker: KafkaBroker, kafka_topic: str, group: str
) -> None:
    values = [f"m{i}".encode() for i in range(20)]
    produce_messages(kafka_broker.bootstrap, kafka_topic, values)
    first = _named_raw(rafka, f"{group}:first")
    evil = f'topics:{kafka_topic}:{{"enable.auto.offset.store":true,"auto.commit.interval.ms":50}}'
    assert first.call("BLPOP", evil, "1") == (
        b"-CONS Config key not allowed: enable.auto.offset.store\r\n"
    )
    # With the server's config the consumer prefetches but acks nothing...
    deadline = time.monotonic() + 60
    while (reply := first.call("BLPOP", f"topics:{kafka_topic}", "1")) == b"*-1\r\n":
        assert time.monotonic() < deadline
    assert reply.startswith(b"*8\r\n")
    assert first.call("QUIT") == b"$2\r\nOK\r\n"
    # ...so a second consumer of the group gets every message again.
    second = rafka.redis(single_connection_client=True)
    assert second.execute_command("CLIENT", "SETNAME", f"{group}:second") == b"OK"
    seen: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(seen) < len(values):
        assert time.monotonic() < deadline, f"only {len(seen)} of {len(values)} redelivered"
        got = second.execute_command("BLPOP", f"topics:{kafka_topic}", 1)
        if got is not None:
            seen.add(got[7])
    assert seen == set(values)
