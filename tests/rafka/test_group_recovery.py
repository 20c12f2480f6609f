"""Issue 18: a consumer group that restarts (an app deploy) gets its partitions back, or
rafka notices that it does not and recovers.

`test_restart_loop` is the scenario of rafka-rb's `test_cgroup_reconnect_many_partitions`
in a bounded loop: N consumers of one group over 4 partitions, all closed, reopened after
0-3 s, then every newly produced message must arrive. The one stall seen is tansu's (it
keeps a member that left a forming group as the leader, see group_stall.py, which shows it
without rafka); the loop tells it from any other stall by librdkafka's `debug=cgrp` log.
`make test` runs it bounded at 60 s (pytest-timeout, plus the loop's own hard limit);
`RAFKA_GROUP_LOOP=200` runs 200 iterations (`RAFKA_GROUP_LOOP_BUDGET=<s>` ends it early),
and `RAFKA_GROUP_LOOP_OUT=<dir>` keeps rafka's log and the per-iteration results there.

`test_unassigned_consumer_is_noticed_and_recreated` makes a consumer unassignable (another
member holds every partition and stops polling) with `rafka.assignment_timeout` lowered;
`test_one_member_of_a_group_recreated_at_a_time` does it to two members of one group.
`test_tansu_keeps_a_departed_leader_without_rafka` shows the cause with plain confluent-kafka
consumers, next to a control that takes the same steps once the group has formed.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from pazari.rafka.consumer import derive_assignment_timeout
from tests.rafka.conftest import RAFKA_BIN, Rafka, rafka_config, write_config
from tests.rafka.group_stall import stale_leaders
from tests.support.daemon import DaemonFactory
from tests.support.ports import free_port
from tests.support.services import KafkaBroker, produce_messages

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
    #: The loop's hard deadline ended the wait before `give_up`: not a stall, not counted.
    cut: bool = False


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
    hard_limit: float | None = None,
) -> list[Iteration]:
    """The restart scenario, `iterations` times or until `budget` seconds are spent.

    With `fresh_group_after_stall`, an iteration whose messages did not all arrive within
    `give_up` is followed by a new group and topic (a tansu group with a stale leader stays
    stuck; see group_stall.py). `hard_limit` (seconds from the call) ends every wait, the
    warm-ups included, so the whole loop is bounded (issue 18: bounded at 60 s in make test);
    an iteration it cuts short is marked `cut`."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    called = time.monotonic()
    hard_deadline = float("inf") if hard_limit is None else called + hard_limit

    def until(seconds: float) -> float:
        return min(time.monotonic() + seconds, hard_deadline)

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
        deadline = until(give_up)
        while not warm_up <= seen and time.monotonic() < deadline:
            _poll_round(clients, f"topics:{topic}", topic, seen, wait)
        return topic, group, clients

    topic, group, clients = new_group()
    started = time.monotonic()
    results: list[Iteration] = []
    for index in range(iterations):
        if time.monotonic() - started > budget or time.monotonic() >= hard_deadline:
            break
        if fresh_group_after_stall and results and results[-1].missing and not results[-1].cut:
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
        deadline = min(produced + give_up, hard_deadline)
        seen: set[bytes] = set()
        while not values <= seen and time.monotonic() < deadline:
            _poll_round(clients, key, topic, seen, wait)
        missing = len(values - seen)
        cut = bool(missing) and time.monotonic() - produced < give_up
        results.append(Iteration(index, group, n, pause, began, time.time(),
                                 None if missing else round(time.monotonic() - produced, 2),
                                 missing, cut))
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


#: `RAFKA_GROUP_LOOP=N` runs N iterations (the issue's 50-200) instead of make test's bounded
#: loop; `RAFKA_GROUP_LOOP_BUDGET` (seconds, default unbounded) ends a long run early.
LONG_LOOP = int(os.environ.get("RAFKA_GROUP_LOOP", "0"))
#: Issue 18: the loop in make test is bounded at 60 s, rafka's start and the log analysis
#: included. pytest-timeout enforces it (fixtures too); the loop's own hard limit leaves
#: room for rafka's start (a few seconds) and an iteration begun just before it.
LOOP_TIMEOUT = 60
LOOP_HARD_LIMIT = 40.0


