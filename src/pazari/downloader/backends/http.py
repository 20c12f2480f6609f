"""HTTP callbacks (spec §4 HTTP backend): ``POST <dst>`` with the JSON payload; any 2xx is
delivered. Response bodies are always read and the connection kept or closed (the original
leaked them). The exchange is libcurl's (:mod:`pazari.downloader.curl`, the downloads'
transport; a callback through aiohttp's client cost the notifier ~0.25 ms of CPU, issue 4's
throughput gate).

Redirects are followed as Go's ``client.Post`` follows them (up to ``max_redirects``): 301,
302 and 303 become a GET without the body, 307 and 308 repeat the POST. Every hop goes
through the SSRF guard (``notifier.allow_private_networks``/``allowed_networks``, the
processor's meaning) and :mod:`pazari.downloader.redirects`' policy, so a receiver cannot
bounce the notifier into an internal service (issue 11)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pazari.downloader import curl
from pazari.downloader import transport as tx
from pazari.downloader.backends import DeliveryError
from pazari.downloader.config import NotifierConfig
from pazari.downloader.fetch import make_target_guard
from pazari.downloader.proxies import EnvProxies, InvalidProxy, parse_proxy
from pazari.downloader.redirects import (
    REDIRECTS,
    TO_GET,
    RedirectRefused,
    headers_for_hop,
    next_hop,
)
from pazari.downloader.ssrf import ForbiddenAddress, parse_networks

JSON_HEADERS = {"Content-Type": "application/json"}
CONNECT_TIMEOUT = 10.0


def _drop(_chunk: bytes) -> None:
    pass


class HttpBackend:
    def __init__(self, settings: dict[str, Any], notifier: NotifierConfig) -> None:
        self.timeout = float(settings.get("timeout", 30))
        self.cfg = notifier
        self.client: tx.Client | None = None
        # The environment proxy is read once; no cookies are kept between callbacks.
        self.proxies = EnvProxies()
        self.target_guard = make_target_guard(notifier.allow_private_networks,
                                              notifier.allowed_networks)

    async def start(self) -> None:
        self.client = curl.Client(
            connect_timeout=min(CONNECT_TIMEOUT, self.timeout), read_timeout=self.timeout,
            accept_encoding=False,
            allowed_networks=None if self.cfg.allow_private_networks
            else parse_networks(self.cfg.allowed_networks))

    async def notify(self, dst: str, payload: bytes, headers: dict[str, str]) -> None:
        # ``timeout`` bounds the whole exchange, every hop included, as Go's
        # http.Client.Timeout did (a deadline the connection's own timer watches: no
        # asyncio.timeout per callback).
        deadline = asyncio.get_running_loop().time() + self.timeout
        first_headers: Mapping[str, str] = ({**JSON_HEADERS, **headers} if headers
                                            else JSON_HEADERS)
        method, url, hop_headers = "POST", dst, first_headers
        body: bytes | None = payload
        for _hop in range(self.cfg.max_redirects + 1):
            status, reason, location = await self._exchange(method, url, hop_headers, body,
                                                            deadline)
            if status in REDIRECTS and location:
                try:
                    url = next_hop(url, location,
                                   allow_insecure=self.cfg.allow_insecure_redirects)
                except RedirectRefused as exc:
                    raise DeliveryError(f'Post "{dst}": {exc}') from None
                if status in TO_GET:
                    method, body = "GET", None
                    first_headers = {k: v for k, v in first_headers.items()
                                     if k.lower() != "content-type"}
                hop_headers = headers_for_hop(first_headers, dst, url)
                continue
            if not 200 <= status < 300:
                raise DeliveryError(f"Received Status: {status} {reason}".rstrip())
            return
        raise DeliveryError(f'Post "{dst}": stopped after {self.cfg.max_redirects} redirects')

    async def _exchange(self, method: str, url: str, headers: Mapping[str, str],
                        body: bytes | None, deadline: float) -> tuple[int, str, str | None]:
        assert self.client is not None
        shown = f'{method.capitalize()} "{url}"'
        try:
            proxy = self.proxies.for_url(url)
            if proxy:
                proxy = parse_proxy(proxy)
                if self.target_guard is not None:
                    await self.target_guard(url)
            resp = await self.client.request(method, url, headers, body, proxy=proxy,
                                             deadline=deadline)
            try:
                await resp.stream(_drop)
            finally:
                resp.release()
        except tx.DeadlineExceeded:
            raise DeliveryError(f'{shown}: context deadline exceeded (Client.Timeout '
                                'exceeded while awaiting headers)') from None
        except (tx.HTTPClientError, ForbiddenAddress, InvalidProxy) as exc:
            raise DeliveryError(f"{shown}: {exc}") from None
        return resp.status, resp.reason, resp.headers.get("location")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
