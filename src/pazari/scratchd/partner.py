"""The partner-shop protocol (spec "Endpoints"): shops embed a tracker that creates or finds a
session (``/track/create``, ``/track/connect``) and sends action beacons
(``/track/actions/create?shop_code=…&session=…&url=…&referer=…&actions=[…]&_=…``), each
action ``{category, type, data}`` becoming one event of type ``<category>.<type>``."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import orjson
from aiohttp import web

from pazari.scratchd.app import JSON, Endpoints, pixel_response
from pazari.scratchd.ids import new_id
from pazari.scratchd.intake import Client, Dropped, Refused
from pazari.scratchd.privacy import cookie_value, privacy_signal, valid_id
from pazari.scratchd.tenants import Tenant

SHOP_CODE = re.compile(r"^SA-[A-Z0-9]{4}-[A-Z0-9]{4}$")
ACTION_TYPES = frozenset({
    "site.sendPageView", "ecommerce.addOrder", "ecommerce.addItem", "yogurt.productClick",
})
# Fields an action must carry (spec: addOrder order_id, revenue, …; addItem order_id, …).
REQUIRED = {
    "ecommerce.addOrder": ("order_id",),
    "ecommerce.addItem": ("order_id", "product_id"),
    "yogurt.productClick": ("product_id",),
}
MAX_ACTIONS = 50


def _shop_code(request: web.Request) -> str:
    code = request.query.get("shop_code", "")
    if not SHOP_CODE.match(code):
        raise Refused(400, f"invalid shop_code {code!r} (expected SA-XXXX-YYYY)", "invalid")
    return code


class Partner:
    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.intake = endpoints.intake

    def _session(self, request: web.Request, tenant: Tenant, fresh: bool) -> tuple[str, bool]:
        """(session id, created?) from the ``session`` parameter or the session cookie."""
        if not fresh:
            for candidate in (request.query.get("session"),
                              cookie_value(request.headers.get("Cookie"),
                                           tenant.session_cookie)):
                if valid_id(candidate):
                    assert candidate is not None
                    return candidate, False
        return new_id(), True

    async def _session_event(self, request: web.Request, kind: str) -> web.Response:
        endpoints = self.endpoints
        tenant = endpoints.tenant(request)
        headers = endpoints.cors(request, tenant)
        try:
            shop = _shop_code(request)
        except Refused as exc:
            endpoints.intake.stats.reject(tenant.id, exc.counter)
            return web.json_response({"error": exc.reason}, status=400, headers=headers)
        session, created = self._session(request, tenant, kind == "session.create")
        client: Client | None = None
        try:
            client = self.intake.client(request, tenant)
            fields = {"session_id": session, "shop_code": shop,
                      "url": request.query.get("url", client.url or ""),
                      "referrer": request.query.get("referer", "")}
            event = self.intake.encode(tenant, client, kind, None, fields)
            await self.intake.committed(tenant, self.intake.spool_event(tenant, client, event))
        except Dropped:
            pass
        except Refused as exc:
            return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
        response = web.Response(body=orjson.dumps({"session": session}), content_type=JSON,
                                headers=headers)
        secure = client.secure if client is not None else request.secure
        cookies = [tenant.session_cookie_header(session, secure)] if (
            created or kind == "session.connect") and not _private(request, tenant) else []
        if client is not None and client.set_cookie is not None:
            cookies.append(client.set_cookie)
        for cookie in cookies:
            response.headers.add("Set-Cookie", cookie)
        return response

    async def create(self, request: web.Request) -> web.Response:
        """GET /track/create: a new session; returns ``{"session": id}`` and sets the cookie."""
        return await self._session_event(request, "session.create")

    async def connect(self, request: web.Request) -> web.Response:
        """GET /track/connect: the session of this visitor (created if there is none)."""
        return await self._session_event(request, "session.connect")

    async def actions(self, request: web.Request) -> web.Response:
        """GET /track/actions/create: a beacon, so it always answers with the GIF."""
        endpoints = self.endpoints
        tenant = endpoints.tenant(request)
        intake = self.intake
        client: Client | None = None
        try:
            shop = _shop_code(request)
            actions = _parse_actions(request.query.get("actions", ""))
            session = request.query.get("session", "")
            if not valid_id(session):
                raise Refused(400, "invalid session", "invalid")
        except Refused as exc:
            intake.stats.reject(tenant.id, exc.counter)
            return pixel_response(None)
        try:
            client = intake.client(request, tenant, len(actions))
        except (Refused, Dropped):
            return pixel_response(client)
        base = {"session_id": session, "shop_code": shop,
                "url": request.query.get("url", client.url or ""),
                "referrer": request.query.get("referer", "")}
        commit = None
        for action in actions:
            try:
                kind, data = _check_action(action)
            except Refused as exc:
                intake.stats.reject(tenant.id, exc.counter)
                continue
            try:
                event = intake.encode(tenant, client, kind, None, {**data, **base})
                commit = intake.spool_event(tenant, client, event)
            except Refused as exc:  # counted by the intake
                if exc.status == 503:
                    break
        if commit is not None:
            with contextlib.suppress(Refused):
                await intake.committed(tenant, commit)
        return pixel_response(client)


def _private(request: web.Request, tenant: Tenant) -> bool:
    """DNT / GPC from a visitor of a tenant that honours them: no cookie of any kind
    (issue 12), the session cookie included; the session id still comes back in the body
    for the tracker's own use on that page."""
    return tenant.config.dnt != "ignore" and privacy_signal(
        request.headers.get("DNT"), request.headers.get("Sec-GPC"))


def _parse_actions(text: str) -> list[Any]:
    try:
        actions = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"malformed actions JSON: {exc}", "malformed") from None
    if not isinstance(actions, list) or not actions or len(actions) > MAX_ACTIONS:
        raise Refused(400, f"actions must be a JSON array of 1-{MAX_ACTIONS} actions", "invalid")
    return actions


def _check_action(action: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(action, dict):
        raise Refused(400, "action must be an object", "invalid")
    kind = f"{action.get('category')}.{action.get('type')}"
    if kind not in ACTION_TYPES:
        raise Refused(400, f"unknown action {kind!r}", "invalid")
    data = action.get("data") or {}
    if not isinstance(data, dict):
        raise Refused(400, "action data must be an object", "invalid")
    for name in REQUIRED.get(kind, ()):
        if name not in data:
            raise Refused(400, f"{kind} needs {name}", "invalid")
    return kind, data
