"""Building blocks: UUIDv7, privacy helpers, rate limits, tenant lookup, config."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pazari.runtime.config import ConfigError, from_json
from pazari.scratchd.config import RateLimitConfig, ScratchdConfig, default_config
from pazari.scratchd.ids import Uuid7, timestamp_ms
from pazari.scratchd.privacy import (
    ProxyTrust,
    anonymize_ip,
    clean_ip,
    cookie_value,
    is_bot,
    valid_id,
)
from pazari.scratchd.ratelimit import RateLimiter
from pazari.scratchd.tenants import TenantRouter


def test_uuid7_is_time_ordered_and_well_formed() -> None:
    gen = Uuid7()
    ids = [gen.new(1_700_000_000_000) for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    first = ids[0]
    assert first[14] == "7" and first[19] in "89ab" and len(first) == 36
    assert timestamp_ms(first) == 1_700_000_000_000
    now = int(time.time() * 1000)
    assert abs(timestamp_ms(gen.new()) - now) < 5000


@pytest.mark.parametrize(("ip", "expected"), [
    ("203.0.113.77", "203.0.113.0"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1::"),
    ("::ffff:198.51.100.9", "198.51.100.0"),
    ("203.0.113.77:52100", "203.0.113.0"),
    ("[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1::"),
    ("[2001:db8:1:2:3:4:5:6]", "2001:db8:1::"),
    (" 203.0.113.77 ", "203.0.113.0"),
    ("not-an-ip", None),
    ("a.b.c.d", None),
    ("1.2.3", None),
    ("203.0.113.77:port", None),
    ("[2001:db8::1]x", None),
    ("[2001:db8::1", None),
    ("unknown", None),
    ("_hidden", None),
    ("fe80::1%eth0", None),
    ("", None),
], ids=["ipv4", "ipv6", "mapped", "v4_port", "v6_bracket_port", "v6_bracket", "spaces",
        "garbage", "dotted_garbage", "short_v4", "bad_port", "v6_trailing", "v6_unclosed",
        "rfc7239_unknown", "rfc7239_obfuscated", "zone_id", "empty"])
def test_anonymize_ip_parses_or_drops(ip: str, expected: str | None) -> None:
    assert anonymize_ip(ip) == expected
    assert (clean_ip(ip) is None) == (expected is None)


@pytest.mark.parametrize(("cidrs", "trust_peer", "remote", "xff", "client"), [
    (["127.0.0.0/8", "10.0.0.0/8"], False, "127.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3",
     "203.0.113.9"),
    (["127.0.0.0/8"], False, "127.0.0.1", "10.0.0.1, 203.0.113.9", "203.0.113.9"),
    (["127.0.0.0/8", "10.0.0.0/8"], False, "127.0.0.1", "10.0.0.1, 10.0.0.2", "10.0.0.1"),
    (["10.0.0.0/8"], False, "127.0.0.1", "203.0.113.9", "127.0.0.1"),
    (["127.0.0.0/8"], False, "127.0.0.1", "203.0.113.9, garbage", "garbage"),
    (["127.0.0.0/8"], False, "127.0.0.1", "[2001:db8::7]:443", "[2001:db8::7]:443"),
    (["127.0.0.0/8"], False, "127.0.0.1", None, "127.0.0.1"),
    (["::ffff:127.0.0.0/104", "127.0.0.0/8"], False, "::ffff:127.0.0.1", "203.0.113.9",
     "203.0.113.9"),
    ([], True, "127.0.0.1", "6.6.6.6, 203.0.113.9", "203.0.113.9"),
    ([], False, "127.0.0.1", "203.0.113.9", "127.0.0.1"),
], ids=["right_most_untrusted", "spoofed_left_most_ignored", "all_trusted_left_most",
        "peer_untrusted_header_ignored", "garbage_hop_ends_walk", "v6_with_port",
        "no_header", "v4_mapped_peer", "trust_peer_only_right_most", "trust_off"])
def test_proxy_trust_picks_right_most_untrusted_hop(
    cidrs: list[str], trust_peer: bool, remote: str, xff: str | None, client: str
) -> None:
    assert ProxyTrust(cidrs, trust_peer).client_ip(remote, xff) == client


@pytest.mark.parametrize(("header", "value"), [
    ("_sv=abc12345", "abc12345"),
    ("x=1; _sv=abc12345; y=2", "abc12345"),
    ("x_sv=nope; _sv=yes12345", "yes12345"),
    ("other=1", None),
    (None, None),
], ids=["only", "middle", "suffix-name", "absent", "no-header"])
def test_cookie_value(header: str | None, value: str | None) -> None:
    assert cookie_value(header, "_sv") == value


@pytest.mark.parametrize(("ua", "bot"), [
    ("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", False),
    ("Googlebot/2.1 (+http://www.google.com/bot.html)", True),
    ("curl/8.0", True),
    (None, True),
], ids=["browser", "googlebot", "curl", "none"])
def test_bot(ua: str | None, bot: bool) -> None:
    assert is_bot(ua) is bot


def test_valid_id() -> None:
    assert valid_id("0190abcd-0000-7000-8000-000000000000")
    assert not valid_id("short") and not valid_id("bad value!") and not valid_id(None)


def test_rate_limiter_per_ip_and_tenant() -> None:
    limiter = RateLimiter(RateLimitConfig(rate=0.001, burst=5, per_ip_rate=0.001, per_ip_burst=3))
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert [limiter.allow("b") for _ in range(3)] == [True, True, False]  # tenant bucket: 5


def _config(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tenants": [{"id": "a", "hosts": ["a.test"], "sinks": ["f"]},
                    {"id": "b", "hosts": ["B.test", "*"], "sinks": ["f"]}],
        "sinks": {"f": {"type": "file", "path": "/tmp/x"}},
    }
    doc.update(over)
    return doc


def test_tenant_lookup_by_host() -> None:
    cfg = from_json(_config(), ScratchdConfig)
    router = TenantRouter(cfg.tenants)
    assert router.lookup("a.test:8080").id == "a"  # type: ignore[union-attr]
    assert router.lookup("b.test").id == "b"  # type: ignore[union-attr]
    assert router.lookup("other.test").id == "b"  # type: ignore[union-attr]  # wildcard


@pytest.mark.parametrize(("doc", "message"), [
    (_config(sinks={"f": {"type": "ftp"}}), "$.sinks.f.type: must be one of"),
    (_config(sinks={}), "$.tenants: unknown sink"),
    (_config(tenants=[{"id": "a", "hosts": ["x"], "sinks": ["f"], "sampling": 2}]),
     "$.tenants[0].sampling: must be between 0 and 1"),
    (_config(tenants=[{"id": "a", "hosts": ["x"], "sinks": ["f"], "dnt": "maybe"}]),
     "$.tenants[0].dnt: must be one of"),
    (_config(spool={"dir": "/x", "bogus": 1}), "$.spool.bogus: unknown key"),
], ids=["sink-type", "unknown-sink", "sampling", "dnt", "unknown-key"])
def test_config_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_json(doc, ScratchdConfig)
    assert message.split(":")[0] in str(info.value)
    assert message.split(": ", 1)[1] in str(info.value)


def test_embedded_default_config_loads() -> None:
    cfg = from_json(default_config(), ScratchdConfig)
    # Issue 17: quiet without a broker: the file sink only, and every tenant routed to it.
    assert {s.type for s in cfg.sinks.values()} == {"file"}
    assert all(t.sinks == ["file"] for t in cfg.tenants)
