"""The HTTP endpoints of a real scratchd process (spec "Endpoints", "Tenancy", "The event")."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pazari.scratchd.app import GIF
from tests.scratchd.conftest import read_file_sink, tenant
from tests.support.ports import wait_for


@pytest.fixture
def served(scratchd: Callable[..., Any], tmp_path: Path) -> tuple[Any, Any, Path]:
    out = tmp_path / "events"
    config = {
        "tenants": [
            tenant("a", ["a.test"], ["file"], allowed_origins=["https://shop-a.test"],
                   cookie={"name": "_va", "domain": "a.test"}, max_body_bytes=20000,
                   max_batch_events=10),
            tenant("dnt", ["dnt.test"], ["file"], dnt="drop"),
            tenant("anon", ["anon.test"], ["file"], dnt="anonymize", anonymize_ip=False),
            tenant("none", ["sampled.test"], ["file"], sampling=0.0),
            tenant("small", ["small.test"], ["file"], max_event_bytes=700),
            tenant("slow", ["slow.test"], ["file"], rate_limit={"per_ip_rate": 0.01,
                                                               "per_ip_burst": 2}),
        ],
        "sinks": {"file": {"type": "file", "path": str(out)}},
    }
    daemon, http = scratchd(config)
    return daemon, http, out


def _vars(http: Any) -> dict[str, Any]:
    doc: dict[str, Any] = http.vars()["scratchd"]
    return doc


def test_pixel_answers_gif_and_sets_visitor_cookie(served: tuple[Any, Any, Path]) -> None:
    _, http, out = served
    reply = http.request("GET", "/track?a=1&url=https%3A%2F%2Fa.test%2Fp",
                         headers={"X-Forwarded-Proto": "https"})
    assert reply.status == 200 and reply.body == GIF and len(GIF) == 43
    assert reply.headers["Content-Type"] == "image/gif"
    assert reply.headers["Cache-Control"] == "no-store"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("_va=") and "SameSite=Lax" in cookie and "Domain=a.test" in cookie
    assert "Secure" not in cookie  # X-Forwarded-Proto is not trusted by this config
    visitor = cookie.split(";")[0].split("=")[1]
    again = http.request("GET", "/track?b=2", headers={"Cookie": f"_va={visitor}"})
    assert "Set-Cookie" not in again.headers
    wait_for(lambda: len(read_file_sink(out)) == 2, 10, "two events in the file sink")
    first, second = read_file_sink(out)
    assert first["visitor_id"] == second["visitor_id"] == visitor
    assert first["url"] == "https://a.test/p" and first["params"] == {"a": "1"}
    assert first["ip"] == "127.0.0.0" and first["tenant"] == "a" and not first["bot"]


REFUSED_PIXELS = [
    ("too many params", "/track?" + "&".join(f"k{i}=1" for i in range(300)), "a.test",
     {}, ("rejected", "invalid")),
    ("dnt drop", "/track?x=1", "dnt.test", {"DNT": "1"}, ("dropped", "dnt")),
    ("gpc drop", "/track?x=1", "dnt.test", {"Sec-GPC": "1"}, ("dropped", "dnt")),
    ("sampled out", "/track?x=1", "sampled.test", {}, ("dropped", "sampled")),
    ("too large", "/track?x=" + "y" * 1000, "small.test", {}, ("rejected", "too_large")),
]


@pytest.mark.parametrize(("target", "host", "headers", "counter"),
                         [c[1:] for c in REFUSED_PIXELS], ids=[c[0] for c in REFUSED_PIXELS])
def test_pixel_always_answers_and_counts(served: tuple[Any, Any, Path], target: str, host: str,
                                         headers: dict[str, str],
                                         counter: tuple[str, str]) -> None:
    _, http, out = served
    reply = http.request("GET", target, host=host, headers=headers)
    assert reply.status == 200 and reply.body == GIF
    tenant_id = {"a.test": "a", "dnt.test": "dnt", "sampled.test": "none",
                 "small.test": "small"}[host]
    assert _vars(http)["tenants"][tenant_id][counter[0]][counter[1]] == 1
    assert read_file_sink(out) == []


def test_rate_limit_per_ip(served: tuple[Any, Any, Path]) -> None:
    _, http, _ = served
    for _ in range(4):
        assert http.request("GET", "/track?x=1", host="slow.test").status == 200
    assert _vars(http)["tenants"]["slow"]["dropped"]["rate_limit"] == 2
    assert http.request("POST", "/track", b"{}", host="slow.test").status == 429


def test_dnt_anonymize_drops_address_and_cookie(served: tuple[Any, Any, Path]) -> None:
    _, http, out = served
    reply = http.request("GET", "/track?x=1", host="anon.test", headers={"DNT": "1"})
    assert reply.status == 200 and "Set-Cookie" not in reply.headers
    wait_for(lambda: len(read_file_sink(out)) == 1, 10, "the anonymous event")
    assert read_file_sink(out)[0]["ip"] is None


POSTS = [
    ("object", "/track", b'{"type":"signup","plan":"pro","n":3}', 204, None),
    ("malformed", "/track", b'{"type":', 400, "malformed JSON"),
    ("not an object", "/track", b"[1]", 400, "body must be a JSON object"),
    ("oversize", "/track", b'{"x":"' + b"v" * 30000 + b'"}', 400, "body too large"),
    ("value too long", "/track", b'{"x":"' + b"v" * 5000 + b'"}', 400, "value too long"),
    ("batch too many", "/batch", b"[" + b",".join([b"{}"] * 11) + b"]", 400,
     "too many events"),
    ("batch malformed", "/batch", b"[{}", 400, "malformed JSON"),
]


@pytest.mark.parametrize(("path", "body", "status", "reason"), [c[1:] for c in POSTS],
                         ids=[c[0] for c in POSTS])
def test_post_track(served: tuple[Any, Any, Path], path: str, body: bytes, status: int,
                    reason: str | None) -> None:
    _, http, out = served
    reply = http.request("POST", path, body, headers={"Content-Type": "application/json"})
    assert reply.status == status, reply.body
    if reason is not None:
        assert reason in reply.json()["error"]
        return
    wait_for(lambda: len(read_file_sink(out)) == 1, 10, "the posted event")
    event = read_file_sink(out)[0]
    assert event["type"] == "signup" and event["params"] == {"plan": "pro", "n": "3"}


@pytest.mark.parametrize("ndjson", [False, True], ids=["array", "ndjson"])
def test_batch(served: tuple[Any, Any, Path], ndjson: bool) -> None:
    _, http, out = served
    items = [b'{"i":"0"}', b'"str"', b'{"i":"2","k":"' + b"x" * 5000 + b'"}', b'{"i":"3"}']
    body = b"\n".join(items) if ndjson else b"[" + b",".join(items) + b"]"
    reply = http.request("POST", "/batch", body)
    assert reply.status == 200
    assert reply.json() == {"accepted": 2, "rejected": [
        {"index": 1, "error": "event must be a JSON object"},
        {"index": 2, "error": "value too long (5000 bytes, limit 4096)"},
    ]}
    wait_for(lambda: len(read_file_sink(out)) == 2, 10, "the batch")
    assert [e["params"]["i"] for e in read_file_sink(out)] == ["0", "3"]


def test_unknown_host_is_404_and_records_nothing(served: tuple[Any, Any, Path]) -> None:
    _, http, out = served
    for method, path in (("GET", "/track?x=1"), ("POST", "/track")):
        reply = http.request(method, path, b"{}" if method == "POST" else None,
                             host="nobody.test")
        assert reply.status == 404 and "unknown host" in reply.json()["error"]
    assert _vars(http)["unknown_host"] == 2 and read_file_sink(out) == []


@pytest.mark.parametrize(("origin", "status"), [
    ("https://shop-a.test", 204), ("https://evil.test", 403),
], ids=["allowed", "denied"])
def test_cors(served: tuple[Any, Any, Path], origin: str, status: int) -> None:
    _, http, _ = served
    pre = http.request("OPTIONS", "/track", headers={"Origin": origin})
    assert pre.status == status
    reply = http.request("POST", "/track", b"{}", headers={"Origin": origin})
    assert reply.status == status
    if status == 204:
        assert reply.headers["Access-Control-Allow-Origin"] == origin
        assert reply.headers["Access-Control-Allow-Credentials"] == "true"


def test_health_metrics_and_vars(served: tuple[Any, Any, Path]) -> None:
    _, http, _ = served
    assert http.request("GET", "/healthz").status == 200
    http.request("GET", "/track?x=1")
    wait_for(lambda: _vars(http)["sinks"]["file"]["delivered"].get("a") == 1, 10, "delivery")
    metrics = http.metrics()
    for line in ('scratchd_events_received_total{tenant="a"} 1.0',
                 'scratchd_events_spooled_total{tenant="a"} 1.0',
                 'scratchd_events_delivered_total{sink="file",tenant="a"} 1.0',
                 "scratchd_spool_bytes ", 'scratchd_sink_lag_bytes{sink="file"}',
                 "scratchd_gc_pause_ms_per_100k_events"):
        assert line in metrics, line
    doc = _vars(http)
    assert "gc_pause_ms_per_100k_events" in doc and doc["spool_bytes"] > 0


def test_partner_shop_protocol(served: tuple[Any, Any, Path]) -> None:
    _, http, out = served
    created = http.request("GET", "/track/create?shop_code=SA-1234-5678&url=https%3A%2F%2Fs%2F")
    assert created.status == 200
    session = created.json()["session"]
    assert any(c.startswith(f"_ss={session}") for c in created.headers.get_all("Set-Cookie"))
    connected = http.request("GET", "/track/connect?shop_code=SA-1234-5678",
                             headers={"Cookie": f"_ss={session}"})
    assert connected.json() == {"session": session}
    actions = [
        {"category": "site", "type": "sendPageView", "data": {}},
        {"category": "ecommerce", "type": "addOrder",
         "data": {"order_id": "o1", "revenue": 10.5, "shipping": 2, "tax": 1, "paid_by": "card"}},
        {"category": "ecommerce", "type": "addItem",
         "data": {"order_id": "o1", "product_id": "p9", "name": "Shoe", "price": 10.5,
                  "quantity": 1}},
        {"category": "yogurt", "type": "productClick", "data": {"product_id": "p9"}},
        {"category": "bogus", "type": "thing", "data": {}},
    ]
    from urllib.parse import quote

    target = (f"/track/actions/create?shop_code=SA-1234-5678&session={session}"
              f"&url=https%3A%2F%2Fs%2Fcheckout&referer=https%3A%2F%2Fs%2Fcart"
              f"&actions={quote(json.dumps(actions))}&_=123")
    reply = http.request("GET", target)
    assert reply.status == 200 and reply.body == GIF
    bad = http.request("GET", "/track/actions/create?shop_code=nope&session=x&actions=[]")
    assert bad.status == 200 and bad.body == GIF
    assert http.request("GET", "/track/create?shop_code=bad").status == 400
    wait_for(lambda: len(read_file_sink(out)) == 6, 10, "six partner events")
    events = read_file_sink(out)
    assert [e["type"] for e in events] == [
        "session.create", "session.connect", "site.sendPageView", "ecommerce.addOrder",
        "ecommerce.addItem", "yogurt.productClick"]
    order = events[3]
    assert order["session_id"] == session and order["url"] == "https://s/checkout"
    assert order["referrer"] == "https://s/cart"
    assert order["params"] == {"order_id": "o1", "revenue": "10.5", "shipping": "2",
                               "tax": "1", "paid_by": "card", "shop_code": "SA-1234-5678"}
    assert _vars(http)["tenants"]["a"]["rejected"]["invalid"] == 3
