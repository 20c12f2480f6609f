/*! pazari tracker: scratchd's browser tracker. Hand-written, no dependencies, no build step.
 *
 *   <script>
 *   !function(w,d,s){w.pazari=w.pazari||function(){(w.pazari.q=w.pazari.q||[]).push(arguments)};
 *   s=d.createElement('script');s.async=1;s.src='https://collector.example/t.js';
 *   d.head.appendChild(s)}(window,document);
 *   pazari('init', {endpoint: 'https://collector.example', tenant: 'shop'});
 *   pazari('page');
 *   </script>
 *
 * Commands: init, page, track, identify, ecommerce (addOrder, addItem), productClick,
 * optOut, optIn, flush. Anchors: Snowplow's JS tracker (outbox in localStorage, event ids,
 * POST batches, beacon on unload) and Segment's analytics.js (the queue stub).
 *
 * Delivery: every event gets a random id (event_id) and is written to a bounded outbox in
 * localStorage before anything is sent; it leaves the outbox only when scratchd answered
 * 2xx. Sends are NDJSON batches to POST /batch: fetch with keepalive, also on pagehide /
 * visibilitychange; sendBeacon there only where fetch has no keepalive; the 1x1 pixel where
 * neither exists. Every payload stays under the 64 KiB that a page may have in flight with
 * keepalive and beacons together (so one goes out on pagehide, the rest on the next page).
 * A failed send is retried with exponential backoff, on `online` and on the next page. A
 * send on the way out may not be answered, so such an event stays in the outbox for RESEND
 * ms and any send in that time repeats it; scratchd drops the duplicates by event_id (its
 * window, 10 min, is longer than RESEND).
 *
 * Privacy: nothing is stored or sent when Do-Not-Track (init option respectDnt: false to
 * ignore it), Global Privacy Control (respectGpc: false) or an opt-out says no. This script
 * sets no cookies, and sends none to a collector on another origin (no third-party
 * cookies): fetch uses its default credentials mode, same-origin. sendBeacon always sends
 * cookies, hence fetch with keepalive first; sendBeacon is left for browsers without it.
 */
