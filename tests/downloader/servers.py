"""Real aiohttp servers for the downloader tests, run in the test's event loop: a file
server that measures per-aggregation concurrency and serves hostile responses, and a
callback receiver that can go down and come back."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from PIL import Image

from tests.support.ports import free_port


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def webp_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (0, 90, 10)).save(buf, "WEBP")
    return buf.getvalue()


HTML = b"<!DOCTYPE html><html><head><title>x</title></head><body>hello</body></html>\n"


class Running:
    """An aiohttp app on 127.0.0.1:<port> that can be stopped and started again."""

    def __init__(self, app: web.Application, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # handler_cancellation: a download whose client died (kill -9) stops counting as
        # in flight at once, so the concurrency measurement stays exact.
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5,
                                    handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class FileServer:
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    current: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    hit_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    proxied: list[str] = field(default_factory=list)
    server: Running | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/file/{name}", self.file),
            web.get("/status/{code}", self.status),
            web.get("/flaky/{key}/{fails}", self.flaky),
            web.get("/drip", self.drip),
            web.get("/endless", self.endless),
            web.get("/loop/{n}", self.loop),
            web.get("/short", self.short),
            web.get("/gzip", self.gzipped),
            web.get("/headers", self.headers),
            web.get("/big/{size}", self.big),
            web.get("/to", self.to),
            web.get("/{tail:.*}", self.as_proxy),
        ])
        return app

    async def start(self) -> str:
        self.server = Running(self.app())
        await self.server.start()
        return self.server.url

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        aggr = request.query.get("a", "")
        delay = float(request.query.get("delay", "0"))
        self.hits[name] += 1
        self.hit_times[aggr].append(asyncio.get_running_loop().time())
        self.current[aggr] += 1
        self.peak[aggr] = max(self.peak[aggr], self.current[aggr])
        try:
            if delay:
                await asyncio.sleep(delay)
            if name not in self.files:
                raise web.HTTPNotFound()
            body, ctype = self.files[name]
            return web.Response(body=body, content_type=ctype)
        finally:
            self.current[aggr] -= 1

    async def status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def flaky(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self.hits[key] += 1
        if self.hits[key] <= int(request.match_info["fails"]):
            return web.Response(status=503, text="busy")
        return web.Response(body=HTML, content_type="text/html")

    async def drip(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 1 << 20
        await resp.prepare(request)
        for _ in range(600):
            await resp.write(b"x")
            await asyncio.sleep(0.2)
        return resp

    async def endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"z" * 65536
        for _ in range(1 << 16):
            await resp.write(chunk)
        return resp

    async def loop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/loop/{n + 1}")

    async def as_proxy(self, request: web.Request) -> web.Response:
        """Anything else: answer as an HTTP proxy would for an absolute-form request."""
        self.proxied.append(f"{request.host}{request.path}")
        return web.Response(body=HTML, content_type="text/html")

    async def to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["u"])

    async def short(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"only a little")
        assert request.transport is not None
        request.transport.close()
        return resp

    async def gzipped(self, request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(HTML), headers={
            "Content-Encoding": "gzip", "Content-Type": "text/html"})

    async def headers(self, request: web.Request) -> web.Response:
        self.headers_seen.append(dict(request.headers))
        return web.Response(body=HTML, content_type="text/html")

    async def big(self, request: web.Request) -> web.StreamResponse:
        """``size`` bytes generated on the fly (never held in memory or on disk)."""
        size = int(request.match_info["size"])
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        chunk = b"\xab" * (1 << 20)
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await resp.write(part)
            sent += len(part)
        return resp


@dataclass
class Receiver:
    """Callback receiver: records every POST body; ``fail_first`` answers 500 that often."""

    port: int = field(default_factory=free_port)
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    by_job: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    fail_first: int = 0
    server: Running | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cb"

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/cb", self.callback)])
        self.server = Running(app, self.port)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def callback(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500, text="try later")
        doc = orjson.loads(raw)
        doc["_raw"] = raw
        self.received.append(doc)
        self.headers.append(dict(request.headers))
        self.by_job[doc["job_id"]].append(doc)
        self.arrived.set()
        return web.Response(status=200, text="ok")

    async def wait_for_jobs(self, ids: set[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ids <= self.by_job.keys():
            remaining = deadline - loop.time()
            if remaining <= 0:
                missing = ids - self.by_job.keys()
                raise AssertionError(f"{len(missing)} callbacks missing, e.g. "
                                     f"{sorted(missing)[:5]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(remaining, 1.0))

    def one(self, job_id: str) -> dict[str, Any]:
        return self.by_job[job_id][-1]
