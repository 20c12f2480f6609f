"""From a request to a spooled event: who the client is (visitor cookie, IP, privacy
signals), the tenant's policies (rate limit, DNT/GPC, sampling, size), encoding and the spool
(spec "Tenancy", "The event", "Persistence"). The HTTP handlers only map outcomes to replies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pazari.event import EventError, encode_fields, encode_query, frame_query, new_id
from pazari.scratchd.dedup import RecentIds
from pazari.scratchd.privacy import (
    ProxyTrust,
    anonymize_ip,
    clean_ip,
    cookie_value,
    is_bot,
    privacy_signal,
    valid_id,
)
from pazari.scratchd.spool import Spool, SpoolFailed, SpoolFull
from pazari.scratchd.stats import Stats, TenantStats
from pazari.scratchd.tenants import Tenant


class Refused(Exception):
    """The event is not recorded; ``status`` and ``reason`` go to the client (the pixel
    answers its GIF anyway), ``counter`` names the rejected/dropped counter."""

    def __init__(self, status: int, reason: str, counter: str, rejected: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.counter = counter
        self.rejected = rejected


class Dropped(Exception):
    """Not recorded on purpose (DNT/GPC, sampling): the client still gets a success."""

    def __init__(self, counter: str) -> None:
        super().__init__(counter)
        self.counter = counter


class Client:
    """Who sent a request, as the tenant's settings want it recorded."""

    __slots__ = ("anonymous", "bot", "ip", "secure", "set_cookie", "url", "user_agent",
                 "visitor_id", "visitor_key")

    def __init__(self, headers: Mapping[str, str], remote: str | None, secure: bool,
                 tenant: Tenant, proxies: ProxyTrust) -> None:
        # ``headers`` is aiohttp's case-insensitive mapping, or the pixel fast path's dict of
        # the few headers read here under their canonical names (pixel.py).
        if proxies.enabled and proxies.peer_trusted(remote):
            ip = proxies.client_ip(remote, _forwarded_for(headers))
            self.secure = headers.get("X-Forwarded-Proto") == "https" or secure
        else:
            ip = remote
            self.secure = secure
        ua = headers.get("User-Agent")
        self.user_agent = ua
        self.bot = is_bot(ua)
        self.url = headers.get("Referer")
        self.set_cookie: str | None = None
        config = tenant.config
        self.anonymous = config.dnt != "ignore" and privacy_signal(
            headers.get("DNT"), headers.get("Sec-GPC")
        )
        if self.anonymous:
            if config.dnt == "drop":
                raise Dropped("dnt")
            # Anonymous: no address, no cookie, a visitor id that lives for one event.
            self.ip = None
            self.visitor_id = new_id()
            self.visitor_key = self.visitor_id.encode()
            return
        self.ip = None if not ip else anonymize_ip(ip) if config.anonymize_ip else clean_ip(ip)
        visitor = cookie_value(headers.get("Cookie"), tenant.cookie_name)
        if not valid_id(visitor):
            visitor = new_id()
            self.set_cookie = tenant.visitor_cookie(visitor, self.secure)
        assert visitor is not None
        self.visitor_id = visitor
        self.visitor_key = visitor.encode()  # the spool's record key (spec: key = visitor id)


def _forwarded_for(headers: Mapping[str, str]) -> str | None:
    """Every X-Forwarded-For field line joined (RFC 9110 §5.3: one list split over several
    lines); the fast path's dict already holds them joined."""
    getall = getattr(headers, "getall", None)
    if getall is None:
        return headers.get("X-Forwarded-For")
    values: list[str] = getall("X-Forwarded-For", [])
    return ", ".join(values) if values else None


