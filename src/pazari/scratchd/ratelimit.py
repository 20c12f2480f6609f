"""Token buckets for the per-tenant and per-client-IP rate limits (spec "Tenancy")."""

from __future__ import annotations

import time
from collections import OrderedDict

from pazari.scratchd.config import RateLimitConfig

MAX_TRACKED_IPS = 65536  # bounded memory: the least recently seen address is forgotten


class Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, n: int, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class RateLimiter:
    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.tenant = Bucket(config.rate, config.burst or int(config.rate)) if config.rate else None
        self.ips: OrderedDict[str, Bucket] | None = OrderedDict() if config.per_ip_rate else None

    def allow(self, ip: str, n: int = 1) -> bool:
        now = time.monotonic()
        if self.ips is not None:
            bucket = self.ips.get(ip)
            if bucket is None:
                burst = self.config.per_ip_burst or int(self.config.per_ip_rate) or 1
                bucket = self.ips[ip] = Bucket(self.config.per_ip_rate, burst)
                if len(self.ips) > MAX_TRACKED_IPS:
                    self.ips.popitem(last=False)
            else:
                self.ips.move_to_end(ip)
            if not bucket.take(n, now):
                return False
        return self.tenant is None or self.tenant.take(n, now)
