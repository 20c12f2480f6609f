"""HTTP callbacks (spec §4 HTTP backend): ``POST <dst>`` with the JSON payload; any 2xx is
delivered. Response bodies are always read and released (the original leaked them)."""

from __future__ import annotations

from typing import Any

import aiohttp

from pazari.downloader.backends import DeliveryError


class HttpBackend:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.timeout = float(settings.get("timeout", 30))
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            trust_env=True,
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=10),
        )

    async def notify(self, dst: str, payload: bytes, headers: dict[str, str]) -> None:
        assert self.session is not None
        try:
            async with self.session.post(
                dst, data=payload, headers={"Content-Type": "application/json", **headers}
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
