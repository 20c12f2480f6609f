"""Issue 18: a consumer group that restarts (an app deploy) gets its partitions back, or
rafka notices that it does not and recovers.

`test_restart_loop` is the scenario of rafka-rb's `test_cgroup_reconnect_many_partitions`
in a bounded loop: N consumers of one group over 4 partitions, all closed, reopened after
0-3 s, then every newly produced message must arrive. The one stall seen is tansu's (it
keeps a member that left a forming group as the leader, see group_stall.py, which shows it
without rafka); the loop tells it from any other stall by librdkafka's `debug=cgrp` log.
`make test` runs it for about 35 s; `RAFKA_GROUP_LOOP=200` runs 200 iterations, and
`RAFKA_GROUP_LOOP_OUT=<dir>` keeps rafka's log and the per-iteration results there.

`test_unassigned_consumer_is_noticed_and_recreated` makes a consumer unassignable (another
member holds every partition and stops polling) with `rafka.assignment_timeout` lowered.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from tests.rafka.conftest import RAFKA_BIN, Rafka, rafka_config, write_config
from tests.rafka.group_stall import stale_leaders
from tests.support.daemon import DaemonFactory
from tests.support.ports import free_port
from tests.support.services import KafkaBroker

PARTITIONS = 4


def spawn_debug_rafka(
    daemon_factory: DaemonFactory,
    broker: KafkaBroker,
    directory: Path,
    consumer: dict[str, Any] | None = None,
    rafka: dict[str, Any] | None = None,
    general: dict[str, Any] | None = None,
) -> Rafka:
    """A rafka daemon at `--log-level debug`, with extra operator config."""
    doc = rafka_config(broker.bootstrap, rafka)
    doc["consumer"].update(consumer or {})
    doc["general"].update(general or {})
    path = write_config(directory, doc)
    port, metrics_port = free_port(), free_port()
    argv = [
        RAFKA_BIN, "--host", "127.0.0.1", "--port", str(port), "--config", str(path),
        "--metrics-addr", f"127.0.0.1:{metrics_port}", "--log-level", "debug",
    ]  # fmt: skip
    daemon = daemon_factory(argv, timeout=60.0)
    return Rafka(daemon, "127.0.0.1", port, metrics_port, path)


@dataclass
class Iteration:
    index: int
    group: str
    members: int
    pause: float
    #: Wall-clock bounds of the iteration (the close to the last poll), for the log analysis.
    started: float
    ended: float
    #: Seconds from the produce to the last new message; None if they never all arrived.
    complete: float | None
    missing: int


def _member(server: Rafka, group: str) -> redis.Redis:
    client = server.redis(single_connection_client=True, socket_timeout=30)
    client.client_setname(f"{group}:{uuid.uuid4().hex[:6]}")
    return client


def _poll_round(clients: list[redis.Redis], key: str, topic: str, seen: set[bytes],
                wait: float = 1.0) -> None:
    """One BLPOP (1 s) per member, in turn, as rafka-rb's test does; every message acked."""
    for client in clients:
        reply = client.execute_command("BLPOP", key, wait)
        if reply is None:
            continue
        seen.add(reply[7])
        client.execute_command("RPUSH", "acks", f"{topic}:{reply[3]}:{reply[5]}")


