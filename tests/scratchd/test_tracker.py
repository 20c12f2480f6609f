"""The browser tracker (src/pazari/scratchd/tracker/tracker.js) in a real browser: Debian's
chromium, headless, driven by Playwright through ``executable_path`` (no ``playwright
install``), each browser with a fresh user-data-dir. The pages come from their own origin
(a small HTTP server on another port), scratchd from the real console script with a file
sink, so every check reads what scratchd recorded.

With CI=true a missing chromium or Playwright fails the run instead of skipping it.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pazari.scratchd.dedup import RecentIds
from pazari.scratchd.tracker import TrackerScript, script_bytes
from tests.scratchd.conftest import read_file_sink, tenant
from tests.support.ports import free_port, wait_for

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]  # fmt: skip
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _require(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI (CI=true)")
    pytest.skip(f"{what} not available")


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        _require("chromium (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("playwright (pip install playwright)")
    with sync_playwright() as pw:
        yield pw


Launch = Callable[..., Any]


@pytest.fixture
def launch(playwright: Any, tmp_path: Path) -> Iterator[Launch]:
    """``launch(dnt=False)``: a chromium with a fresh user-data-dir (DNT set in its
    preferences, as the user's setting is), closed after the test."""
    _chromium()
    contexts: list[Any] = []

    def make(dnt: bool = False) -> Any:
        profile = tmp_path / f"profile-{len(contexts)}"
        (profile / "Default").mkdir(parents=True)
        if dnt:
            (profile / "Default" / "Preferences").write_text(
                json.dumps({"enable_do_not_track": True}))
        ctx = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


class Pages:
    """Serves HTML pages (and a copy of the script) from an origin of its own."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        files = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = files.get(self.path.split("?")[0], (b"not found", "text/plain"))
                self.send_response(200 if self.path.split("?")[0] in files else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="pages",
                                       daemon=True)
        self.thread.start()

    def page(self, path: str, script_src: str, calls: str) -> str:
        """A page with the snippet (queue stub, async script) followed by ``calls``."""
        html = f"""<!doctype html><html><head><title>Shop page</title><script>
!function(w,d,s){{w.pazari=w.pazari||function(){{(w.pazari.q=w.pazari.q||[]).push(arguments)}};
s=d.createElement('script');s.async=1;s.src='{script_src}';d.head.appendChild(s)}}(window,document);
{calls}
</script></head><body><p>hello</p></body></html>"""
        self.files[path] = (html.encode(), "text/html; charset=utf-8")
        return self.origin + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def pages() -> Iterator[Pages]:
    p = Pages()
    yield p
    p.close()


def _config(out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "tenants": [tenant("web", ["*"], ["file"], allowed_origins=["*"],
                           allow_tenant_param=True, **extra)],
        "sinks": {"file": {"type": "file", "path": str(out)}},
    }


def _events(out: Path, n: int, what: str) -> list[dict[str, Any]]:
    return wait_for(lambda: (lambda ev: ev if len(ev) >= n else None)(read_file_sink(out)),
                    30, what)  # type: ignore[no-any-return]


def _outbox(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("JSON.parse(localStorage.getItem('pazari_outbox') || '[]')")  # type: ignore[no-any-return]


def test_snippet_page_events_reach_the_file_sink(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path
) -> None:
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    # Every call is made before the script has loaded: the queue stub keeps them.
    url = pages.page("/shop", f"{collector}/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', spa: true}});
pazari('page');
pazari('track', 'add_to_cart', {{sku: 'A1', qty: 2, tags: ['x', 'y']}});
pazari('identify', 'user-42');
pazari('ecommerce', 'addOrder', {{order_id: 'o1', revenue: 20.5, shipping: 2, tax: 4.1,
                                  paid_by: 'card'}});
pazari('ecommerce', 'addItem',
       '{{"order_id":"o1","product_id":"p9","name":"Mug","price":9.5,"quantity":2}}');
pazari('ecommerce', 'addItem', {{order_id: 'o1'}});
pazari('productClick', {{product_id: 'p9', shop_code: 'SA-0001-0002'}});
""")
    page = launch().new_page()
    page.goto(url)
    events = _events(out, 6, "the six events of the page")
    types = [e["type"] for e in events]
    assert types == ["pageview", "add_to_cart", "identify", "ecommerce.addOrder",
                     "ecommerce.addItem", "yogurt.productClick"]
    ids = [e["params"]["event_id"] for e in events]
    assert len(set(ids)) == 6 and all(UUID.match(i) for i in ids)
    assert {e["params"]["anonymous_id"] for e in events} == {events[0]["params"]["anonymous_id"]}
    for e in events:
        assert e["tenant"] == "web" and e["url"] == url
        assert isinstance(e["sent_at"], int) and e["sent_at"] <= e["received_at"] + 60_000
        assert "HeadlessChrome" in e["user_agent"] and e["visitor_id"]
    assert events[0]["params"]["title"] == "Shop page"
    assert events[1]["params"] == {**events[1]["params"], "sku": "A1", "qty": "2",
                                   "tags": '["x","y"]'}
    assert "user_id" not in events[1]["params"]
    assert all(e["params"]["user_id"] == "user-42" for e in events[2:])
    assert events[3]["params"]["revenue"] == "20.5" and events[3]["params"]["paid_by"] == "card"
    assert events[4]["params"]["product_id"] == "p9" and events[4]["params"]["quantity"] == "2"
    # SPA page views: pushState, then back (popstate).
    page.evaluate("history.pushState({}, '', '/shop/cart')")
    events = _events(out, 7, "the pushState page view")
    assert (events[6]["type"], events[6]["url"]) == ("pageview", pages.origin + "/shop/cart")
    page.go_back()
    events = _events(out, 8, "the popstate page view")
    assert (events[7]["type"], events[7]["url"]) == ("pageview", url)
    wait_for(lambda: _outbox(page) == [], 10, "an empty outbox")


