"""Issue 18 evidence: tansu keeps a departed member as the group leader.

`stale_leaders(log)` reads librdkafka `debug=cgrp` lines (from rafka's log or any client's
stderr) and finds JoinGroup responses whose LeaderId is a member that had already left the
group (its LeaveGroup was answered). Such a leader never sends SyncGroup, so every follower's
SyncGroup answers REBALANCE_IN_PROGRESS and the group has no assignment until tansu drops the
stale leader.

Run without rafka, plain confluent-kafka consumers doing the restart scenario against a
fresh tansu (the fixture's binary):

    .venv/bin/python -m tests.rafka.group_stall --iterations 100 --out /tmp/plain
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# `%7|1796349652.936|JOINGROUP|ce3e8d#consumer-5| [thrd:main]: JoinGroup response: ...`
_LINE = re.compile(r"^%\d\|(?P<ts>\d+\.\d+)\|(?P<fac>[A-Z_]+)\|(?P<inst>[^|]+)\| (?P<text>.*)$")
_MEMBERID = re.compile(r'updating member id "[^"]*" -> "(?P<mid>[^"(][^"]*)"')
_GROUP = re.compile(r'Group "(?P<group>[^"]+)"')
_JOINRESP = re.compile(
    r"JoinGroup response: GenerationId (?P<gen>-?\d+), .*LeaderId (?P<leader>[^ ,]*)"
)


@dataclass
class StaleLeader:
    """A stretch during which tansu named a departed member as the group's leader."""

    group: str
    leader: str
    left_at: float
    first_seen: float
    #: When some member's SyncGroup succeeded again (None: never, within the log).
    resolved_at: float | None = None
    joins: int = 0

    @property
    def stalled_for(self) -> float | None:
        return None if self.resolved_at is None else round(self.resolved_at - self.first_seen, 2)


@dataclass
class Analysis:
    stale: list[StaleLeader] = field(default_factory=list)
    leaves: int = 0
    joins: int = 0


def stale_leaders(log: str) -> Analysis:
    member_of: dict[str, str] = {}  # librdkafka instance name -> member id
    group_of: dict[str, str] = {}  # librdkafka instance name -> its group
    left: dict[str, float] = {}  # member id -> time its LeaveGroup was answered
    out = Analysis()
    open_: dict[str, StaleLeader] = {}
    for raw in log.splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        ts, fac, inst, text = float(m["ts"]), m["fac"], m["inst"], m["text"]
        gm = _GROUP.search(text)
        if gm is not None:
            group_of.setdefault(inst, gm["group"])
        group = group_of.get(inst, "")
        if fac == "MEMBERID":
            mm = _MEMBERID.search(text)
            if mm:
                member_of[inst] = mm["mid"]
        elif fac == "LEAVEGROUP" and "LeaveGroup response received" in text:
            out.leaves += 1
            mid = member_of.get(inst)
            if mid:
                left[mid] = ts
        elif fac == "JOINGROUP":
            jm = _JOINRESP.search(text)
            if jm is None or int(jm["gen"]) < 0:
                continue
            out.joins += 1
            leader = jm["leader"]
            if leader in left:
                entry = open_.get(group)
                if entry is None or entry.leader != leader:
                    entry = StaleLeader(group, leader, left[leader], ts)
                    open_[group] = entry
                    out.stale.append(entry)
                entry.joins += 1
        elif fac == "SYNCGROUP" and "SyncGroup response: Success" in text:
            # The group formed again: some member got its assignment.
            entry = open_.pop(group, None)
            if entry is not None:
                entry.resolved_at = ts
    return out


# -- the restart scenario with plain confluent-kafka consumers ------------------------------


@dataclass
class PlainIteration:
    index: int
    members: int
    pause: float
    complete: float | None
    missing: int
    group: str = ""


def _plain_consumer(bootstrap: str, group: str, topic: str) -> Any:
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": uuid.uuid4().hex[:6],
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 200,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "debug": "cgrp",
    })
    consumer.subscribe([topic])
    return consumer