(function (w, d, nav) {
  'use strict';
  var OUTBOX = 'pazari_outbox', BEACONED = 'pazari_beaconed', UID = 'pazari_uid', AID = 'pazari_aid',
    OPTOUT = 'pazari_optout';
  var MAX_OUTBOX = 500;          // events kept for retry; the oldest go first
  var MAX_PAYLOAD = 60000;       // bytes per request: under the 64 KiB keepalive/beacon quota
  var MAX_EVENT = 32000;         // scratchd refuses events over 32 KiB anyway
  var MAX_BACKOFF = 60000;
  var RESEND = 300000;           // a beaconed event is assumed delivered after this (ms)
  var cfg = null, pending = [], mem = [], inflight = {}, sending = false, busy = 0;
  var keepalive = w.fetch && w.Request && 'keepalive' in w.Request.prototype;
  var timer = 0, retryTimer = 0, backoff = 0, lastUrl = null;
  var ls = null;
  try { ls = w.localStorage; ls.setItem('pazari_t', '1'); ls.removeItem('pazari_t'); } catch (e) { ls = null; }

  function get(k) { try { return ls ? ls.getItem(k) : null; } catch (e) { return null; } }
  function set(k, v) { try { if (ls) ls.setItem(k, v); } catch (e) { /* quota: memory only */ } }
  function del(k) { try { if (ls) ls.removeItem(k); } catch (e) { /* ignore */ } }

  function uuid() {
    var c = w.crypto, b = new Uint8Array(16), i, s = '';
    if (c && c.randomUUID) return c.randomUUID();
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (i = 0; i < 16; i++) b[i] = Math.random() * 256 | 0;
    b[6] = b[6] & 15 | 64; b[8] = b[8] & 63 | 128;  // RFC 9562 version 4, variant 10
    for (i = 0; i < 16; i++) s += (i == 4 || i == 6 || i == 8 || i == 10 ? '-' : '') + (b[i] + 256).toString(16).slice(1);
    return s;
  }

  function size(s) { return w.TextEncoder ? new TextEncoder().encode(s).length : s.length * 3; }

  // Checked before anything is stored or sent: DNT (navigator, window, old IE), GPC, opt-out.
  function refused() {
    var dnt = nav.doNotTrack || w.doNotTrack || nav.msDoNotTrack, o = cfg || {};
    return get(OPTOUT) == '1' || o.respectDnt !== false && (dnt == '1' || dnt == 'yes') ||
      o.respectGpc !== false && nav.globalPrivacyControl === true;
  }

  // The outbox: events not yet confirmed, in memory and mirrored to localStorage.
  function load() {
    var raw = get(OUTBOX), list = [];
    try { list = raw ? JSON.parse(raw) : []; } catch (e) { list = []; }
    return Object.prototype.toString.call(list) == '[object Array]' ? list : [];
  }
  function beaconed() {
    var b = null;
    try { b = JSON.parse(get(BEACONED) || '{}'); } catch (e) { /* start afresh */ }
    return b && typeof b == 'object' ? b : {};
  }
  function save(beacon) {
    if (mem.length > MAX_OUTBOX) mem.splice(0, mem.length - MAX_OUTBOX);
    if (mem.length) set(OUTBOX, JSON.stringify(mem)); else del(OUTBOX);
    var b = beacon || beaconed(), keep = {}, any = 0, i;
    for (i = 0; i < mem.length; i++) if (b[mem[i].event_id]) { keep[mem[i].event_id] = b[mem[i].event_id]; any = 1; }
    if (any) set(BEACONED, JSON.stringify(keep)); else del(BEACONED);
  }
  function merge() {
    // Another tab (or an earlier page) may have written events of its own; events beaconed
    // longer than RESEND ago are taken as delivered.
    var seen = {}, i, all = load().concat(mem), out = [], b = beaconed(), t = new Date().getTime();
    for (i = 0; i < all.length; i++) {
      if (seen[all[i].event_id] || (b[all[i].event_id] && t - b[all[i].event_id] > RESEND)) continue;
      seen[all[i].event_id] = 1; out.push(all[i]);
    }
    mem = out;
  }
  function drop(ids) {
    var keep = [], i, stored = load();
    for (i = 0; i < mem.length; i++) if (!ids[mem[i].event_id]) keep.push(mem[i]);
    for (i = 0; i < stored.length; i++) if (!ids[stored[i].event_id] && !has(keep, stored[i].event_id)) keep.push(stored[i]);
    mem = keep; save();
  }
  function has(list, id) { for (var i = 0; i < list.length; i++) if (list[i].event_id == id) return true; return false; }

  function url(path) {
    return cfg.endpoint.replace(/\/+$/, '') + path + (cfg.tenant ? (path.indexOf('?') < 0 ? '?' : '&') + 'tenant=' + encodeURIComponent(cfg.tenant) : '');
  }

  // Up to max bytes of NDJSON from the events not in flight (nor in skip).
  function payload(skip, max) {
    var lines = [], ids = {}, bytes = 0, i, e, line, n;
    for (i = 0; i < mem.length; i++) {
      e = mem[i];
      if (inflight[e.event_id] || (skip && skip[e.event_id])) continue;
      line = JSON.stringify(e); n = size(line) + 1;
      if (n > MAX_EVENT) { ids[e.event_id] = 1; continue; }  // never deliverable: let it go
      if (bytes + n > max) break;
      lines.push(line); ids[e.event_id] = 1; bytes += n;
    }
    return { body: lines.join('\n'), ids: ids, n: lines.length, bytes: bytes };
  }

  function retryLater() {
    backoff = Math.min(backoff ? backoff * 2 : 1000, MAX_BACKOFF);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(flush, backoff * (0.5 + Math.random() / 2));
  }

  function flush() {
    clearTimeout(timer); timer = 0;
    if (!cfg || sending || refused()) return;
    merge();
    var p = payload(null, MAX_PAYLOAD), k;
    if (!p.n) { if (p.body === '' && mem.length) drop(p.ids); return; }
    for (k in p.ids) inflight[k] = 1;
    var done = function (ok, keep) {
      for (k in p.ids) delete inflight[k];
      sending = false;
      if (ok || !keep) { backoff = 0; drop(p.ids); if (ok) flush(); }
      else retryLater();
    };
    sending = true;
    if (w.fetch) {
      post(p, done);
    } else if (nav.sendBeacon) {
      done(nav.sendBeacon(url('/batch'), p.body), true);
    } else {
      pixel(p.body.split('\n'), done);
    }
  }

  // fetch with keepalive; busy counts the bytes in flight against the page's 64 KiB quota.
  // Default credentials (same-origin): no cookies to a collector on another origin.
  function post(p, done) {
    busy += p.bytes;
    var end = function (ok, keep) { busy -= p.bytes; done(ok, keep, p); };
    // text/plain keeps it a CORS "simple" request: no preflight.
    w.fetch(url('/batch'), { method: 'POST', body: p.body, keepalive: true,
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' } }).then(function (r) {
      // 4xx other than 429: scratchd refused these events, a resend cannot help. Read to
      // the end first: until then chromium counts the request against the quota.
      var f = function () { end(r.ok, r.status >= 500 || r.status == 429 || r.status == 0); };
      r.text().then(f, f);
    }, function () { end(false, true); });
  }

  // The pixel fallback: one GET /track per event, its fields in the query string.
  function pixel(lines, done) {
    var left = lines.length, failed = false, i;
    for (i = 0; i < lines.length; i++) (function (e) {
      var q = [], k, img = new Image();
      for (k in e) if (e[k] != null) q.push(encodeURIComponent(k) + '=' + encodeURIComponent(typeof e[k] == 'object' ? JSON.stringify(e[k]) : e[k]));
      img.onload = img.onerror = function (ev) { if (ev.type == 'error') failed = true; if (!--left) done(!failed, true); };
      img.src = url('/track') + (cfg.tenant ? '&' : '?') + q.join('&');
    })(JSON.parse(lines[i]));
  }

  // The page is going away (or to the background): send what the keepalive quota takes,
  // and keep it in the outbox for RESEND (see above); the rest waits for the next page.
  function unload() {
    if (!cfg || refused() || !(keepalive || nav.sendBeacon)) return;
    merge();
    var p, sent = {}, k, b = beaconed(), t = new Date().getTime();
    for (;;) {
      p = payload(b, MAX_PAYLOAD - busy);  // visibilitychange and pagehide both fire: once
      if (!p.n) break;
      if (keepalive) post(p, function (ok, keep, q) {
        // Still alive (only hidden): confirmed, or to be sent again by the next flush.
        var m = beaconed(), i;
        if (ok || !keep) drop(q.ids);
        else { for (i in q.ids) delete m[i]; save(m); }
      });
      else if (!nav.sendBeacon(url('/batch'), p.body)) break;
      for (k in p.ids) { sent[k] = 1; inflight[k] = 1; if (!b[k]) b[k] = t; }
    }
    for (k in sent) delete inflight[k];
    save(b);
  }

  function schedule() {
    if (mem.length >= (cfg.batchSize || 20)) flush();
    else if (!timer) timer = setTimeout(flush, cfg.flushInterval == null ? 1000 : cfg.flushInterval);
  }

  function anon() {
    var a = get(AID);
    if (!a) { a = uuid(); set(AID, a); }
    return a;
  }

  function emit(type, props) {
    if (refused()) return;
    var e = { type: String(type), event_id: uuid(), sent_at: new Date().getTime(),
      url: w.location.href, referrer: d.referrer || undefined, anonymous_id: anon() }, k, uid = get(UID);
    if (uid) e.user_id = uid;
    if (typeof props == 'string') { try { props = JSON.parse(props); } catch (x) { props = { value: props }; } }
    for (k in props) if (Object.prototype.hasOwnProperty.call(props, k) && k != 'event_id') e[k] = props[k];
    mem.push(e); save(); schedule();
  }

  function page(props) {
    lastUrl = w.location.href;
    var p = { title: d.title }, k;
    for (k in props) p[k] = props[k];
    emit('pageview', p);
  }

  function route() { if (w.location.href != lastUrl) page(); }

  function spa() {
    var h = w.history, push = h.pushState;
    if (!push) return;
    h.pushState = function () { var r = push.apply(h, arguments); route(); return r; };
    w.addEventListener('popstate', route);
  }

  // The partner protocol's ecommerce actions (addOrder, addItem) and the productClick.
  var REQUIRED = { addOrder: ['order_id', 'revenue'], addItem: ['order_id', 'product_id', 'price', 'quantity'] };

  function ecommerce(action, data) {
    var need = REQUIRED[action], i;
    if (typeof data == 'string') { try { data = JSON.parse(data); } catch (x) { return; } }
    if (!need || !data) return;
    for (i = 0; i < need.length; i++) if (data[need[i]] == null) return;
    emit('ecommerce.' + action, data);
  }

  var commands = {
    init: function (o) {
      if (cfg || !o || !o.endpoint) return;
      cfg = o;
      mem = load();
      if (o.spa) spa();
      w.addEventListener('online', function () { backoff = 0; flush(); });
      w.addEventListener('pagehide', unload);
      d.addEventListener('visibilitychange', function () { if (d.visibilityState == 'hidden') unload(); });
      while (pending.length) run(pending.shift());
      if (mem.length) flush();
    },
    page: page,
    track: emit,
    identify: function (id, traits) {
      if (id == null) del(UID);
      else if (!refused()) { set(UID, String(id)); emit('identify', traits); }
    },
    ecommerce: ecommerce,
    productClick: function (data) { emit('yogurt.productClick', data); },
    optOut: function () { set(OPTOUT, '1'); mem = []; del(OUTBOX); del(BEACONED); del(AID); del(UID); },
    optIn: function () { del(OPTOUT); },
    flush: function () { backoff = 0; flush(); }
  };

  function run(args) {
    var name = args[0], fn = commands[name];
    if (!fn) return;
    if (!cfg && name != 'init' && name != 'optOut' && name != 'optIn') { pending.push(args); return; }
    try { fn.apply(null, Array.prototype.slice.call(args, 1)); } catch (e) { /* never break the page */ }
  }

  var queued = (w.pazari && w.pazari.q) || [];
  w.pazari = function () { run(arguments); };
  w.pazari.q = { push: function (args) { run(args); } };
  for (var i = 0; i < queued.length; i++) run(queued[i]);
})(window, document, navigator);
