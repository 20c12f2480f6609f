"""A BLPOP + ack load client for the consume gate, run as its own process (issue 15).

The gate's earlier client was plain asyncio Python in the pytest process: against
redis-server it used 1.25 s of CPU while the server used 0.66 s, so the client set the pace
and pulled the ratio towards 1. This one runs on uvloop with hiredis replies and
pre-encoded requests, and the gate spreads the connections over several such processes.

Protocol with the parent, one line each on stdout/stdin:
    argv[1]  JSON: {"host", "port", "clients": [{"setup": [...], "pop": str,
             "ack": "rafka" | "redis", "topic": str}], "n": int}
    -> "ready"   every client has popped and acked its first message (warm-up)
    <- "go"
    -> JSON {"messages": int, "seconds": float, "first_message_s": [float, ...]}
             messages after the warm-up one; per client, the seconds from connecting to its
             first message (on a cold topic: the group join and the first fetch)
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import hiredis
import orjson
import uvloop

from pazari.resp import encode_command


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._r = reader
        self._w = writer
        self._parser = hiredis.Reader()

    async def call(self, request: bytes) -> Any:
        self._w.write(request)
        while (reply := self._parser.gets()) is False:
            data = await self._r.read(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self._parser.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"server error: {reply}")
        return reply


def _ack(kind: str, topic: str, reply: Any) -> bytes:
    if kind == "rafka":  # [topic, t, partition, p, offset, o, value, v]; p and o are integers
        return encode_command("RPUSH", "acks", b"%s:%d:%d" % (topic.encode(), reply[3], reply[5]))
    return encode_command("RPUSH", "acks", reply[1])


async def _client(host: str, port: int, spec: dict[str, Any], n: int,
                  ready: asyncio.Event, go: asyncio.Event, first: list[float]) -> int:
    begin = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    conn = Connection(reader, writer)
    try:
        for request in spec["setup"]:
            await conn.call(encode_command(*request))
        pop = encode_command("BLPOP", spec["pop"], "5")
        got = 0
        while got == 0:  # warm-up: a rafka consumer joins its group here
            reply = await conn.call(pop)
            if reply is not None:
                await conn.call(_ack(spec["ack"], spec["topic"], reply))
                got = 1
        first.append(time.perf_counter() - begin)
        ready.set()
        await go.wait()
        while got < n:
            reply = await conn.call(pop)
            if reply is None:
                break
            await conn.call(_ack(spec["ack"], spec["topic"], reply))
            got += 1
        return got - 1
    finally:
        writer.close()


async def main(doc: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    readies = [asyncio.Event() for _ in doc["clients"]]
    first: list[float] = []
    tasks = [asyncio.create_task(_client(doc["host"], doc["port"], spec, doc["n"], r, go, first))
             for spec, r in zip(doc["clients"], readies, strict=True)]
    waiting = asyncio.gather(*(r.wait() for r in readies))
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:  # a client failed during the warm-up: its exception ends us
        waiting.cancel()
        for t in tasks:
            if t.done():
                t.result()
    print("ready", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected go, got {line!r}")
    start = time.perf_counter()
    go.set()
    counts = await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    result = {"messages": sum(counts), "seconds": seconds, "first_message_s": first}
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    uvloop.run(main(orjson.loads(sys.argv[1])))