@pytest.mark.slow
@pytest.mark.timeout(3600 if LONG_LOOP else LOOP_TIMEOUT)
def test_restart_loop(
    daemon_factory: DaemonFactory, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Every iteration gets all its new messages, unless tansu kept a departed member as the
    group's leader (group_stall.py shows it without rafka): then rafka must have noticed
    (warned for that group) and the loop goes on with a fresh group."""
    began = time.monotonic()
    # librdkafka's cgrp debug log goes into rafka's log, set by the operator's config.
    server = spawn_debug_rafka(daemon_factory, kafka_broker, tmp_path,
                               consumer={"debug": "cgrp"})
    seed = int(os.environ.get("RAFKA_GROUP_LOOP_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    if LONG_LOOP:
        out = os.environ.get("RAFKA_GROUP_LOOP_OUT")
        progress = Path(out) / "iterations.jsonl" if out else None
        if progress is not None:
            progress.parent.mkdir(parents=True, exist_ok=True)
        budget = float(os.environ.get("RAFKA_GROUP_LOOP_BUDGET", "1e9"))
        results = run_restart_loop(server, kafka_broker, LONG_LOOP, budget=budget, give_up=60,
                                   rng=rng, fresh_group_after_stall=True, progress=progress)
    else:
        # The default assignment timeout here is 10 s (3 x session.timeout.ms of 2 s, at
        # least 10 s): a stall is noticed within give_up. BLPOPs of 0.3 s keep each member
        # polled more often than rafka-rb's 1 s. No iteration starts after 25 s, and no wait
        # goes past LOOP_HARD_LIMIT.
        results = run_restart_loop(server, kafka_broker, 50, budget=25, give_up=15, rng=rng,
                                   fresh_group_after_stall=True, wait=0.3,
                                   hard_limit=LOOP_HARD_LIMIT)
    log = server.daemon.logs()
    stale = stale_leaders(log).stale
    counted = [r for r in results if not r.cut]
    stalled = [r for r in counted if r.complete is None]
    broker_stalls = [r for r in stalled
                     if any(r.started - 1 <= s.first_seen <= r.ended for s in stale)]
    summary = (f"seed={seed} iterations={len(counted)} cut={len(results) - len(counted)} "
               f"stalled={len(stalled)} tansu_stale_leader={len(broker_stalls)} "
               f"stale_episodes={[s.stalled_for for s in stale]} "
               f"complete_max={max((r.complete or 0) for r in results) if results else None} "
               f"seconds={time.monotonic() - began:.1f}")
    print(summary)
    _keep(os.environ.get("RAFKA_GROUP_LOOP_OUT"), server, results, summary)
    assert counted, summary
    # A stall that is not tansu's stale leader would be rafka's own.
    assert stalled == broker_stalls, f"{summary}: {stalled}"
    for r in broker_stalls:
        assert _noticed(log, r.group), f"stall of {r.group} not noticed: {summary}"
    if not LONG_LOOP:
        assert time.monotonic() - began < LOOP_TIMEOUT, summary


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


@pytest.mark.parametrize(
    ("conf", "configured", "expected"),
    [
        ({"session.timeout.ms": "2000"}, 3.0, 3.0),
        ({"session.timeout.ms": "2000"}, None, 10.0),
        ({"session.timeout.ms": "6000"}, None, 18.0),
        ({}, None, 135.0),
        ({"session.timeout.ms": "45000", "max.poll.interval.ms": "60000"}, None, 60.0),
        ({"session.timeout.ms": "2000", "max.poll.interval.ms": "7000"}, None, 7.0),
        ({"session.timeout.ms": 30000, "max.poll.interval.ms": 300000}, None, 90.0),
    ],
    ids=["configured-wins", "floor-10s", "three-sessions", "librdkafka-defaults",
         "capped-by-max-poll", "max-poll-caps-the-floor", "ints"],
)  # fmt: skip
def test_derived_assignment_timeout(
    conf: dict[str, Any], configured: float | None, expected: float
) -> None:
    """rafka.assignment_timeout's default (README): 3 x session.timeout.ms, at least 10 s, at
    most max.poll.interval.ms; librdkafka's defaults are 45 s and 300 s."""
    assert derive_assignment_timeout(conf, configured) == expected


def _warnings(log: str, group: str) -> list[tuple[float, str]]:
    """(log time, consumer id) of every no-assignment warning of `group`."""
    out = []
    for line in log.splitlines():
        if "level=warning" in line and f"group {group}:" in line and "no assignment" in line:
            stamp = datetime.fromisoformat(line.split()[0][3:].replace("Z", "+00:00"))
            cid = line.split(" consumer ")[1].split(" has had")[0]
            out.append((stamp.timestamp(), cid))
    return out


@pytest.mark.slow
def test_one_member_of_a_group_recreated_at_a_time(
    daemon_factory: DaemonFactory, kafka_broker: KafkaBroker, kafka_topic: str, group: str,
    tmp_path: Path,
) -> None:
    """Two unassignable members of one group: their re-creations take turns, one timeout
    apart, never both at once (re-creating them together makes the member about to lead the
    new generation leave while it forms: tansu's stale leader). Meanwhile /debug/vars and
    /metrics show each with nothing assigned; once the holder polls again and the group
    forms, rafka_consumer_assigned_partitions and consumer_groups show the split."""
    from confluent_kafka import Consumer as KafkaConsumer

    timeout = 3.0
    server = spawn_debug_rafka(daemon_factory, kafka_broker, tmp_path,
                               rafka={"assignment_timeout": timeout})
    produce_messages(kafka_broker.bootstrap, kafka_topic,
                     [f"v{i}".encode() for i in range(8)], key=None)
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
    # The holder stops polling. Both members poll all the time, each from its own thread.
    clients = [_member(server, group) for _ in range(2)]
    cids = [f"{c.client_getname()}|{kafka_topic}" for c in clients]
    stop = threading.Event()
    got: list[bytes] = []

    def poll(client: redis.Redis) -> None:
        while not stop.is_set():
            reply = client.execute_command("BLPOP", f"topics:{kafka_topic}", 0.5)
            if reply is not None:
                got.append(reply[7])

    threads = [threading.Thread(target=poll, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(warned := _warnings(server.daemon.logs(), group)) < 4:
            assert time.monotonic() < deadline, server.daemon.logs()[-6000:]
            time.sleep(0.2)
        doc = server.debug_vars()["rafka"]["consumer_groups"]
        metrics = server.metrics()
        for cid in cids:
            assert doc[cid]["group"] == group and doc[cid]["topics"] == [kafka_topic], doc
            assert doc[cid]["assignment_timeout"] == timeout, doc
            assert doc[cid]["assigned"] is None and doc[cid]["recreations"] >= 1, doc
            assert _metric(metrics, "rafka_consumer_assigned_partitions", group=group,
                           consumer=cid) == 0.0, metrics
        # Both members were re-created, in turn: the group's re-creations are at least one
        # timeout apart in rafka (the log line follows a metadata request, so its time
        # trails the decision by that request: half a timeout of slack, where re-creating
        # both at once would put them within one 0.1 s poll slice).
        assert {cid for _, cid in warned} == set(cids), warned
        gaps = [round(b[0] - a[0], 2) for a, b in itertools.pairwise(warned)]
        print(f"re-creations of one group, seconds apart: {gaps}")
        assert all(gap >= timeout / 2 for gap in gaps), (gaps, warned)
        # The holder polls again: it gives up its partitions in the rebalance (closing it
        # instead would be the stale-leader trigger: the leader leaving a forming group) and
        # the group of three forms; each rafka member gets a share.
        deadline = time.monotonic() + 90
        while True:
            holder.poll(0.1)
            doc = server.debug_vars()["rafka"]["consumer_groups"]
            if all(doc[cid]["assigned"] for cid in cids):
                break
            assert time.monotonic() < deadline, (doc, server.daemon.logs()[-6000:])
        metrics = server.metrics()
        held = {f"{tp.topic}[{tp.partition}]" for tp in holder.assignment()}
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        holder.close()
    counts = {cid: _metric(metrics, "rafka_consumer_assigned_partitions", group=group,
                           consumer=cid) for cid in cids}
    # The partitions listed in /debug/vars are the ones counted in /metrics, and with the
    # holder's they are the topic's partitions, each once.
    assert {cid: float(len(doc[cid]["assigned"])) for cid in cids} == counts, (doc, counts)
    assert sorted([*held, *(p for cid in cids for p in doc[cid]["assigned"])]) == sorted(
        f"{kafka_topic}[{p}]" for p in range(PARTITIONS)), (doc, held)
    for cid in cids:
        assert doc[cid]["unassigned_seconds"] == 0.0, doc


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("control", [False, True],
                         ids=["leader_leaves_while_forming", "control_leader_leaves_formed"])
def test_tansu_keeps_a_departed_leader_without_rafka(
    kafka_broker: KafkaBroker, tmp_path: Path, control: bool
) -> None:
    """Issue 18's cause is tansu's, shown with plain confluent-kafka consumers and no rafka
    (group_stall.leader_leaves_while_forming): the leader L leaves while F's join makes the
    group form again; F never gets an assignment, nor does a new consumer in F's place, and
    librdkafka's cgrp log shows every JoinGroup answer naming the departed L as leader. The
    control takes the same steps but lets the group form before L leaves: F gets the
    partitions. The stall is deterministic (5 of 5 runs in the issue-18 note)."""
    argv = [sys.executable, "-m", "tests.rafka.group_stall", "--forming", "1",
            "--recreations", "1", "--bootstrap", kafka_broker.bootstrap,
            "--out", str(tmp_path)]
    if control:
        argv.append("--control")
    done = subprocess.run(argv, cwd=Path(__file__).parents[2], capture_output=True,
                          text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    (run,) = result["runs"]
    log = (tmp_path / "librdkafka.log").read_text(errors="replace")
    analysis = stale_leaders(log)
    assert analysis.leaves >= 2 and analysis.joins >= 2, result  # the log was read
    if control:
        assert run == {"follower_assigned": True, "recreated_assigned": [True]}, result
        assert analysis.stale == [], analysis
    else:
        assert run == {"follower_assigned": False, "recreated_assigned": [False]}, result
        assert [s.leader for s in analysis.stale] and all(
            s.resolved_at is None for s in analysis.stale), analysis
        # A stale leader: a JoinGroup answer named a member whose LeaveGroup was answered.
        assert result["stale_leader_episodes"] == len(analysis.stale) >= 1, result
