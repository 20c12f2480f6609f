"""HTTP callbacks (spec §4 HTTP backend): ``POST <dst>`` with the JSON payload; any 2xx is
delivered. Response bodies are always read and the connection kept or closed (the original
leaked them). The exchange is :mod:`pazari.downloader.http1`'s (a callback through aiohttp's
client cost the notifier ~0.25 ms of CPU; issue 4's throughput gate)."""

from __future__ import annotations

import asyncio
from typing import Any

from pazari.downloader import http1
from pazari.downloader.backends import DeliveryError
from pazari.downloader.proxies import EnvProxies

JSON_HEADERS = {"Content-Type": "application/json"}
CONNECT_TIMEOUT = 10.0


def _drop(_chunk: bytes) -> None:
    pass


class HttpBackend:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.timeout = float(settings.get("timeout", 30))
        self.client: http1.Client | None = None
        # The environment proxy is read once; no cookies are kept between callbacks.
        self.proxies = EnvProxies()

    async def start(self) -> None:
        self.client = http1.Client(connect_timeout=min(CONNECT_TIMEOUT, self.timeout),
                                   read_timeout=self.timeout, keepalive=30.0,
                                   accept_encoding="")

    async def notify(self, dst: str, payload: bytes, headers: dict[str, str]) -> None:
        assert self.client is not None
        # ``timeout`` bounds the whole exchange, as Go's http.Client.Timeout did (a deadline
        # the connection's own timer watches: no asyncio.timeout per callback).
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            resp = await self.client.request(
                "POST", dst, {**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
                payload, proxy=self.proxies.for_url(dst), deadline=deadline)
            try:
                await resp.stream(_drop)
            finally:
                resp.release()
        except http1.DeadlineExceeded:
            raise DeliveryError(f'Post "{dst}": context deadline exceeded (Client.Timeout '
                                'exceeded while awaiting headers)') from None
        except http1.HTTPClientError as exc:
            raise DeliveryError(f'Post "{dst}": {exc}') from None
        if not 200 <= resp.status < 300:
            raise DeliveryError(f"Received Status: {resp.status} {resp.reason}".rstrip())

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
