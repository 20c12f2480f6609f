"""scratchd's JSON config: tenants ("flavors"), sinks and the spool (spec "Tenancy",
"Persistence"). Loaded strictly by ``runtime.cli.load_or_exit``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pazari.event import MAX_EVENT

SINK_TYPES = ("kafka", "redis", "file", "stdout")
_SHOP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class CookieConfig:
    """The first-party visitor cookie (created when absent; SameSite=Lax; Secure on https)."""

    name: str = "_sv"
    domain: str = ""
    max_age: int = 2 * 365 * 86400
    # The partner-shop protocol's session cookie (/track/create, /track/connect).
    session_name: str = "_ss"
    session_max_age: int = 1800


@dataclass
class RateLimitConfig:
    """Token buckets; 0 turns a bucket off. Over the limit → 429 (the pixel still answers)."""

    rate: float = 0.0
    burst: int = 0
    per_ip_rate: float = 0.0
    per_ip_burst: int = 0


@dataclass
class TenantConfig:
    id: str
    hosts: list[str]
    sinks: list[str]
    cookie: CookieConfig = field(default_factory=CookieConfig)
    allowed_origins: list[str] = field(default_factory=list)
    sampling: float = 1.0
    # Spec "Tenancy": drop the last octet (IPv4) / last 80 bits (IPv6).
    anonymize_ip: bool = True
    # Do-Not-Track / Global Privacy Control: keep as usual, drop, or record anonymously.
    dnt: Literal["ignore", "drop", "anonymize"] = "ignore"
    ack: Literal["spooled", "received"] = "spooled"
    max_event_bytes: int = MAX_EVENT
    max_batch_events: int = 500
    max_body_bytes: int = 1 << 20
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    # Spec "Tenancy": an explicit `tenant` query parameter, where the config allows it.
    allow_tenant_param: bool = False

    def validate(self) -> tuple[str, str] | None:
        if not _SHOP_ID.match(self.id):
            return "id", "must be 1-64 of A-Z a-z 0-9 _ . -"
        if not 0.0 <= self.sampling <= 1.0:
            return "sampling", "must be between 0 and 1"
        if not 0 < self.max_event_bytes <= MAX_EVENT:
            return "max_event_bytes", f"must be between 1 and {MAX_EVENT}"
        if not self.sinks:
            return "sinks", "at least one sink is required"
        return None


@dataclass
class SinkConfig:
    type: str
    # file: directory of <tenant>-<YYYYMMDDHH>.jsonl files, gzipped when the hour turns.
    path: str = ""
    gzip: bool = True
    # redis
    url: str = "redis://127.0.0.1:6379/0"
    mode: Literal["xadd", "rpush"] = "xadd"
    key: str = "scratchd:{tenant}"
    maxlen: int = 1_000_000
    # kafka: topic per tenant; librdkafka properties pass through.
    topic: str = "scratchd.{tenant}"
    kafka: dict[str, Any] = field(default_factory=dict)
    batch: int = 1000
    retry_initial: float = 0.2
    retry_max: float = 5.0
    # Issue 12: a record this sink rejects this many times while it accepts others goes to
    # the sink's dead-letter file (forwarder.py); 0 retries it forever.
    max_attempts: int = 5

    def validate(self) -> tuple[str, str] | None:
        if self.type not in SINK_TYPES:
            return "type", f"must be one of {', '.join(SINK_TYPES)}"
        if self.type == "file" and not self.path:
            return "path", "a file sink needs a directory"
        if self.type == "kafka" and "bootstrap.servers" not in self.kafka:
            return "kafka", "needs bootstrap.servers"
        return None


@dataclass
class SpoolConfig:
    dir: str = "/var/lib/scratchd/spool"
    quota_bytes: int = 1 << 30
    segment_bytes: int = 64 << 20
    # Group commit: one fsync covers every record appended while the previous one ran.
    fsync_delay_ms: float = 0.0
    cursor_interval_ms: float = 200.0


@dataclass
class ScratchdConfig:
    tenants: list[TenantConfig] = field(default_factory=list)
    sinks: dict[str, SinkConfig] = field(default_factory=dict)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    # X-Forwarded-For (issue 12, privacy.ProxyTrust): ``trusted_proxies`` lists the CIDRs of
    # the proxies in front; the client is the right-most hop not among them (nginx
    # real_ip_recursive). ``trust_forwarded_for`` alone trusts just the direct peer.
    trust_forwarded_for: bool = False
    trusted_proxies: list[str] = field(default_factory=list)
    # Slowloris (issue 12): a request head not complete this many seconds after its first
    # byte (or after the connection opened) is answered 408 and closed (checked each second).
    header_timeout: float = 10.0
    # Graceful stop: each sink gets this long to deliver what is spooled.
    shutdown_deliver_timeout: float = 10.0

    def validate(self) -> tuple[str, str] | None:
        seen_hosts: set[str] = set()
        seen_ids: set[str] = set()
        shared_ok: dict[str, bool] = {}
        for i, tenant in enumerate(self.tenants):
            if tenant.id in seen_ids:
                return f"tenants[{i}].id", f"duplicate tenant {tenant.id!r}"
            seen_ids.add(tenant.id)
            for sink in tenant.sinks:
                if sink not in self.sinks:
                    return f"tenants[{i}].sinks", f"unknown sink {sink!r}"
            for host in tenant.hosts:
                # A host may be shared only by tenants that take the `tenant` parameter
                # (the first one listed is the default; the parameter picks among them).
                if host.lower() in seen_hosts and not (
                        tenant.allow_tenant_param and shared_ok.get(host.lower(), False)):
                    return f"tenants[{i}].hosts", f"host {host!r} belongs to two tenants"
                seen_hosts.add(host.lower())
                shared_ok[host.lower()] = shared_ok.get(host.lower(), True) and \
                    tenant.allow_tenant_param
        if not self.tenants:
            return "tenants", "at least one tenant is required"
        if self.header_timeout <= 0:
            return "header_timeout", "must be positive"
        for i, cidr in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                return f"trusted_proxies[{i}]", str(exc)
        return None


def default_config() -> dict[str, Any]:
    """The embedded default (``make run``, a newcomer's first run): one tenant for any host
    and a file sink only (issue 17: a Kafka sink here pointed at 127.0.0.1:9092 and logged
    librdkafka's connect error every second when no broker ran); a Kafka sink is one
    ``--config`` away. ``SCRATCHD_*`` variables are read by ``__main__``."""
    return {
        "tenants": [{"id": "default", "hosts": ["*"], "sinks": ["file"],
                     "allowed_origins": ["*"]}],
        "sinks": {"file": {"type": "file", "path": "var/scratchd/events"}},
        "spool": {"dir": "var/scratchd/spool"},
    }