# Without fetch keepalive (Firefox before 133) the way out is sendBeacon.
NO_KEEPALIVE = "delete Request.prototype.keepalive;"
# Notes each keepalive fetch (F) and beacon (B) in the page origin's localStorage, which
# outlives the page (Playwright does not report the requests of a closing page).
RECORD_SENDS = """
const note = k => localStorage.setItem('__sent', (localStorage.getItem('__sent') || '') + k);
const realFetch = window.fetch;
window.fetch = function (u, o) {
  if (o && o.keepalive) note('F');
  return realFetch.apply(this, arguments);
};
const realBeacon = Navigator.prototype.sendBeacon;
Navigator.prototype.sendBeacon = function () {
  note('B');
  return realBeacon.apply(this, arguments);
};
"""


@pytest.mark.parametrize("transport", ["fetch_keepalive", "send_beacon"])
def test_closed_right_after_track_delivers_by_beacon(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path,
    transport: str,
) -> None:
    """A flush interval of ten minutes: only the send on pagehide can deliver in time
    (fetch with keepalive, or sendBeacon where fetch has no keepalive)."""
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    url = pages.page("/p", f"{collector}/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 600000,
                 batchSize: 1000}});
""")
    ctx = launch()
    if transport == "send_beacon":
        ctx.add_init_script(NO_KEEPALIVE)
    ctx.add_init_script(RECORD_SENDS)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function(LOADED)
    page.evaluate("pazari('track', 'checkout', {step: 3})")
    assert [e["type"] for e in _outbox(page)] == ["checkout"]
    page.close(run_before_unload=True)
    events = _events(out, 1, "the beaconed event")
    assert [(e["type"], e["params"]["step"]) for e in events] == [("checkout", "3")]
    pages.files["/blank"] = (b"<!doctype html><title>no tracker</title>", "text/html")
    later = ctx.new_page()
    later.goto(pages.origin + "/blank")
    sent = later.evaluate("localStorage.getItem('__sent')")
    assert set(sent) == {"F" if transport == "fetch_keepalive" else "B"}, sent


# The script has loaded: the queue stub's array is replaced by the live queue.
LOADED = "window.pazari && window.pazari.q && !Array.isArray(window.pazari.q)"


def pump(page: Any, predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait for ``predicate`` while Playwright dispatches the page's events (its route
    handlers run only inside Playwright calls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)


# Counts the tracker's fetches (when called) and those that failed at the network level.
COUNT_FAILURES = """
window.__failures = 0;
window.__calls = 0;
const realFetch = window.fetch;
window.fetch = function () {
  window.__calls++;
  const p = realFetch.apply(this, arguments);
  p.catch(() => { window.__failures++; });
  return p;
};
"""


def test_server_down_then_back_delivers_everything_exactly_once(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path
) -> None:
    """The collector is down for the first sends (and across a page load); when it is back,
    the first send is recorded but its answer lost (the browser sees a network error), so
    the tracker sends the same events again; scratchd keeps each once."""
    out = tmp_path / "events"
    port = free_port()
    collector = f"http://127.0.0.1:{port}"
    daemon, http = scratchd(_config(out), port=port, start=False)
    pages.files["/t.js"] = (script_bytes(), "application/javascript")
    url = pages.page("/down", "/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 50}});
pazari('page');
pazari('track', 'a', {{n: 1}});
pazari('track', 'b', {{n: 2}});
""")
    ctx = launch()
    ctx.add_init_script(COUNT_FAILURES)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function("window.__failures >= 1")
    assert [e["type"] for e in _outbox(page)] == ["pageview", "a", "b"]
    # The next page load keeps the outbox and adds its own events.
    page.goto(pages.page("/down2", "/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 50}});
pazari('page');
"""))
    page.wait_for_function("window.__failures >= 1")
    page.evaluate("pazari('track', 'c', {n: 3})")
    wait_for(lambda: [e["type"] for e in _outbox(page)] == ["pageview", "a", "b", "pageview", "c"],
             10, "five events in the outbox")
    daemon.start()
    recorded_then_lost: list[int] = []

    def lose_the_answer(route: Any) -> None:
        route.fetch()  # scratchd records the batch...
        recorded_then_lost.append(1)
        route.abort("connectionreset")  # ...but the browser never hears back

    page.route(f"{collector}/batch*", lose_the_answer)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    pump(page, lambda: recorded_then_lost, 20, "a batch recorded with its answer lost")
    page.unroute(f"{collector}/batch*")
    page.evaluate("window.dispatchEvent(new Event('online'))")
    pump(page, lambda: _outbox(page) == [], 20, "the outbox to empty")
    events = _events(out, 5, "all five events")
    vars_ = http.vars()  # /debug/vars: only on --metrics-addr (issue 12)
    assert sorted(e["type"] for e in events) == ["a", "b", "c", "pageview", "pageview"]
    assert len({e["params"]["event_id"] for e in events}) == 5
    assert json.dumps(vars_).count('"duplicate"') >= 1, vars_
    # Nothing else arrives later: the outbox is empty and every id was recorded once.
    page.evaluate("pazari('track', 'last')")
    events = _events(out, 6, "the last event")
    assert len(events) == 6 and events[-1]["type"] == "last"


def test_many_events_at_pagehide_go_out_under_64k_and_all_arrive(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path
) -> None:
    """~240 KB of events when the page closes: what leaves on pagehide fits the 64 KiB a
    page may have in flight with keepalive (chromium refuses a second 60 KB beacon while
    the first is in flight: measured, sendBeacon answers false); the next page sends the
    rest in payloads under 64 KiB. scratchd records each event once."""
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    init = f"""pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 600000,
                 batchSize: 100000}});"""
    ctx = launch()
    sizes: list[int] = []
    ctx.on("request", lambda req: sizes.append(len(req.post_data_buffer or b""))
           if "/batch" in req.url else None)
    page = ctx.new_page()
    page.goto(pages.page("/many", f"{collector}/t.js", init))
    page.wait_for_function(LOADED)
    page.evaluate("for (let i = 0; i < 240; i++) pazari('track', 'big', {n: i, "
                  "pad: 'x'.repeat(900)})")
    outbox = _outbox(page)
    assert len(outbox) == 240 and sizes == []
    page.close(run_before_unload=True)

    def whole_first_request() -> list[dict[str, Any]] | None:
        # Every event scratchd took is in the sink: not a batch read half written.
        offered = http.vars()["scratchd"]["events_total"]
        events = read_file_sink(out) if out.exists() else []
        return events if offered and len(events) == offered else None

    first = wait_for(whole_first_request, 30, "what left on pagehide")
    # One payload: the NDJSON of these events (JSON.stringify of the outbox's objects) is
    # within 60,000 bytes, and one more event would not have fit.
    lines = [len(json.dumps(e, separators=(",", ":")).encode()) + 1 for e in outbox]
    assert 0 < len(first) < 240
    assert sum(lines[:len(first)]) <= 60000 < sum(lines[:len(first) + 1])
    assert {e["params"]["event_id"] for e in first} == \
        {e["event_id"] for e in outbox[:len(first)]}
    # The next page of the site sends what is left (and, within RESEND, the events sent on
    # the way out, which scratchd drops as duplicates).
    again = ctx.new_page()
    again.goto(pages.page("/many2", f"{collector}/t.js", init))
    events = _events(out, 240, "all 240 events")
    pump(again, lambda: _outbox(again) == [], 20, "the outbox to empty")
    assert sorted(int(e["params"]["n"]) for e in read_file_sink(out)) == list(range(240))
    assert len(sizes) >= 4 and max(sizes) <= 60000, sizes
    assert len({e["params"]["event_id"] for e in events}) == 240


def test_outbox_is_bounded_and_retried_when_online(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path
) -> None:
    """The collector is down: 600 events leave the 500 newest in the outbox. The page's
    clock is paused, so no backoff timer can fire: the send after the collector is back
    is the one the `online` event starts."""
    out = tmp_path / "events"
    port = free_port()
    collector = f"http://127.0.0.1:{port}"
    daemon, http = scratchd(_config(out), port=port, start=False)
    pages.files["/t.js"] = (script_bytes(), "application/javascript")
    url = pages.page("/bounded", "/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 600000,
                 batchSize: 100000}});""")
    ctx = launch()
    ctx.add_init_script(COUNT_FAILURES)
    ctx.clock.install()
    ctx.clock.pause_at(int(time.time() * 1000) + 1000)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function(LOADED)
    page.evaluate("for (let i = 0; i < 600; i++) pazari('track', 'n', {n: i})")
    kept = _outbox(page)
    assert [int(e["n"]) for e in kept] == list(range(100, 600))
    page.evaluate("pazari('flush')")
    page.wait_for_function("window.__failures >= 1")
    daemon.start()
    assert not out.exists() or read_file_sink(out) == []
    page.evaluate("window.dispatchEvent(new Event('online'))")
    pump(page, lambda: _outbox(page) == [], 30, "the outbox to empty")
    events = _events(out, 500, "the 500 kept events")
    assert sorted(int(e["params"]["n"]) for e in events) == list(range(100, 600))
    assert http.request("GET", "/healthz").status == 200


