"""Proxies: the one parser the API (``aggr_proxy``, spec §1) and the processor share, and the
environment proxy (``HTTP(S)_PROXY``/``NO_PROXY``), used when an aggregation has no
``aggr_proxy``. The environment is read once at startup: aiohttp's ``trust_env`` re-reads it
and ``~/.netrc`` on every request, which showed up as the processor's top cost.

The original's API accepted any ``url.ParseRequestURI`` string and its processor then
refused what Go's transport could not use (``invalidProxies``), leaving that aggregation's
jobs Pending forever (issue 11). One parser on both sides closes that gap: the API answers
400 with the reason, and a proxy that still cannot be used at run time (written by an older
API, or from the environment) fails the job with a callback."""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit, urlunsplit

#: Proxy schemes the transport speaks (a plain HTTP proxy, or one reached over TLS).
PROXY_SCHEMES = ("http", "https")


class InvalidProxy(ValueError):
    """A proxy URL the transport cannot use; ``str()`` says why."""


def parse_proxy(proxy: str) -> str:
    """The canonical form of ``proxy`` (scheme lower-cased, nothing after the authority),
    or InvalidProxy naming the problem."""
    if any(c < " " or c == "\x7f" for c in proxy):
        raise InvalidProxy(f"{proxy!r}: control character in proxy URL")
    try:
        parts = urlsplit(proxy)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise InvalidProxy(f"{proxy!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidProxy(f"{proxy!r}: no scheme (expected http:// or https://)")
    if scheme not in PROXY_SCHEMES:
        raise InvalidProxy(f"{proxy!r}: unsupported proxy scheme \"{parts.scheme}\" "
                           "(supported: http, https)")
    if not host:
        raise InvalidProxy(f"{proxy!r}: no host in proxy URL")
    if port == 0:
        raise InvalidProxy(f"{proxy!r}: port 0")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxy(f"{proxy!r}: a proxy URL has no path, query or fragment")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


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
