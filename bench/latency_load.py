"""A closed-loop RESP latency client, run as its own process (issue 15's tail-latency gates).

Each of ``connections`` connections sends one request, waits for its reply and sends the
next, for ``seconds``; every request's latency is recorded. uvloop with hiredis and a
pre-encoded request keep the client cheap, and the gate spreads connections over several of
these processes so the server under test, not the client, sets the tail.

argv[1] JSON: {"host", "port", "request": latin-1 str, "connections": int, "seconds": float,
               "warmup": float}
stdout: JSON {"latencies_ms": [...], "errors": int}
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import hiredis
import orjson
import uvloop


async def _connection(doc: dict[str, Any], request: bytes, out: list[float],
                      errors: list[int], measure_from: float, stop_at: float) -> None:
    reader, writer = await asyncio.open_connection(doc["host"], doc["port"])
    parser = hiredis.Reader()
    clock = time.perf_counter
    try:
        while (start := clock()) < stop_at:
            writer.write(request)
            while (reply := parser.gets()) is False:
                data = await reader.read(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                parser.feed(data)
            if isinstance(reply, hiredis.ReplyError):
                errors[0] += 1
            if start >= measure_from:
                out.append((clock() - start) * 1000)
    finally:
        writer.close()


async def main(doc: dict[str, Any]) -> None:
    request = doc["request"].encode("latin-1")
    out: list[float] = []
    errors = [0]
    now = time.perf_counter()
    measure_from = now + doc["warmup"]
    stop_at = measure_from + doc["seconds"]
    await asyncio.gather(*(_connection(doc, request, out, errors, measure_from, stop_at)
                           for _ in range(doc["connections"])))
    sys.stdout.write(orjson.dumps({"latencies_ms": out, "errors": errors[0]}).decode() + "\n")


if __name__ == "__main__":
    uvloop.run(main(orjson.loads(sys.argv[1])))