def test_failed_sends_back_off_exponentially_up_to_a_minute(
    launch: Launch, pages: Pages
) -> None:
    """Nothing listens at the collector. With the page's clock paused, each retry is
    placed exactly: the k-th comes between half and all of min(2^(k-1), 60) seconds after
    the failure before it (jitter), never earlier; `online` retries at once."""
    collector = f"http://127.0.0.1:{free_port()}"
    pages.files["/t.js"] = (script_bytes(), "application/javascript")
    url = pages.page("/backoff", "/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 600000,
                 batchSize: 100000}});""")
    ctx = launch()
    ctx.add_init_script(COUNT_FAILURES)
    ctx.clock.install()
    ctx.clock.pause_at(int(time.time() * 1000) + 1000)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function(LOADED)
    page.evaluate("pazari('track', 'x'); pazari('flush')")
    page.wait_for_function("window.__failures >= 1")
    for k, seconds in enumerate([1, 2, 4, 8, 16, 32, 60, 60], start=1):
        ctx.clock.run_for(seconds * 500 - 1)  # before the earliest retry: none
        assert page.evaluate("[window.__calls, window.__failures]") == [k, k], (k, seconds)
        ctx.clock.run_for(seconds * 500 + 1)  # the whole backoff: it came
        page.wait_for_function(f"window.__failures >= {k + 1}")
    page.evaluate("window.dispatchEvent(new Event('online'))")
    page.wait_for_function("window.__failures >= 10")
    assert [e["type"] for e in _outbox(page)] == ["x"]


NO_FETCH_NO_BEACON = "delete window.fetch; Navigator.prototype.sendBeacon = undefined;"


def test_pixel_fallback_without_fetch_and_beacon(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path
) -> None:
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    url = pages.page("/old", f"{collector}/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 0}});
pazari('track', 'legacy', {{color: 'red & blue', n: 1}});
""")
    ctx = launch()
    ctx.add_init_script(NO_FETCH_NO_BEACON)
    page = ctx.new_page()
    page.goto(url)
    (event,) = _events(out, 1, "the pixel event")
    assert (event["type"], event["url"]) == ("legacy", url)
    assert event["params"]["color"] == "red & blue" and UUID.match(event["params"]["event_id"])
    pump(page, lambda: _outbox(page) == [], 10, "the outbox to empty")


