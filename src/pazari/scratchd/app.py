"""HTTP endpoints (spec "Endpoints"): the pixel, JSON posts, batches, health and metrics.
The partner-shop protocol lives in ``partner.py``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from pazari.scratchd.intake import Client, Dropped, Intake, Refused
from pazari.scratchd.tenants import Tenant, TenantRouter
from pazari.scratchd.tracker import TrackerScript

# The 43-byte transparent 1x1 GIF89a every pixel answer carries.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
assert len(GIF) == 43
PIXEL_HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store"}
JSON = "application/json"


def raw_query(request: web.Request) -> bytes:
    """The query string exactly as sent: aiohttp keeps the request target as text decoded
    with surrogateescape, so encoding it back gives the original bytes."""
    _, _, query = request.raw_path.partition("?")
    return query.partition("#")[0].encode("utf-8", "surrogateescape")


def error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": reason}),
                        content_type=JSON, headers=headers)


def pixel_response(client: Client | None) -> web.Response:
    response = web.Response(body=GIF, headers=PIXEL_HEADERS)
    if client is not None and client.set_cookie is not None:
        response.headers["Set-Cookie"] = client.set_cookie
    return response


class Endpoints:
    def __init__(self, router: TenantRouter, intake: Intake, healthy: Callable[[], bool]) -> None:
        self.router = router
        self.intake = intake
        self.healthy = healthy

    def tenant(self, request: web.Request) -> Tenant:
        host = request.headers.get("Host")
        tenant = self.router.lookup(host)
        if tenant is not None and tenant.config.allow_tenant_param:
            named = request.query.get("tenant")
            if named is not None and named != tenant.id:
                picked = self.router.named(named, host)
                if picked is None:
                    self.intake.stats.unknown_host += 1
                    raise web.HTTPNotFound(
                        text=orjson.dumps({"error": f"tenant {named!r} does not serve host "
                                                    f"{request.host!r}"}).decode(),
                        content_type=JSON)
                tenant = picked
        if tenant is None:
            self.intake.stats.unknown_host += 1
            raise web.HTTPNotFound(
                text=orjson.dumps({"error": f"unknown host {request.host!r}"}).decode(),
                content_type=JSON,
            )
        return tenant

    def cors(self, request: web.Request, tenant: Tenant) -> dict[str, str]:
        """CORS headers for an allowed Origin (credentials: the visitor cookie rides along);
        a disallowed Origin gets 403."""
        origin = request.headers.get("Origin")
        if origin is None:
            return {}
        if not tenant.origin_allowed(origin):
            raise web.HTTPForbidden(
                text=orjson.dumps({"error": f"origin {origin!r} not allowed"}).decode(),
                content_type=JSON,
            )
        return {"Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}

    async def preflight(self, request: web.Request) -> web.Response:
        tenant = self.tenant(request)
        headers = self.cors(request, tenant)
        headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        headers["Access-Control-Allow-Headers"] = "Content-Type"
        headers["Access-Control-Max-Age"] = "86400"
        return web.Response(status=204, headers=headers)

    async def pixel(self, request: web.Request) -> web.Response:
        """GET /track: always the GIF (browsers never read pixel errors); refusals counted."""
        tenant = self.tenant(request)
        intake = self.intake
        client: Client | None = None
        try:
            client = intake.client(request, tenant)
            event = intake.encode(tenant, client, "pageview", raw_query(request), None)
            commit = intake.spool_event(tenant, client, event)
            await intake.committed(tenant, commit)
        except (Refused, Dropped):
            pass
        return pixel_response(client)

    async def track(self, request: web.Request) -> web.Response:
        """POST /track: one JSON object → 204."""
        tenant = self.tenant(request)
        cors = self.cors(request, tenant)
        try:
            fields = await self.read_json(request, tenant)
            if not isinstance(fields, dict):
                self.intake.stats.reject(tenant.id, "invalid")
                raise Refused(400, "body must be a JSON object", "invalid")
            client = self.intake.client(request, tenant)
            event = self.intake.encode(tenant, client, "track", None, fields)
            commit = self.intake.spool_event(tenant, client, event)
            await self.intake.committed(tenant, commit)
        except Dropped:
            return web.Response(status=204, headers=cors)
        except Refused as exc:
            return error(exc.status, exc.reason, cors)
        if client.set_cookie is not None:
            cors["Set-Cookie"] = client.set_cookie
        return web.Response(status=204, headers=cors)

    async def batch(self, request: web.Request) -> web.Response:
        """POST /batch: a JSON array or NDJSON → ``{"accepted": n, "rejected": [...]}``."""
        tenant = self.tenant(request)
        cors = self.cors(request, tenant)
        try:
            items = await self.read_batch(request, tenant)
            client = self.intake.client(request, tenant, len(items))
        except Dropped:
            return web.json_response({"accepted": 0, "rejected": []}, headers=cors)
        except Refused as exc:
            return error(exc.status, exc.reason, cors)
        try:
            accepted, rejected, commit = self.intake.record_batch(tenant, client, items)
            if commit is not None:
                await self.intake.committed(tenant, commit, accepted)
        except Refused as exc:
            return error(exc.status, exc.reason, cors)
        if client.set_cookie is not None:
            cors["Set-Cookie"] = client.set_cookie
        body = orjson.dumps({"accepted": accepted, "rejected": rejected})
        return web.Response(body=body, content_type=JSON, headers=cors)

    async def read_body(self, request: web.Request, tenant: Tenant) -> bytes:
        """The whole body, up to the tenant's ``max_body_bytes`` (issue 12: a read of what
        happened to be buffered cut bodies that arrived in several TCP segments). aiohttp's
        stream reader decodes chunked transfer coding (RFC 9112 §7.1) and ends at the
        declared Content-Length, so reading until EOF is the whole body either way."""
        limit = tenant.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            self.intake.stats.reject(tenant.id, "too_large")
            raise Refused(400, f"body too large ({request.content_length} bytes, limit "
                               f"{limit})", "too_large")
        content = request.content
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:  # chunked: no length known in advance
                self.intake.stats.reject(tenant.id, "too_large")
                raise Refused(400, f"body too large (limit {limit} bytes)", "too_large")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read_json(self, request: web.Request, tenant: Tenant) -> Any:
        body = await self.read_body(request, tenant)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.intake.stats.reject(tenant.id, "malformed")
            raise Refused(400, f"malformed JSON: {exc}", "malformed") from None

    async def read_batch(self, request: web.Request, tenant: Tenant) -> list[Any]:
        """A JSON array, or NDJSON (one object per line; a bad line rejects only itself)."""
        body = await self.read_body(request, tenant)
        stripped = body.lstrip()
        items: list[Any]
        if stripped.startswith(b"["):
            try:
                items = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                self.intake.stats.reject(tenant.id, "malformed")
                raise Refused(400, f"malformed JSON: {exc}", "malformed") from None
        else:
            items = []
            for line in body.splitlines():
                if not line.strip():
                    continue
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    self.intake.stats.reject(tenant.id, "malformed")
                    items.append(Refused(400, f"malformed JSON: {exc}", "malformed"))
        if len(items) > tenant.config.max_batch_events:
            self.intake.stats.reject(tenant.id, "too_large", len(items))
            raise Refused(400, f"too many events ({len(items)}, limit "
                               f"{tenant.config.max_batch_events})", "too_large")
        return items

    async def healthz(self, _: web.Request) -> web.Response:
        if self.healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unavailable\n")


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Dispatcher:
    """(method, path) → handler, one dict lookup per request: aiohttp's low-level server
    without the Application router and middleware chain (issue 6: the hot endpoints as lean
    as the framework allows). ``/metrics`` and ``/debug/vars`` are not here: they are served
    only on ``--metrics-addr`` (issue 12: spool paths, tenants and lags are no business of the
    public port)."""

    def __init__(self, endpoints: Endpoints, partner: Any) -> None:
        self.routes: dict[tuple[str, str], Any] = {
            ("GET", "/track"): endpoints.pixel,
            ("POST", "/track"): endpoints.track,
            ("POST", "/batch"): endpoints.batch,
            ("OPTIONS", "/track"): endpoints.preflight,
            ("OPTIONS", "/batch"): endpoints.preflight,
            ("GET", "/track/create"): partner.create,
            ("GET", "/track/connect"): partner.connect,
            ("GET", "/track/actions/create"): partner.actions,
            ("GET", "/healthz"): endpoints.healthz,
            ("GET", "/t.js"): TrackerScript().handle,
        }
        self.paths = {path for _, path in self.routes}

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self.routes.get((request.method, request.path))
        if handler is not None:
            response: web.StreamResponse = await handler(request)
            return response
        if request.path in self.paths:
            return error(405, f"method {request.method} not allowed")
        return error(404, f"no such endpoint {request.path}")
