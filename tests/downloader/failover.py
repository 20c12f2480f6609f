"""The failover run of issue 16, shared by the Redis Cluster and Sentinel tests: an api, two
processors and two notifiers on highly available Redis; 5,000 jobs over 50 aggregations
(limit 10) posted against a file server answering 10 KiB, as in the bench's gate; Redis is
disrupted while the jobs are processed; then every job must have been called back once,
or at worst twice with the same payload.

The file server and the receiver are separate uvloop processes, as in the bench (importing
the bench module here would need its ``gate`` marker); the receiver keeps every callback
(the bench's counts distinct jobs only) and GET /stats answers the counts.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.daemon import DaemonFactory
from tests.support.ports import free_port, wait_for
from tests.support.services import RedisServer

from .conftest import DOWNLOADER_BIN, make_config, write_config

JOBS, AGGRS, LIMIT = 5000, 50, 10
HOLD = 2.0

# /f/<n>?hold=<s> answers 10 KiB after ``hold`` seconds.
SERVER = r"""
import asyncio, sys
import uvloop
from aiohttp import web
BODY = b"d" * 10240
async def f(request):
    await asyncio.sleep(float(request.query.get("hold", "0")))
    return web.Response(body=BODY, content_type="application/octet-stream")
app = web.Application()
app.add_routes([web.get("/f/{n}", f)])
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            backlog=4096)
"""

# Every callback is kept: per job, how many came and whether their payloads differ.
RECEIVER = r"""
import asyncio, sys
import httptools, orjson, uvloop
seen = {}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
class Receiver(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body = []
    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
    def on_body(self, body):
        self.body.append(body)
    def on_message_complete(self):
        raw, self.body = b"".join(self.body), []
        if self.parser.get_method() == b"GET":
            docs = seen.values()
            stats = orjson.dumps({
                "distinct": len(seen), "total": sum(len(d) for d in docs),
                "duplicated": sum(len(d) > 1 for d in docs),
                "max_per_job": max((len(d) for d in docs), default=0),
                "differing": sum(any(x != d[0] for x in d) for d in docs),
                "ok": sum(d[0]["success"] for d in docs)})
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(stats), stats))
            return
        doc = orjson.loads(raw)
        seen.setdefault(doc["job_id"], []).append(doc)
        self.transport.write(OK)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
uvloop.run(main())
"""


def _spawn_server(script: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", script, str(port)])
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "/f/x", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(up, 20, "test server")
    except BaseException:
        _stop_server(proc)
        raise
    return proc, url


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


async def post_all(api_url: str, bodies: list[bytes], concurrency: int) -> list[str]:
    ids: list[str] = []
    todo = iter(bodies)
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for body in todo:
                async with session.post(api_url + "/download", data=body) as resp:
                    text = await resp.text()
                    assert resp.status == 201, text
                    ids.append(json.loads(text)["id"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids


def receiver_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "/stats", timeout=10) as resp:
        out: dict[str, int] = json.loads(resp.read())
        return out


@dataclass
class Run:
    api_url: str
    receiver_url: str
    posted: asyncio.Event

    async def stats(self) -> dict[str, int]:
        return await asyncio.to_thread(receiver_stats, self.receiver_url)

    async def wait_distinct(self, n: int, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            if stats["distinct"] >= n:
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"{stats['distinct']} of {n} jobs called back: {stats}")
            await asyncio.sleep(0.1)


async def failover_run(daemon_factory: DaemonFactory, tmp_path: Path, any_redis: RedisServer,
                       redis_section: dict[str, Any],
                       disrupt: Callable[[Run], Awaitable[dict[str, Any]]],
                       quiet: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
    """Run the workload; ``disrupt`` runs from the first POST on (``run.posted`` is set once
    every job is acknowledged) and says what it did;
    ``quiet`` tells when nothing is queued or in flight any more. The counts come back."""
    files, file_url = _spawn_server(SERVER)
    receiver, receiver_url = _spawn_server(RECEIVER)
    try:
        cfg = make_config(
            tmp_path, any_redis,
            processor={"max_concurrency": 1000, "scan_interval": 0.1, "poll_interval": 0.02,
                       "stats_interval": 1000},
            notifier={"concurrency": 100, "poll_interval": 0.02, "stats_interval": 1000})
        cfg["redis"] = redis_section
        path = write_config(tmp_path, cfg)
        api_port = free_port()
        daemon_factory([DOWNLOADER_BIN, "api", "-c", str(path), "--host", "127.0.0.1",
                        "-p", str(api_port)])
        for name in ("processor", "processor", "notifier", "notifier"):
            daemon_factory([DOWNLOADER_BIN, name, "-c", str(path),
                            "--metrics-addr", f"127.0.0.1:{free_port()}"])
        run = Run(f"http://127.0.0.1:{api_port}", receiver_url, asyncio.Event())
        # Each download takes HOLD s: 500 at a time (50 x limit 10) is ~250 jobs/s, slower
        # than the posts, so half the jobs are still to do when every job is acknowledged.
        bodies = [orjson.dumps({"url": f"{file_url}/f/{i}?hold={HOLD}",
                                "aggr_id": f"fo{i % AGGRS}",
                                "aggr_limit": LIMIT, "callback_url": receiver_url + "/cb"})
                  for i in range(JOBS)]
        started = time.monotonic()
        disrupting = asyncio.create_task(disrupt(run))
        try:
            ids = await post_all(run.api_url, bodies, 50)
        except BaseException:
            disrupting.cancel()
            raise
        assert len(set(ids)) == JOBS
        posted_s = time.monotonic() - started
        run.posted.set()
        disrupted = await disrupting
        await run.wait_distinct(JOBS, 80)
        done_s = time.monotonic() - started
        # Late duplicates (a reclaimed lease) come after the last first callback: wait
        # until nothing is queued or in flight before counting.
        deadline = time.monotonic() + 30
        while not await quiet():
            assert time.monotonic() < deadline, "jobs still queued or in flight"
            await asyncio.sleep(0.2)
        stats = await run.stats()
        return {"sent": JOBS, "called_back": stats["distinct"], "callbacks": stats["total"],
                "duplicated": stats["duplicated"], "max_per_job": stats["max_per_job"],
                "differing_payloads": stats["differing"], "successes": stats["ok"],
                "post_s": round(posted_s, 1), "all_called_back_s": round(done_s, 1),
                **disrupted}
    finally:
        _stop_server(files)
        _stop_server(receiver)


def check(result: dict[str, Any]) -> None:
    """The issue's result: none lost, each at most twice, duplicates identical."""
    assert result["called_back"] == result["sent"] == result["successes"], result
    assert result["max_per_job"] <= 2, result
    assert result["differing_payloads"] == 0, result
    assert result["callbacks"] == result["sent"] + result["duplicated"], result


def report(name: str, result: dict[str, Any]) -> None:
    """One line per run (pytest -s shows it); the note quotes these lines."""
    print(f"\n{name}: " + json.dumps(result), flush=True)
