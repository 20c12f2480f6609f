"""``pazari-demo``: an HTTP hello service on the shared runtime (for runtime tests only)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from pazari.runtime import base_parser, setup_logging
from pazari.runtime.cli import load_or_exit
from pazari.runtime.metrics import parse_addr
from pazari.runtime.service import Service, options_from_args, run


@dataclass
class DemoConfig:
    listen: str = "127.0.0.1:8080"
    greeting: str = "hello"

    def validate(self) -> tuple[str, str] | None:
        try:
            parse_addr(self.listen)
        except ValueError as exc:
            return "listen", str(exc)
        return None


class Demo(Service):
    name = "demo"

    def __init__(self, config: DemoConfig) -> None:
        super().__init__()
        self.config = config
        self.requests = Counter(
            "demo_requests", "Requests served", ["path"], registry=self.registry
        )
        self._in_flight = 0
        self._garbage_made = 0
        app = web.Application()
        app.add_routes(
            [web.get("/", self._hello), web.post("/garbage", self._garbage),
             web.get("/slow", self._slow)]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.url = ""

    async def start(self) -> None:
        host, port = parse_addr(self.config.listen)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.url = f"http://{host}:{sockets[0].getsockname()[1] if sockets else port}"

    async def stop(self) -> None:
        # aiohttp waits for in-flight handlers before closing (graceful drain).
        await self._runner.cleanup()

    def vars(self) -> Mapping[str, Any]:
        return {"demo": {"garbage_made": self._garbage_made, "in_flight": self._in_flight}}

    def listeners(self) -> Mapping[str, str]:
        return {"http": self.url}

    async def _hello(self, _: web.Request) -> web.Response:
        self.requests.labels("/").inc()
        return web.Response(text=self.config.greeting)

    async def _garbage(self, request: web.Request) -> web.Response:
        """Make ``n`` reference cycles, so the cyclic GC has something to collect."""
        self.requests.labels("/garbage").inc()
        n = int(request.query.get("n", "100000"))
        for _ in range(n):
            a: list[Any] = []
            a.append(a)
        self._garbage_made += n
        return web.json_response({"made": n})

    async def _slow(self, request: web.Request) -> web.Response:
        self.requests.labels("/slow").inc()
        self._in_flight += 1
        try:
            await asyncio.sleep(float(request.query.get("seconds", "1")))
        finally:
            self._in_flight -= 1
        return web.Response(text="slow done")


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("pazari-demo", "Demo daemon on the pazari runtime.")
    parser.add_argument("--listen", help="host:port of the HTTP listener (overrides config)")
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    config = load_or_exit(args.config, DemoConfig)
    if args.listen:
        config.listen = args.listen
    return run(Demo(config), options_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
