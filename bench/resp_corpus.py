"""Deterministic RESP request corpus for the parser benchmarks (a rafka client's traffic).

A pipelined multibulk stream mixing what rafka-rb sends (rafka.md §1.3-1.5): produces
``RPUSHX topics:<topic> <value>``, consumes
``BLPOP topics:<topic>:{"auto.offset.reset":"earliest"} 5`` and acks
``RPUSH acks <topic>:<partition>:<offset>``. Most produced values are 100 bytes; one in 50 is
1 KiB and one in 500 is 64 KiB (issue 15: large values cross read boundaries, as real
payloads do, and a parser that copies them twice shows it).
"""

from __future__ import annotations

import random

from pazari.resp import _parser_py

CORPUS_SIZE = 1 << 20  # 1 MiB
_TOPICS = [f"orders-{i}" for i in range(8)] + ["greetings", "clicks.v2", "payments"]


def _value_size(rng: random.Random) -> int:
    pick = rng.random()
    if pick < 0.002:
        return 64 * 1024
    if pick < 0.022:
        return 1024
    return 100


def commands(seed: int = 0x5EED) -> list[list[bytes]]:
    """The commands of the corpus, in stream order (for comparing parser output)."""
    rng = random.Random(seed)
    out: list[list[bytes]] = []
    size = 0
    while True:
        topic = rng.choice(_TOPICS).encode()
        kind = rng.random()
        if kind < 0.5:
            cmd = [b"RPUSHX", b"topics:" + topic, rng.randbytes(_value_size(rng))]
        elif kind < 0.75:
            key = b'topics:%s:{"auto.offset.reset":"earliest"}' % topic
            cmd = [b"BLPOP", key, b"5"]
        else:
            ack = b"%s:%d:%d" % (topic, rng.randrange(12), rng.randrange(10**9))
            cmd = [b"RPUSH", b"acks", ack]
        size += len(_parser_py.encode_command(*cmd))
        if size > CORPUS_SIZE:
            return out
        out.append(cmd)


def stream(seed: int = 0x5EED) -> bytes:
    """The corpus as one pipelined byte stream of at most 1 MiB."""
    return b"".join(_parser_py.encode_command(*cmd) for cmd in commands(seed))
