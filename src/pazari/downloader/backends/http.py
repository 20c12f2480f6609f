"""HTTP callbacks (spec §4 HTTP backend): ``POST <dst>`` with the JSON payload; any 2xx is
delivered. Response bodies are always read and released (the original leaked them)."""

from __future__ import annotations

from typing import Any

import aiohttp

from pazari.downloader.backends import DeliveryError
from pazari.downloader.proxies import EnvProxies

JSON_HEADERS = {"Content-Type": "application/json"}


class HttpBackend:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.timeout = float(settings.get("timeout", 30))
        self.session: aiohttp.ClientSession | None = None
        self.proxies = EnvProxies()

    async def start(self) -> None:
        # The environment proxy is read once (aiohttp's trust_env re-reads it in a worker
        # thread on every request); no cookies are kept between callbacks.
        self.session = aiohttp.ClientSession(
            trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10),
        )

    async def notify(self, dst: str, payload: bytes, headers: dict[str, str]) -> None:
        assert self.session is not None
        try:
            async with self.session.post(
                dst, data=payload, proxy=self.proxies.for_url(dst) or None,
                headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
            ) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryError(f"Received Status: {resp.status} {resp.reason or ''}"
                                        .rstrip())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise DeliveryError(f'Post "{dst}": {exc or type(exc).__name__}') from None

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
