"""The environment proxy (``HTTP(S)_PROXY``/``NO_PROXY``), used when an aggregation has no
``aggr_proxy`` (spec §1). Read once at startup: aiohttp's ``trust_env`` re-reads the
environment and ``~/.netrc`` on every request, which showed up as the processor's top cost."""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit


class EnvProxies:
    def __init__(self) -> None:
        self.proxies = {k: v for k, v in urllib.request.getproxies().items()
                        if k in ("http", "https")}
        self._bypass: dict[str, bool] = {}

    def for_url(self, url: str) -> str:
        """The proxy URL for ``url``, or "" for a direct connection."""
        if not self.proxies:
            return ""
        parts = urlsplit(url)
        proxy = self.proxies.get(parts.scheme, "")
        if not proxy:
            return ""
        host = parts.hostname or ""
        bypass = self._bypass.get(host)
        if bypass is None:
            bypass = bool(urllib.request.proxy_bypass(host))
            if len(self._bypass) < 10_000:
                self._bypass[host] = bypass
        return "" if bypass else proxy
