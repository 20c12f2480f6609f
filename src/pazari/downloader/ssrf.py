"""The SSRF guard: private, loopback, link-local (and other non-global) destinations are
refused after DNS resolution, on every redirect hop, unless ``allow_private_networks``."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from pazari.downloader.transport import ConnectError, Resolver

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


def guarded(resolver: Resolver, allowed: Networks = ()) -> Resolver:
    """``resolver`` that refuses a host if any of its addresses is forbidden. The client
    dials only what this returned, so a DNS answer that changes between a check and the
    connect (rebinding) cannot reach a private address; a proxy is checked the same way."""

    async def resolve(host: str, port: int) -> list[str]:
        addresses = await resolver(host, port)
        for address in addresses:
            if is_forbidden(address, allowed):
                raise ForbiddenAddress(host, address)
        return addresses

    return resolve


def target_guard(resolver: Resolver, allowed: Networks = ()
                 ) -> Callable[[str], Awaitable[None]]:
    """A check of a URL's host for requests a proxy makes for us: the name is resolved here
    and refused if any address is forbidden (the proxy may resolve it differently, but a
    name that points inward here is refused wherever it points there)."""
    check = guarded(resolver, allowed)

    async def check_url(url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        await check(host, port)

    return check_url


async def default_resolver(host: str, port: int) -> list[str]:
    """IP literals as they are; names through getaddrinfo (libuv's thread pool)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"dial tcp: lookup {host}: {exc.strerror or exc}") from None
    seen: dict[str, None] = {}
    for info in infos:
        seen[str(info[4][0])] = None
    return list(seen)


def caching(resolver: Resolver, ttl: float = 10.0, size: int = 10_000) -> Resolver:
    """``resolver`` with answers kept ``ttl`` seconds (aiohttp's ttl_dns_cache did this).
    Concurrent misses for one host share a single lookup (as aiohttp's do): a burst of jobs
    for a new host asks the resolver once, not once per job."""
    cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
    inflight: dict[tuple[str, int], asyncio.Task[list[str]]] = {}

    async def lookup(key: tuple[str, int]) -> list[str]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        addresses = await resolver(*key)
        if len(cache) >= size:
            cache.clear()
        cache[key] = (now + ttl, addresses)
        return addresses

    def settled(key: tuple[str, int], task: asyncio.Task[list[str]]) -> None:
        inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # every waiter may be gone: not "never retrieved"

    async def resolve(host: str, port: int) -> list[str]:
        key = (host, port)
        hit = cache.get(key)
        if hit is not None and hit[0] > asyncio.get_running_loop().time():
            return hit[1]
        task = inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(lookup(key))
            inflight[key] = task
            task.add_done_callback(lambda done: settled(key, done))
        # Shielded: one caller's deadline must not cancel the lookup the others wait on.
        return await asyncio.shield(task)

    return resolve
