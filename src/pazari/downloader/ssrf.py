"""The SSRF guard: private, loopback, link-local (and other non-global) destinations are
refused after DNS resolution, on every redirect hop, unless ``allow_private_networks``."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(cidrs: list[str]) -> Networks:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def is_forbidden(address: str, allowed: Networks = ()) -> bool:
    """True for any address that is not globally routable unicast, unless it is inside one
    of the operator's ``allowed`` networks."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == n.version and ip in n for n in allowed):
        return False
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified or not ip.is_global)


class ForbiddenAddress(OSError):
    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"refusing to connect to {host} ({address}): private, loopback or "
                         "link-local address (allow_private_networks is off)")
        self.host = host
        self.address = address


async def check_host(host: str, port: int, allowed: Networks = ()) -> None:
    """Resolve ``host`` and raise ForbiddenAddress if any address is forbidden."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        addresses = [host.strip("[]")]
    except ValueError:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if is_forbidden(address, allowed):
            raise ForbiddenAddress(host, address)


class GuardedResolver(AbstractResolver):
    """The connector's resolver also filters, so a DNS answer that changed between the check
    and the connect (rebinding) still cannot reach a private address."""

    def __init__(self, allowed: Networks = ()) -> None:
        self._inner = DefaultResolver()
        self.allowed = allowed

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            if is_forbidden(r["host"], self.allowed):
                raise ForbiddenAddress(host, r["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
