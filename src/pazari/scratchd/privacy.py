"""Client address, IP anonymisation, Do-Not-Track / GPC and bot detection (spec "Tenancy",
"The event")."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

_BOT = re.compile(
    r"bot|crawl|spider|slurp|archiver|facebookexternalhit|headless|lighthouse|pingdom|"
    r"preview|monitor|curl/|wget/|python-requests|aiohttp|go-http-client|java/|httpclient",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def is_bot(user_agent: str | None) -> bool:
    """Bot flag from User-Agent patterns; no User-Agent at all counts as a bot."""
    return user_agent is None or bool(_BOT.search(user_agent))


@lru_cache(maxsize=65536)
def anonymize_ip(ip: str) -> str:
    """IPv4: zero the last octet; IPv6: zero the last 80 bits (spec "Tenancy")."""
    if "." in ip and ":" not in ip:
        head, _, _ = ip.rpartition(".")
        return f"{head}.0"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return anonymize_ip(str(addr.ipv4_mapped))
        return str(ipaddress.IPv6Address(int(addr) >> 80 << 80))
    return str(ipaddress.IPv4Address(int(addr) >> 8 << 8))


def privacy_signal(dnt: str | None, gpc: str | None) -> bool:
    """``DNT: 1`` or ``Sec-GPC: 1`` (Global Privacy Control)."""
    return dnt == "1" or gpc == "1"


_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def valid_id(value: str | None) -> bool:
    """A cookie/session id we issued (or a compatible one): 8-64 of [A-Za-z0-9_-]."""
    return value is not None and _ID.match(value) is not None


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header (RFC 6265 §5.4), without parsing the
    rest of the header."""
    if not header:
        return None
    needle = name + "="
    start = 0
    while True:
        i = header.find(needle, start)
        if i < 0:
            return None
        if i == 0 or header[i - 1] in " ;":
            j = header.find(";", i)
            value = header[i + len(needle):] if j < 0 else header[i + len(needle):j]
            return value.strip().strip('"')
        start = i + 1