GPC = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"
# (DNT in the browser's settings, init script, call before init, extra init options)
PRIVACY = {
    "dnt": (True, "", "", ""),
    "gpc": (False, GPC, "", ""),
    "opt_out": (False, "", "pazari('optOut');", ""),
    # respectDnt: false is about DNT only: GPC still says no.
    "gpc_with_respect_dnt_false": (True, GPC, "", "respectDnt: false, "),
}


@pytest.mark.parametrize("signal", list(PRIVACY))
def test_privacy_signal_sends_nothing(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path, signal: str
) -> None:
    dnt, init_script, first_call, options = PRIVACY[signal]
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    url = pages.page("/private", f"{collector}/t.js", f"""
{first_call}
pazari('init', {{endpoint: '{collector}', tenant: 'web', {options}flushInterval: 0}});
pazari('page');
pazari('track', 'secret', {{n: 1}});
pazari('identify', 'someone');
""")
    ctx = launch(dnt=dnt)
    if init_script:
        ctx.add_init_script(init_script)
    page = ctx.new_page()
    sent: list[str] = []
    page.on("request", lambda req: sent.append(req.url))
    page.goto(url)
    page.wait_for_function(LOADED)
    page.evaluate("pazari('track', 'more'); pazari('flush')")
    assert _outbox(page) == []
    storage = page.evaluate("Object.keys(localStorage)")
    assert [k for k in storage if k != "pazari_optout"] == []
    page.close(run_before_unload=True)
    assert [u for u in sent if "/batch" in u or "/track" in u] == []
    # The control: the same collector records a browser without the signal, and only it.
    ctrl = launch().new_page()
    ctrl.goto(pages.page("/control", f"{collector}/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 0}});
pazari('track', 'visible');
"""))
    assert [e["type"] for e in _events(out, 1, "the control")] == ["visible"]


@pytest.mark.parametrize("options", ["respectDnt: false", "respectGpc: false"],
                         ids=["dnt_with_respect_dnt_false", "gpc_with_respect_gpc_false"])
def test_a_signal_the_site_chose_not_to_respect_is_ignored(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path, options: str
) -> None:
    """Each signal has its own switch: DNT on and respectDnt: false sends; GPC on and
    respectGpc: false sends."""
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    ctx = launch(dnt=options.startswith("respectDnt"))
    if options.startswith("respectGpc"):
        ctx.add_init_script(GPC)
    ctx.new_page().goto(pages.page("/site-choice", f"{collector}/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', {options}, flushInterval: 0}});
pazari('track', 'counted');"""))
    assert [e["type"] for e in _events(out, 1, "the event")] == ["counted"]


