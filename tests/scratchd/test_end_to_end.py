"""End to end (issue 6 acceptance): scratchd with two tenants and three sinks (kafka on tansu,
redis-server, file) gets pixels, JSON posts, batches and partner-shop actions; every event is
read back from every sink of its tenant and checked field by field."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from pazari.scratchd.ids import timestamp_ms
from tests.scratchd.conftest import read_file_sink, tenant
from tests.support.ports import wait_for
from tests.support.services import consume_all

UA = "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"


def _visitor(reply: Any) -> str:
    cookie: str = reply.headers["Set-Cookie"]
    return cookie.split(";")[0].split("=", 1)[1]


def test_two_tenants_three_sinks(scratchd: Callable[..., Any], kafka_broker: Any,
                                 redis_server: Any, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    out = tmp_path / "events"
    config = {
        "tenants": [tenant("shop", ["shop.test"], ["kafka", "redis", "file"]),
                    tenant("news", ["news.test"], ["kafka", "redis", "file"],
                           anonymize_ip=False)],
        "sinks": {
            "kafka": {"type": "kafka", "topic": f"e2e-{run}-{{tenant}}",
                      "kafka": {"bootstrap.servers": kafka_broker.bootstrap}},
            "redis": {"type": "redis", "url": redis_server.url, "key": f"e2e:{run}:{{tenant}}",
                      "maxlen": 1000},
            "file": {"type": "file", "path": str(out)},
        },
    }
    _, http = scratchd(config)
    started = int(time.time() * 1000)
    hdr = {"User-Agent": UA, "Referer": "https://shop.test/page"}
    pixel = http.request("GET", "/track?url=https%3A%2F%2Fshop.test%2Fp%3Fq%3D1&ref=x&a=%E2%82%AC"
                         "&sent_at=1700000000000", host="shop.test", headers=hdr)
    assert pixel.status == 200
    shop_visitor = _visitor(pixel)
    shop_cookie = {**hdr, "Cookie": f"_sv={shop_visitor}"}
    batch = http.request("POST", "/batch", b'[{"type":"click","el":"buy"},{"type":"scroll"}]',
                         host="shop.test", headers=shop_cookie)
    assert batch.json() == {"accepted": 2, "rejected": []}
    post = http.request("POST", "/track", b'{"type":"read","article":"42","referrer":"r"}',
                        host="news.test", headers={"User-Agent": "Googlebot/2.1"})
    assert post.status == 204
    news_visitor = _visitor(post)
    session = http.request("GET", "/track/create?shop_code=SA-0001-0002", host="news.test",
                           headers={"Cookie": f"_sv={news_visitor}"}).json()["session"]
    actions = quote(json.dumps([{"category": "ecommerce", "type": "addItem",
                                 "data": {"order_id": "o7", "product_id": "p1", "name": "Mug",
                                          "price": 9.99, "quantity": 2}}]))
    beacon = http.request("GET", f"/track/actions/create?shop_code=SA-0001-0002&session={session}"
                          f"&url=u&referer=r&actions={actions}&_=1", host="news.test",
                          headers={"Cookie": f"_sv={news_visitor}"})
    assert beacon.status == 200
    finished = int(time.time() * 1000)

    expected = {
        "shop": [
            ("pageview", shop_visitor, "https://shop.test/p?q=1", None, "127.0.0.0", UA, False,
             {"ref": "x", "a": "€"}, 1700000000000, None),
            ("click", shop_visitor, "https://shop.test/page", None, "127.0.0.0", UA, False,
             {"el": "buy"}, None, None),
            ("scroll", shop_visitor, "https://shop.test/page", None, "127.0.0.0", UA, False,
             {}, None, None),
        ],
        "news": [
            ("read", news_visitor, None, "r", "127.0.0.1", "Googlebot/2.1", True,
             {"article": "42"}, None, None),
            ("session.create", news_visitor, "", "", "127.0.0.1", "Mozilla/5.0 test", False,
             {"shop_code": "SA-0001-0002"}, None, session),
            ("ecommerce.addItem", news_visitor, "u", "r", "127.0.0.1", "Mozilla/5.0 test",
             False, {"order_id": "o7", "product_id": "p1", "name": "Mug", "price": "9.99",
                     "quantity": "2", "shop_code": "SA-0001-0002"}, None, session),
        ],
    }

    def check(events: list[dict[str, Any]], tenant_id: str) -> None:
        want = expected[tenant_id]
        assert len(events) == len(want), events
        for event, (kind, visitor, url, referrer, ip, ua, bot, params, sent, sess) in zip(
            events, want, strict=True
        ):
            assert list(event) == ["id", "tenant", "type", "received_at", "sent_at",
                                   "visitor_id", "session_id", "url", "referrer", "ip",
                                   "user_agent", "bot", "params"]
            assert uuid.UUID(event["id"]).version == 7
            assert started - 5 <= timestamp_ms(event["id"]) <= finished + 5
            assert started <= event["received_at"] <= finished
            assert (event["tenant"], event["type"], event["visitor_id"]) == (
                tenant_id, kind, visitor)
            assert (event["url"], event["referrer"], event["ip"]) == (url, referrer, ip)
            assert (event["user_agent"], event["bot"], event["params"]) == (ua, bot, params)
            assert (event["sent_at"], event["session_id"]) == (sent, sess)

    # file
    wait_for(lambda: len(read_file_sink(out)) == 6, 20, "six events in the file sink")
    by_tenant: dict[str, list[dict[str, Any]]] = {"shop": [], "news": []}
    for event in read_file_sink(out):
        by_tenant[event["tenant"]].append(event)
    for tid in by_tenant:
        check(by_tenant[tid], tid)
    # redis (XADD, approximate MAXLEN)
    client = redis.Redis.from_url(redis_server.url)
    for tid in ("shop", "news"):
        key = f"e2e:{run}:{tid}"
        wait_for(lambda k=key: client.xlen(k) == 3, 20, f"three entries in {key}")
        stream = [json.loads(fields[b"event"]) for _, fields in client.xrange(key)]
        check(stream, tid)
        assert stream == by_tenant[tid]
    # kafka: topic per tenant, key = visitor id
    for tid in ("shop", "news"):
        records = consume_all(kafka_broker.bootstrap, f"e2e-{run}-{tid}", 3, timeout=30)
        events = sorted((json.loads(r.value or b"") for r in records), key=lambda e: e["id"])
        check(events, tid)
        assert events == by_tenant[tid]
        assert {r.key for r in records} == {expected[tid][0][1].encode()}


def test_embedded_default_is_quiet_and_writes_a_file(daemon_factory: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    """Issue 17: ``scratchd`` with no ``--config`` (a newcomer's first run) records pixels
    into the file sink under ``var/scratchd/`` and logs nothing at warning or above (it used
    to point a Kafka sink at 127.0.0.1:9092 and log a connect error every second)."""
    import os

    from tests.scratchd.conftest import SCRATCHD, Http
    from tests.support.ports import free_port

    port = free_port()
    daemon = daemon_factory([SCRATCHD, "--listen", f"127.0.0.1:{port}"], env={**os.environ},
                            cwd=tmp_path)
    http = Http(port)
    try:
        for i in range(3):
            assert http.request("GET", f"/track?type=pageview&n={i}", host="any.test").status \
                == 200
        out = tmp_path / "var" / "scratchd" / "events"
        wait_for(lambda: len(read_file_sink(out)) == 3, 20, "three events in the file sink")
        assert [e["params"]["n"] for e in read_file_sink(out)] == ["0", "1", "2"]
    finally:
        http.close()
    daemon.stop()
    loud = [line for line in daemon.logs().splitlines()
            if "level=info" not in line or "kafka" in line.lower()]
    assert loud == [], daemon.logs()