def run_plain(bootstrap: str, iterations: int, give_up: float, rng: random.Random,
              members: tuple[int, ...] = (2, 3, 4), budget: float = float("inf"),
              fresh_group_after_stall: bool = False) -> list[PlainIteration]:
    """rafka's restart loop, with one librdkafka consumer per member polled in turn (as
    rafka polls one consumer per BLPOP) and every message's offset stored (RPUSH acks).

    No iteration starts after `budget` seconds. With `fresh_group_after_stall`, an
    iteration that did not get all its messages is followed by a new group and topic, as
    rafka's loop does (a stale leader keeps that group stuck)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})

    def new_group() -> tuple[str, str, list[Any]]:
        topic = f"t-plain-{uuid.uuid4().hex[:8]}"
        group = f"g-plain-{uuid.uuid4().hex[:8]}"
        producer.produce(topic, b"warm-up")  # tansu creates the topic (4 partitions)
        assert producer.flush(30) == 0
        consumers = [_plain_consumer(bootstrap, group, topic) for _ in range(2)]
        for c in consumers:
            c.poll(1.0)
        return topic, group, consumers

    topic, group, consumers = new_group()
    started = time.monotonic()
    results: list[PlainIteration] = []
    for index in range(iterations):
        if time.monotonic() - started > budget:
            break
        if fresh_group_after_stall and results and results[-1].missing:
            for c in consumers:
                c.close()
            topic, group, consumers = new_group()
        n = rng.choice(members)
        pause = round(rng.uniform(0.0, 3.0), 2)
        for c in consumers:
            c.close()  # commits the stored offsets and leaves the group
        time.sleep(pause)
        consumers = [_plain_consumer(bootstrap, group, topic) for _ in range(n)]
        for c in consumers:
            c.poll(1.0)
        values = {f"{index}-{j}".encode() for j in range(20)}
        for v in sorted(values):
            producer.produce(topic, v)
        assert producer.flush(30) == 0
        produced = time.monotonic()
        seen: set[bytes] = set()
        while not values <= seen and time.monotonic() - produced < give_up:
            for c in consumers:
                msg = c.poll(1.0)
                if msg is None or msg.error() is not None:
                    continue
                seen.add(msg.value())
                c.store_offsets(message=msg)
        missing = len(values - seen)
        results.append(PlainIteration(index, n, pause,
                                      None if missing else round(time.monotonic() - produced, 2),
                                      missing, group))
        print(json.dumps(asdict(results[-1])), file=sys.__stdout__, flush=True)
    for c in consumers:
        c.close()
    return results


def leader_leaves_while_forming(bootstrap: str, recreations: int = 3,
                                control: bool = False) -> dict[str, Any]:
    """The stall in its smallest form, without rafka. L is the group's leader; F joins, so
    the group is forming again; L closes (its LeaveGroup arrives while the group forms). F
    never gets an assignment, and leaving and joining again (a new consumer) does not help:
    every JoinGroup answer still names L as the leader.

    With `control`, L is polled while F joins (it rejoins, the group forms and F gets its
    share) before L closes: the same steps, but L leaves a formed group."""
    from confluent_kafka import Consumer, Producer

    topic = f"t-forming-{uuid.uuid4().hex[:8]}"
    group = f"g-forming-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"x")
    assert producer.flush(30) == 0

    def member(name: str) -> tuple[Any, list[int]]:
        got: list[int] = []
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                             "client.id": name, "session.timeout.ms": 2000,
                             "heartbeat.interval.ms": 500, "debug": "cgrp"})
        consumer.subscribe([topic], on_assign=lambda _c, tps: got.append(len(tps)))
        return consumer, got

    def poll_until(consumer: Any, got: list[int], seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not got and time.monotonic() < end:
            consumer.poll(0.1)
        return bool(got)

    leader, led = member("L")
    assert poll_until(leader, led, 30), "the first member never got the partitions"
    follower, followed = member("F")
    if control:
        end = time.monotonic() + 30
        while not followed and time.monotonic() < end:  # both polled: the group forms
            follower.poll(0.1)
            leader.poll(0.1)
        assert followed, "control: the group never formed with L and F"
        followed.clear()
    else:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # F's JoinGroup: the group is forming, L is not polled
            follower.poll(0.1)
    leader.close()
    out: dict[str, Any] = {"follower_assigned": poll_until(follower, followed, 10),
                           "recreated_assigned": []}
    for attempt in range(recreations):
        follower.close()
        follower, followed = member(f"F{attempt}")
        out["recreated_assigned"].append(poll_until(follower, followed, 10))
    follower.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="plain-group-"))
    parser.add_argument("--analyze", help="only analyze this log file")
    parser.add_argument("--forming", type=int, metavar="N",
                        help="run leader_leaves_while_forming N times instead of the loop")
    parser.add_argument("--recreations", type=int, default=3,
                        help="with --forming: new follower consumers tried after the stall")
    parser.add_argument("--control", action="store_true",
                        help="with --forming: L leaves after the group formed")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="loop: start no iteration after this many seconds")
    parser.add_argument("--fresh-group-after-stall", action="store_true",
                        help="loop: a new group and topic after an iteration that stalled")
    parser.add_argument("--bootstrap", help="use this broker instead of starting a tansu")
    args = parser.parse_args()
    if args.analyze:
        analysis = stale_leaders(Path(args.analyze).read_text(errors="replace"))
        print(json.dumps({"leaves": analysis.leaves, "joins": analysis.joins,
                          "stale": [{**asdict(s), "stalled_for": s.stalled_for}
                                    for s in analysis.stale]}, indent=1))
        return 0
    from tests.support.services import KafkaBroker, _start_on_free_port, tansu_binary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    broker: KafkaBroker | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        broker = _start_on_free_port(lambda p: KafkaBroker(tansu_binary(), p, out))
        bootstrap = broker.bootstrap
    # librdkafka's debug log goes to stderr: keep it in a file for the analysis.
    log_path = out / "librdkafka.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    if args.forming:
        try:
            runs = [leader_leaves_while_forming(bootstrap, args.recreations, args.control)
                    for _ in range(args.forming)]
        finally:
            if broker is not None:
                broker.stop()
        analysis = stale_leaders(log_path.read_text(errors="replace"))
        print(json.dumps({"runs": runs, "stale_leader_episodes": len(analysis.stale),
                          "unresolved": sum(s.resolved_at is None for s in analysis.stale)}),
              file=sys.__stdout__)
        return 0
    try:
        results = run_plain(bootstrap, args.iterations, args.give_up, random.Random(args.seed),
                            budget=args.budget,
                            fresh_group_after_stall=args.fresh_group_after_stall)
    finally:
        if broker is not None:
            broker.stop()
    analysis = stale_leaders(log_path.read_text(errors="replace"))
    stale_groups = {s.group for s in analysis.stale}
    slow = [r for r in results if r.complete is None or r.complete > 10]
    summary = {
        "iterations": len(results),
        "never_complete": sum(r.complete is None for r in results),
        # Stalled iterations whose group had a departed member named as its leader.
        "stalls_with_stale_leader": sum(r.complete is None and r.group in stale_groups
                                        for r in results),
        "over_10s": len(slow),
        "stale_leader_episodes": len(analysis.stale),
        "stale_unresolved": sum(s.resolved_at is None for s in analysis.stale),
        "stalled_for": [s.stalled_for for s in analysis.stale],
    }
    (out / "iterations.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), file=sys.__stdout__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
