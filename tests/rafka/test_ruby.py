"""Ruby end to end: redis-rb (Debian `ruby-redis`) sending the commands exactly as the
rafka-rb gem does (spec §4), against `rafka --host 127.0.0.1 --port P --config C`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rafka.conftest import RAFKA_BIN, rafka_config, write_config
from tests.support.daemon import DaemonFactory
from tests.support.ports import free_port
from tests.support.services import KafkaBroker, missing_dependency

SCRIPT = Path(__file__).parent / "ruby" / "rafka_e2e.rb"
INSTALL = "apt-get install -y ruby ruby-redis"


@pytest.fixture
def ruby() -> str:
    binary = shutil.which("ruby")
    if binary is None:
        missing_dependency(f"`ruby` not found; install it with: {INSTALL}")
        raise AssertionError("unreachable")
    probe = subprocess.run([binary, "-e", 'require "redis"; print Redis::VERSION'],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        missing_dependency(f"redis-rb is missing; install it with: {INSTALL}")
    return binary


def test_rafka_rb_commands_over_redis_rb(
    ruby: str,
    daemon_factory: DaemonFactory,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    group: str,
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, rafka_config(kafka_broker.bootstrap))
    port = free_port()
    daemon = daemon_factory(
        [RAFKA_BIN, "--host", "127.0.0.1", "--port", str(port), "--config", str(config)],
        timeout=60.0,
    )
    done = subprocess.run([ruby, str(SCRIPT), "127.0.0.1", str(port), kafka_topic, group],
                          capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr + daemon.logs()[-5000:]
    out = json.loads(done.stdout)
    assert out["ping"] == "PONG"
    assert out["produce"] == [1] * 10 and out["produce_keyed"] == [1] * 6
    assert out["flush"] == 0
    assert out["produce_error"] == (
        "First argument must be in the form of 'topics:<topic>' or 'topics:<topic>:<key>'"
    )
    assert out["blpop_arg"] == f'topics:{kafka_topic}:{{"auto.offset.reset":"earliest"}}'
    assert out["name"] == f"{group}:one"
    # Consumed in a group, each committed: 8 distinct messages with their coordinates.
    consumed = out["consumed"]
    assert len(consumed) == 8
    assert all(t == kafka_topic and p in range(4) and o >= 0 for t, p, o, _ in consumed)
    assert out["stats"] == {"producer.unflushed.messages": "0",
                            "producer.delivery.errors": "0",
                            "producer.unknown.events": "0"}
    assert out["del_stats"] == 1
    assert out["duplicate_id"] == f"MiniRafka::ConsumeError: id {group}:one is already taken"
    # The batch loop got the other 8, in batches of at most 5.
    batches = out["batches"]
    assert all(len(b) <= 5 for b in batches)
    values = [v for _, _, _, v in consumed] + [v for b in batches for v in b]
    assert sorted(values) == sorted([f"plain-{i}" for i in range(10)]
                                    + [f"keyed-{i}" for i in range(6)])
    # Everything was committed: the next member of the group sees only the new messages.
    assert out["flush2"] == 0
    assert out["after_commit"] == ["sentinel", "sentinel"]
    assert out["producer_close"] == "OK"
