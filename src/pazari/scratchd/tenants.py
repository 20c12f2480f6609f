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
        # No rate limit and no sampling: admitting a client needs no call (issue 17).
        rate = config.rate_limit
        self.admits_all = not rate.rate and not rate.per_ip_rate and config.sampling >= 1.0
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


def host_name(host: str) -> str:
    """A Host header value without its port, lower-cased (RFC 9110 §7.2)."""
    name = host.lower()
    if name.startswith("["):
        return name[: name.find("]") + 1]
    return name.rpartition(":")[0] or name if name.count(":") == 1 else name


class TenantRouter:
    def __init__(self, configs: list[TenantConfig]) -> None:
        self.tenants = [Tenant(c) for c in configs]
        self.by_id = {t.id: t for t in self.tenants}
        self.by_host: dict[str, Tenant] = {}
        self.wildcard: Tenant | None = None
        # (tenant id, host) for every host a tenant lists by name (the `tenant` parameter).
        self.serves: set[tuple[str, str]] = set()
        for t in self.tenants:
            for host in t.config.hosts:
                if host == "*":
                    self.wildcard = t
                else:
                    self.by_host.setdefault(host.lower(), t)  # a shared host: the first
                    self.serves.add((t.id, host.lower()))
        self._cache: dict[str, Tenant | None] = {}

    def lookup(self, host: str | None) -> Tenant | None:
        """The tenant of a Host header value (port ignored), or None."""
        if host is None:
            return self.wildcard
        found = self._cache.get(host, self)
        if found is not self:
            return found  # type: ignore[return-value]
        tenant = self.by_host.get(host_name(host), self.wildcard)
        if len(self._cache) < 4096:
            self._cache[host] = tenant
        return tenant

    def named(self, tenant_id: str, host: str | None) -> Tenant | None:
        """The tenant a ``tenant`` parameter picks (issue 12): only one that allows the
        parameter and lists the requesting host by name among its hosts (a catch-all ``*``
        does not count), so a page on one tenant's host cannot write into another's."""
        tenant = self.by_id.get(tenant_id)
        if tenant is None or host is None or not tenant.config.allow_tenant_param:
            return None
        return tenant if (tenant.id, host_name(host)) in self.serves else None