def test_no_cookies_go_to_a_collector_on_another_origin(
    scratchd: Callable[..., Any], launch: Launch, pages: Pages, tmp_path: Path
) -> None:
    """The browser holds a cookie for the collector's host (the pages are on another port:
    another origin, the same site). The tracker's sends carry no credentials across
    origins, so scratchd never sees it, and its Set-Cookie is not stored either."""
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    collector = f"http://127.0.0.1:{http.port}"
    visitor = "known-visitor-0001"
    # The control: sent by hand, that cookie is the visitor id scratchd records.
    assert http.request("POST", "/batch", b'{"type": "control"}',
                        headers={"Cookie": f"_sv={visitor}"}).status == 200
    assert _events(out, 1, "the control")[0]["visitor_id"] == visitor
    ctx = launch()
    ctx.add_cookies([{"name": "_sv", "value": visitor, "url": collector}])
    page = ctx.new_page()
    page.goto(pages.page("/cookies", f"{collector}/t.js", f"""
pazari('init', {{endpoint: '{collector}', tenant: 'web', flushInterval: 0}});
pazari('track', 'while_alive');"""))
    page.wait_for_function(LOADED)
    pump(page, lambda: _outbox(page) == [], 20, "the outbox to empty")
    page.evaluate("pazari('track', 'on_the_way_out')")
    page.close(run_before_unload=True)
    events = _events(out, 3, "the tracker's two events")[1:]
    assert sorted(e["type"] for e in events) == ["on_the_way_out", "while_alive"]
    assert all(e["visitor_id"] and e["visitor_id"] != visitor for e in events), events
    assert [(c["name"], c["value"]) for c in ctx.cookies(collector)] == [("_sv", visitor)]


