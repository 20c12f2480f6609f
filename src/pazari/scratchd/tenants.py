"""Tenants ("flavors") at run time: lookup by Host, cookies, CORS, sampling (spec "Tenancy")."""

from __future__ import annotations

import zlib

from pazari.scratchd.config import TenantConfig
from pazari.scratchd.ratelimit import RateLimiter


class Tenant:
    def __init__(self, config: TenantConfig) -> None:
        self.config = config
        self.id = config.id
        self.id_bytes = config.id.encode()
        self.sinks = list(config.sinks)
        self.spooled_ack = config.ack == "spooled"
        self.limiter = RateLimiter(config.rate_limit)
        self.any_origin = "*" in config.allowed_origins
        self.origins = frozenset(o.rstrip("/") for o in config.allowed_origins)
        self.cookie_name = config.cookie.name
        self.session_cookie = config.cookie.session_name
        self._sample_below = int(config.sampling * 10_000)
        base = f"; Max-Age={config.cookie.max_age}; Path=/; SameSite=Lax"
        if config.cookie.domain:
            base += f"; Domain={config.cookie.domain}"
        self._cookie_suffix = (base, base + "; Secure")
        sbase = f"; Max-Age={config.cookie.session_max_age}; Path=/; SameSite=Lax"
        if config.cookie.domain:
            sbase += f"; Domain={config.cookie.domain}"
        self._session_suffix = (sbase, sbase + "; Secure")

    def visitor_cookie(self, value: str, secure: bool) -> str:
        """Set-Cookie for the first-party visitor id: SameSite=Lax, Secure on https."""
        return f"{self.cookie_name}={value}{self._cookie_suffix[secure]}"

    def session_cookie_header(self, value: str, secure: bool) -> str:
        return f"{self.session_cookie}={value}{self._session_suffix[secure]}"

    def origin_allowed(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins

    def sampled(self, visitor_id: str) -> bool:
        """Deterministic per visitor: a visitor is either always or never recorded."""
        if self._sample_below >= 10_000:
            return True
        return zlib.crc32(visitor_id.encode()) % 10_000 < self._sample_below


class TenantRouter:
    def __init__(self, configs: list[TenantConfig]) -> None:
        self.tenants = [Tenant(c) for c in configs]
        self.by_id = {t.id: t for t in self.tenants}
        self.by_host: dict[str, Tenant] = {}
        self.wildcard: Tenant | None = None
        for t in self.tenants:
            for host in t.config.hosts:
                if host == "*":
                    self.wildcard = t
                else:
                    self.by_host[host.lower()] = t
        self._cache: dict[str, Tenant | None] = {}

    def lookup(self, host: str | None) -> Tenant | None:
        """The tenant of a Host header value (port ignored), or None."""
        if host is None:
            return self.wildcard
        found = self._cache.get(host, self)
        if found is not self:
            return found  # type: ignore[return-value]
        name = host.lower()
        if name.startswith("["):
            name = name[: name.find("]") + 1]
        else:
            name = name.rpartition(":")[0] or name if name.count(":") == 1 else name
        tenant = self.by_host.get(name, self.wildcard)
        if len(self._cache) < 4096:
            self._cache[host] = tenant
        return tenant