class Intake:
    def __init__(self, spool: Spool, stats: Stats, proxies: ProxyTrust) -> None:
        self.spool = spool
        self.stats = stats
        self.proxies = proxies
        self.clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000
        # Batches resent by the browser tracker carry event ids (dedup.py).
        self.recent = RecentIds()

    def client(self, request: web.Request, tenant: Tenant, n: int = 1) -> Client:
        """Identify the client and apply the rate limit; raises Refused/Dropped (counted)."""
        return self.client_of(request.headers, request.remote, request.secure, tenant, n)

    def client_of(self, headers: Mapping[str, str], remote: str | None, secure: bool,
                  tenant: Tenant, n: int = 1) -> Client:
        """``client`` from the parts of a request (the pixel fast path has no web.Request)."""
        counters = self.stats.tenants[tenant.id]
        counters.received += n
        self.stats.events_total += n
        try:
            client = Client(headers, remote, secure, tenant, self.proxies)
        except Dropped as drop:
            counters.dropped[drop.counter] += n
            raise
        return self._admit(tenant, counters, client, n)

    def readmit(self, tenant: Tenant, client: Client) -> Client:
        """``client_of`` for a request whose headers, peer and tenant are those of an earlier
        one that gave ``client`` (the pixel path's per-connection cache): the same counters,
        rate limit and sampling, without identifying the client again. Only for a client
        that is a pure function of them: not anonymous, its visitor id from the cookie."""
        counters = self.stats.tenants[tenant.id]
        counters.received += 1
        self.stats.events_total += 1
        return self._admit(tenant, counters, client, 1)

    @staticmethod
    def _admit(tenant: Tenant, counters: TenantStats, client: Client, n: int) -> Client:
        if tenant.admits_all:
            return client
        if not tenant.limiter.allow(client.ip or "", n):
            counters.dropped["rate_limit"] += n
            raise Refused(429, "rate limit exceeded", "rate_limit", rejected=False)
        if not tenant.sampled(client.visitor_id):
            counters.dropped["sampled"] += n
            raise Dropped("sampled")
        return client

    def encode(self, tenant: Tenant, client: Client, kind: str, query: bytes | None,
               fields: dict[str, Any] | None) -> bytes:
        """Encode one event; raises Refused(400) with the reason (counted)."""
        try:
            if query is not None:
                event = encode_query(query, new_id(), tenant.id, kind, self.clock(),
                                     client.visitor_id, client.url, client.ip,
                                     client.user_agent, client.bot)
            else:
                assert fields is not None
                event = encode_fields(fields, new_id(), tenant.id, kind, self.clock(),
                                      client.visitor_id, client.url, client.ip,
                                      client.user_agent, client.bot)
        except EventError as exc:
            self.stats.tenants[tenant.id].rejected["invalid"] += 1
            raise Refused(400, str(exc), "invalid") from None
        if len(event) > tenant.config.max_event_bytes:
            self.stats.tenants[tenant.id].rejected["too_large"] += 1
            raise Refused(400, f"event too large ({len(event)} bytes, limit "
                               f"{tenant.config.max_event_bytes})", "too_large")
        return event

    def record_batch(self, tenant: Tenant, client: Client, items: list[Any]
                     ) -> tuple[int, list[dict[str, Any]], asyncio.Future[None] | None]:
        """Encode and spool the events of one ``POST /batch`` (all spooled or a 503):
        ``(accepted, rejected [{index, error}], commit)``. One clock reading for the batch
        (the events were received together) and one spool append for all of them."""
        counters = self.stats.tenants[tenant.id]
        rejected: list[dict[str, Any]] = []
        events: list[bytes] = []
        limit = tenant.config.max_event_bytes
        now = self.clock()
        tid = tenant.id
        visitor, url, ip, ua, bot = (client.visitor_id, client.url, client.ip,
                                     client.user_agent, client.bot)
        recent = self.recent
        ids: list[tuple[str, str]] = []
        batch_ids: set[tuple[str, str]] = set()
        for index, item in enumerate(items):
            if type(item) is not dict:
                if isinstance(item, Refused):  # an NDJSON line that did not parse (counted)
                    rejected.append({"index": index, "error": item.reason})
                    continue
                counters.rejected["invalid"] += 1
                rejected.append({"index": index, "error": "event must be a JSON object"})
                continue
            key = recent.key_of(tid, item) if "event_id" in item else None
            if key is not None and (key in batch_ids or recent.seen(key)):
                counters.dropped["duplicate"] += 1
                continue
            try:
                event = encode_fields(item, new_id(), tid, "track", now, visitor, url, ip, ua,
                                      bot)
            except EventError as exc:
                counters.rejected["invalid"] += 1
                rejected.append({"index": index, "error": str(exc)})
                continue
            if len(event) > limit:
                counters.rejected["too_large"] += 1
                rejected.append({"index": index, "error": f"event too large ({len(event)} "
                                                          f"bytes, limit {limit})"})
                continue
            events.append(event)
            if key is not None:
                ids.append(key)
                batch_ids.add(key)
        if not events:
            return 0, rejected, None
        try:
            commit = self.spool.append_many(tenant.id_bytes, visitor.encode(), events)
        except SpoolFull as exc:
            counter = _spool_counter(exc)
            counters.dropped[counter] += len(events)
            raise Refused(503, str(exc), counter, rejected=False) from None
        if ids:
            # Ids count as seen once their events are on disk: a batch refused or lost to a
            # failed write may (and should) be sent again.
            commit.add_done_callback(
                lambda done: None if done.cancelled() or done.exception() else
                recent.remember(ids))
        counters.spooled += len(events)
        return len(events), rejected, commit

    def spool_query(self, tenant: Tenant, client: Client, kind: str,
                    query: bytes) -> asyncio.Future[None]:
        """``encode`` and ``spool_event`` of a query-string event in one step (the pixel path,
        issue 17): the encoder frames the record straight into the spool's pending buffer
        (``frame_query``), one call across the Cython boundary per event. Same outcomes and
        counters: Refused(400) for an invalid or too large event, Refused(503) past the
        quota."""
        spool = self.spool
        try:
            pending = spool.framing_buffer()
        except SpoolFull:
            # Encode first, as encode + spool_event do: an invalid event is a 400 even then.
            return self.spool_event(tenant, client, self.encode(tenant, client, kind, query,
                                                                None))
        limit = tenant.config.max_event_bytes
        try:
            size = frame_query(pending, tenant.id_bytes, client.visitor_key, limit, query,
                               new_id(), tenant.id, kind, self.clock(), client.visitor_id,
                               client.url, client.ip, client.user_agent, client.bot)
        except EventError as exc:
            self.stats.tenants[tenant.id].rejected["invalid"] += 1
            raise Refused(400, str(exc), "invalid") from None
        counters = self.stats.tenants[tenant.id]
        if size > limit:
            counters.rejected["too_large"] += 1
            raise Refused(400, f"event too large ({size} bytes, limit {limit})", "too_large")
        counters.spooled += 1
        return spool.framed()

    def spool_event(self, tenant: Tenant, client: Client, event: bytes) -> asyncio.Future[None]:
        """Append to the spool; raises Refused(503) past the quota (counted as a drop)."""
        try:
            commit = self.spool.append(tenant.id_bytes, client.visitor_key, event)
        except SpoolFull as exc:
            counter = _spool_counter(exc)
            self.stats.tenants[tenant.id].dropped[counter] += 1
            raise Refused(503, str(exc), counter, rejected=False) from None
        self.stats.tenants[tenant.id].spooled += 1
        return commit

    async def committed(self, tenant: Tenant, commit: asyncio.Future[None], n: int = 1) -> None:
        """Wait for the fsync under ``ack: "spooled"``; a failed write is a 503."""
        if not tenant.spooled_ack:
            return
        try:
            await commit
        except OSError as exc:
            self.stats.tenants[tenant.id].dropped["spool_error"] += n
            raise Refused(503, f"spool write failed: {exc}", "spool_error",
                          rejected=False) from None


def _spool_counter(exc: SpoolFull) -> str:
    return "spool_error" if isinstance(exc, SpoolFailed) else "spool_full"
