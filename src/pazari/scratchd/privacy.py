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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(value: str) -> IPAddress | None:
    """An address as peers and proxies write it: ``ip``, ``ip:port``, ``[v6]`` or
    ``[v6]:port`` (RFC 7239 §6 node forms; X-Forwarded-For carries the same); None for
    anything else (``unknown``, obfuscated identifiers, garbage)."""
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port(text[end + 1:])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port (a bare IPv6 has at least two colons)
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        return None  # a zone id is local to the sender's host
    return addr


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


@lru_cache(maxsize=65536)
def clean_ip(value: str) -> str | None:
    """The canonical text of the address in ``value``, or None: a raw value is never
    stored (issue 12)."""
    addr = parse_ip(value)
    if addr is None:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@lru_cache(maxsize=65536)
def anonymize_ip(value: str) -> str | None:
    """IPv4: zero the last octet; IPv6: zero the last 80 bits (spec "Tenancy"). Accepts the
    forms of :func:`parse_ip`; None when ``value`` is not an address."""
    addr = parse_ip(value)
    if addr is None:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(ipaddress.IPv4Address(int(addr.ipv4_mapped) >> 8 << 8))
        return str(ipaddress.IPv6Address(int(addr) >> 80 << 80))
    return str(ipaddress.IPv4Address(int(addr) >> 8 << 8))


class ProxyTrust:
    """Which address is the client's (issue 12), as nginx's ``real_ip_recursive on``: when
    the peer is a trusted proxy, walk X-Forwarded-For from the right, skipping trusted
    proxies; the first other hop is the client. The left-most entry is whatever the client
    wrote, so it is used only when every hop is trusted. A hop that is not an address ends
    the walk (it was not written by a trusted proxy) and gives no address at all.

    ``trust_forwarded_for`` without ``trusted_proxies`` trusts the direct peer only (one
    load balancer in front): the right-most hop, the one that balancer appended."""

    def __init__(self, cidrs: list[str], trust_peer: bool) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self.trust_peer = trust_peer and not self.networks
        self.enabled = bool(self.networks) or trust_peer
        self._cache: dict[str, bool] = {}

    def trusted(self, value: str | None) -> bool:
        if value is None:
            return False
        found = self._cache.get(value)
        if found is None:
            addr = parse_ip(value)
            if addr is not None and isinstance(addr, ipaddress.IPv6Address) and \
                    addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            found = addr is not None and any(addr in net for net in self.networks)
            if len(self._cache) < 4096:
                self._cache[value] = found
        return found

    def peer_trusted(self, remote: str | None) -> bool:
        return self.enabled and (self.trust_peer or self.trusted(remote))

    def client_ip(self, remote: str | None, forwarded_for: str | None) -> str | None:
        """The client's address as sent (not yet cleaned); None if there is none."""
        if not forwarded_for or not self.peer_trusted(remote):
            return remote
        hops = [h.strip() for h in forwarded_for.split(",")]
        if self.trust_peer:
            return hops[-1] or None
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop or None
        return hops[0] or None


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