def test_size_bound() -> None:
    """<= 4 KB minified (rjsmin) and gzipped; the measure is of the shipped file."""
    import rjsmin

    source = script_bytes().decode()
    minified = rjsmin.jsmin(source, keep_bang_comments=False)
    size = len(gzip.compress(minified.encode(), 9))
    print(f"tracker.js: {len(source)} bytes, {len(minified)} minified, {size} min+gzip")
    assert size <= 4096


def test_t_js_is_served_cacheable(scratchd: Callable[..., Any], tmp_path: Path) -> None:
    _, http = scratchd(_config(tmp_path / "events"))
    plain = http.request("GET", "/t.js")
    assert plain.status == 200 and plain.body == script_bytes()
    etag = plain.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong: no W/
    assert plain.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert "max-age=604800" in plain.headers["Cache-Control"]
    assert plain.headers["Vary"] == "Accept-Encoding"
    zipped = http.request("GET", "/t.js", headers={"Accept-Encoding": "br, gzip;q=0.8"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == script_bytes()
    assert zipped.headers["ETag"] not in (etag, None)
    refused = http.request("GET", "/t.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers and refused.body == script_bytes()
    for tags in (etag, f'"nope", {etag}', "*"):
        again = http.request("GET", "/t.js", headers={"If-None-Match": tags})
        assert (again.status, again.body, again.headers["ETag"]) == (304, b"", etag)
    stale = http.request("GET", "/t.js", headers={"If-None-Match": '"0000"'})
    assert stale.status == 200


def test_batch_dedups_event_ids(scratchd: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "events"
    _, http = scratchd(_config(out))
    first = b'{"type":"a","event_id":"id-0000001"}\n{"type":"b","event_id":"id-0000002"}\n' \
            b'{"type":"b2","event_id":"id-0000002"}\n{"type":"short","event_id":"x"}'
    assert http.request("POST", "/batch", first).json() == {"accepted": 3, "rejected": []}
    again = b'{"type":"a","event_id":"id-0000001"}\n{"type":"c","event_id":"id-0000003"}\n' \
            b'{"type":"short","event_id":"x"}\n{"type":"n","event_id":12345678}'
    assert http.request("POST", "/batch", again).json() == {"accepted": 3, "rejected": []}
    events = _events(out, 6, "six events")
    assert [e["type"] for e in events] == ["a", "b", "short", "c", "short", "n"]
    dropped = http.vars()  # /debug/vars: only on --metrics-addr (issue 12)
    assert '"duplicate": 2' in json.dumps(dropped)


def test_recent_ids_window_and_bound() -> None:
    now = [0.0]
    recent = RecentIds(window=10, max_ids=3, clock=lambda: now[0])
    key = recent.key_of("t", {"event_id": "abcdefgh"})
    assert key == ("t", "abcdefgh")
    assert recent.key_of("t", {"event_id": "short"}) is None
    assert recent.key_of("t", {"event_id": "x" * 65}) is None
    recent.remember([key])
    assert recent.seen(key)
    now[0] = 11
    assert not recent.seen(key)
    recent.remember([("t", f"id-{i:08}") for i in range(5)])
    assert not recent.seen(("t", "id-00000000")) and recent.seen(("t", "id-00000004"))


def test_script_handler_reads_its_source() -> None:
    script = TrackerScript(b"x")
    assert script.body == b"x" and gzip.decompress(script.gzipped) == b"x"