def run_restart_loop(
    server: Rafka,
    broker: KafkaBroker,
    iterations: int,
    budget: float,
    give_up: float,
    rng: random.Random,
    members: tuple[int, ...] = (2, 3, 4),
    max_pause: float = 3.0,
    fresh_group_after_stall: bool = False,
    progress: Path | None = None,
    wait: float = 1.0,
) -> list[Iteration]:
    """The restart scenario, `iterations` times or until `budget` seconds are spent.

    With `fresh_group_after_stall`, an iteration whose messages did not all arrive within
    `give_up` is followed by a new group and topic (a tansu group with a stale leader stays
    stuck; see group_stall.py)."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})

    def new_group() -> tuple[str, str, list[redis.Redis]]:
        topic = f"t-group-loop-{uuid.uuid4().hex[:8]}"
        group = f"g-loop-{uuid.uuid4().hex[:8]}"
        # tansu creates the topic (4 partitions) on its first produce. As rafka-rb's test,
        # the first members consume a first batch (so the group has formed) before the loop.
        warm_up = {f"warm-up-{i}".encode() for i in range(2 * PARTITIONS)}
        for value in sorted(warm_up):
            producer.produce(topic, value, key=value)
        assert producer.flush(30) == 0
        clients = [_member(server, group) for _ in range(2)]
        seen: set[bytes] = set()
        deadline = time.monotonic() + give_up
        while not warm_up <= seen and time.monotonic() < deadline:
            _poll_round(clients, f"topics:{topic}", topic, seen, wait)
        return topic, group, clients

    topic, group, clients = new_group()
    started = time.monotonic()
    results: list[Iteration] = []
    for index in range(iterations):
        if time.monotonic() - started > budget:
            break
        if fresh_group_after_stall and results and results[-1].missing:
            for client in clients:
                client.close()
            topic, group, clients = new_group()
        key = f"topics:{topic}"
        n = rng.choice(members)
        pause = round(rng.uniform(0.0, max_pause), 2)
        began = time.time()
        for client in clients:
            client.execute_command("QUIT")  # rafka-rb's close
            client.close()
        time.sleep(pause)  # the deploy: the old members are gone, the new ones not yet up
        clients = [_member(server, group) for _ in range(n)]
        for client in clients:
            client.execute_command("BLPOP", key, wait)
        values = {f"{index}-{j}".encode() for j in range(5 * PARTITIONS)}
        for value in sorted(values):
            producer.produce(topic, value)
        assert producer.flush(30) == 0
        produced = time.monotonic()
        seen: set[bytes] = set()
        while not values <= seen and time.monotonic() - produced < give_up:
            _poll_round(clients, key, topic, seen, wait)
        missing = len(values - seen)
        results.append(Iteration(index, group, n, pause, began, time.time(),
                                 None if missing else round(time.monotonic() - produced, 2),
                                 missing))
        if progress is not None:
            with progress.open("a") as out:
                out.write(json.dumps(asdict(results[-1])) + "\n")
    for client in clients:
        client.close()
    return results


def _keep(out: str | None, server: Rafka, results: list[Iteration], summary: str) -> None:
    if not out:
        return
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "iterations.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    (target / "summary.txt").write_text(summary + "\n")
    shutil.copy(server.daemon.stdout_path, target / "rafka.log")


def _noticed(log: str, group: str) -> bool:
    """rafka's warning for a consumer of `group` without an assignment."""
    return any("level=warning" in line and f"group {group}:" in line and "no assignment" in line
               for line in log.splitlines())


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_restart_loop(
    daemon_factory: DaemonFactory, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Every iteration gets all its new messages, unless tansu kept a departed member as the
    group's leader (group_stall.py shows it without rafka): then rafka must have noticed
    (warned for that group) and the loop goes on with a fresh group."""
    iterations = int(os.environ.get("RAFKA_GROUP_LOOP", "0"))
    long_run = iterations > 0
    # librdkafka's cgrp debug log goes into rafka's log, set by the operator's config.
    server = spawn_debug_rafka(daemon_factory, kafka_broker, tmp_path,
                               consumer={"debug": "cgrp"})
    seed = int(os.environ.get("RAFKA_GROUP_LOOP_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    if long_run:
        out = os.environ.get("RAFKA_GROUP_LOOP_OUT")
        progress = Path(out) / "iterations.jsonl" if out else None
        if progress is not None:
            progress.parent.mkdir(parents=True, exist_ok=True)
        results = run_restart_loop(server, kafka_broker, iterations, budget=1e9, give_up=60,
                                   rng=rng, fresh_group_after_stall=True, progress=progress)
    else:
        # Within make test's budget: 60 s in all. The default assignment timeout here is
        # 10 s (3 x session.timeout.ms of 2 s, at least 10 s): a stall is noticed in time.
        # BLPOPs of 0.3 s keep each member polled more often than rafka-rb's 1 s.
        results = run_restart_loop(server, kafka_broker, 50, budget=25, give_up=15, rng=rng,
                                   fresh_group_after_stall=True, wait=0.3)
    log = server.daemon.logs()
    stale = stale_leaders(log).stale
    stalled = [r for r in results if r.complete is None]
    broker_stalls = [r for r in stalled
                     if any(r.started - 1 <= s.first_seen <= r.ended for s in stale)]
    summary = (f"seed={seed} iterations={len(results)} stalled={len(stalled)} "
               f"tansu_stale_leader={len(broker_stalls)} "
               f"stale_episodes={[s.stalled_for for s in stale]} "
               f"complete_max={max((r.complete or 0) for r in results)}")
    print(summary)
    _keep(os.environ.get("RAFKA_GROUP_LOOP_OUT"), server, results, summary)
    assert results, summary
    # A stall that is not tansu's stale leader would be rafka's own.
    assert stalled == broker_stalls, f"{summary}: {stalled}"
    for r in broker_stalls:
        assert _noticed(log, r.group), f"stall of {r.group} not noticed: {summary}"


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text `text` (None if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        sample, _, rest = head.partition("{")
        if sample != name:
            continue
        have = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if have == want:
            return float(value)
    return None


def test_unassigned_consumer_is_noticed_and_recreated(
    daemon_factory: DaemonFactory, kafka_broker: KafkaBroker, kafka_topic: str, group: str,
    tmp_path: Path,
) -> None:
    """A member that holds every partition and stops polling (paused) keeps the group from
    forming: rafka's consumer of that group warns, counts, re-creates itself with backoff and
    answers nil meanwhile; once the holder polls again, the consumer gets its partitions."""
    from confluent_kafka import Consumer as KafkaConsumer

    server = spawn_debug_rafka(daemon_factory, kafka_broker, tmp_path,
                               rafka={"assignment_timeout": 3})
    # Keyed, so the messages spread over the partitions.
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "acks": "all"})
    per_partition: dict[int, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        per_partition[msg.partition()] = per_partition.get(msg.partition(), 0) + 1

    for i in range(40):
        producer.produce(kafka_topic, f"v{i}".encode(), key=f"k{i}".encode(),
                         on_delivery=delivered)
    assert producer.flush(30) == 0
    assigned: list[int] = []
    holder = KafkaConsumer({
        "bootstrap.servers": kafka_broker.bootstrap, "group.id": group,
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    holder.subscribe([kafka_topic],
                     on_assign=lambda _c, tps: assigned.extend(tp.partition for tp in tps))
    deadline = time.monotonic() + 60
    while len(assigned) < PARTITIONS:
        assert time.monotonic() < deadline, f"holder never got the partitions: {assigned}"
        holder.poll(0.2)
    # The holder now stops polling: it cannot hand its partitions back in a rebalance.
    client = _member(server, group)
    name = client.client_getname()
    cid = f"{name}|{kafka_topic}"
    key = f"topics:{kafka_topic}"
    warnings: list[str] = []
    deadline = time.monotonic() + 60
    while len(warnings) < 2:
        assert time.monotonic() < deadline, server.daemon.logs()[-6000:]
        # Nil, not an error, while the consumer has nothing assigned.
        assert client.execute_command("BLPOP", key, 1) is None
        warnings = [line for line in server.daemon.logs().splitlines()
                    if "level=warning" in line and "no assignment" in line]
    first, second = warnings[:2]
    for line in warnings[:2]:
        assert f"group {group}" in line and f"consumer {cid}" in line
        assert f"topics {kafka_topic}" in line
    # Backoff: the second re-creation waits twice as long as the first.
    assert "next check in 6s" in first and "next check in 12s" in second, warnings
    metrics = server.metrics()
    waited = _metric(metrics, "rafka_consumer_unassigned_seconds", group=group, consumer=cid)
    # The whole wait, across both re-creations (3 s, then 6 s more).
    assert waited is not None and waited >= 9, metrics
    assert (_metric(metrics, "rafka_consumer_assignment_timeouts_total") or 0) >= 2, metrics
    # The second re-creation (leave, then a new consumer) completes while BLPOP answers nil.
    deadline = time.monotonic() + 30
    while (_metric(server.metrics(), "rafka_consumer_recreations_total") or 0) < 2:
        assert time.monotonic() < deadline, server.daemon.logs()[-6000:]
        assert client.execute_command("BLPOP", key, 1) is None
    listing = client.execute_command("CLIENT", "LIST").decode()
    (line,) = [row for row in listing.splitlines() if f"consumer={cid}" in row]
    assert f"group={group}" in line and "assigned=-" in line and "recreations=" in line
    # The holder polls again: it gives up its partitions (a rebalance), the group forms and
    # rafka's re-created consumer gets a share and consumes.
    got: set[bytes] = set()
    deadline = time.monotonic() + 90
    while not got:
        assert time.monotonic() < deadline, server.daemon.logs()[-6000:]
        holder.poll(0.1)
        reply = client.execute_command("BLPOP", key, 1)
        if reply is not None:
            got.add(reply[7])
    metrics = server.metrics()
    assert _metric(metrics, "rafka_consumer_unassigned_seconds", group=group,
                   consumer=cid) == 0.0
    listing = client.execute_command("CLIENT", "LIST").decode()
    (line,) = [row for row in listing.splitlines() if f"consumer={cid}" in row]
    assert "assigned=-" not in line and f"assigned={kafka_topic}[" in line
    # Lag, per assigned partition: what it holds beyond the message handed out so far
    # ("?" for a partition nothing was handed out from yet).
    partition = reply[3]
    name = f"{kafka_topic}[{partition}]"
    deadline = time.monotonic() + 20
    while True:
        listing = client.execute_command("CLIENT", "LIST").decode()
        (line,) = [row for row in listing.splitlines() if f"consumer={cid}" in row]
        lag = dict(kv.split("=") for kv in line.split(" lag=")[1].split()[0].split(",") if kv)
        if lag.get(name, "?") != "?":
            break
        assert time.monotonic() < deadline, line
        time.sleep(0.2)
    assigned_now = line.split(" assigned=")[1].split()[0].split(",")
    assert sorted(lag) == sorted(assigned_now), line
    assert all(v == "?" or int(v) >= 0 for v in lag.values()), line
    assert int(lag[name]) == per_partition[partition] - 1, (line, per_partition)
    holder.close()
