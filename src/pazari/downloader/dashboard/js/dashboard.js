// The downloader dashboard (spec §1 Web UI): plain JS, no CDN, no build step.
// Every 5 s, for each host: /dashboard/aggregations and /stats/{processor,notifier}.
"use strict";
(function () {
  var params = new URLSearchParams(window.location.search);
  var INTERVAL = Number(params.get("interval")) || 5000;
  var DEAD_AFTER = 6000;  // liveness: last successful fetch older than 6 s → dead
  var COMPONENTS = ["processor", "notifier"];
  var hosts = (window.Hosts && window.Hosts.length) ? window.Hosts : [window.location.origin];
  var state = { aggregations: {}, stats: {}, seen: {} };

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fetchJSON(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error(url + ": " + r.status);
      return r.json();
    });
  }

  function renderAggregations() {
    var rows = [];
    hosts.forEach(function (h) {
      (state.aggregations[h] || []).forEach(function (a) {
        rows.push({ name: a.name.replace(/^jobs:/, ""), host: h, size: a.size });
      });
    });
    rows.sort(function (a, b) { return b.size - a.size || a.name.localeCompare(b.name); });
    var body = document.querySelector("#aggregations tbody");
    body.textContent = "";
    if (!rows.length) {
      var tr = el("tr"), td = el("td", "No running aggregations :(", "empty");
      td.colSpan = 3; tr.appendChild(td); body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r.name, "name"));
      tr.appendChild(el("td", r.host, "host"));
      tr.appendChild(el("td", r.size, "size"));
      body.appendChild(tr);
    });
  }

  function renderStats(component) {
    var table = document.getElementById("stats-" + component);
    var keys = {};
    hosts.forEach(function (h) {
      Object.keys((state.stats[component] || {})[h] || {}).forEach(function (k) { keys[k] = 1; });
    });
    var head = table.querySelector("thead"), body = table.querySelector("tbody");
    head.textContent = ""; body.textContent = "";
    var hr = el("tr"); hr.appendChild(el("th", "Key"));
    hosts.forEach(function (h) { hr.appendChild(el("th", h)); });
    head.appendChild(hr);
    Object.keys(keys).sort().forEach(function (k) {
      var tr = el("tr"); tr.appendChild(el("td", k));
      hosts.forEach(function (h) {
        var v = ((state.stats[component] || {})[h] || {})[k];
        tr.appendChild(el("td", v === undefined ? "-" : v));
      });
      body.appendChild(tr);
    });
  }

  function renderLiveness() {
    var box = document.getElementById("liveness");
    box.textContent = "";
    var now = Date.now();
    hosts.forEach(function (h) {
      COMPONENTS.forEach(function (c) {
        var last = (state.seen[c] || {})[h] || 0;
        var alive = now - last < DEAD_AFTER;
        var d = el("div", h + " " + c + ": " + (alive ? "alive" : "dead"),
                   "callout " + (alive ? "alive" : "dead"));
        d.dataset.host = h; d.dataset.component = c;
        box.appendChild(d);
      });
    });
  }

  function refresh() {
    var jobs = [];
    hosts.forEach(function (h) {
      jobs.push(fetchJSON(h + "/dashboard/aggregations").then(function (a) {
        state.aggregations[h] = a;
      }).catch(function () { state.aggregations[h] = []; }));
      COMPONENTS.forEach(function (c) {
        state.stats[c] = state.stats[c] || {}; state.seen[c] = state.seen[c] || {};
        jobs.push(fetchJSON(h + "/stats/" + c).then(function (s) {
          state.stats[c][h] = s; state.seen[c][h] = Date.now();
        }).catch(function () {}));
      });
    });
    return Promise.all(jobs).then(function () {
      renderAggregations();
      COMPONENTS.forEach(renderStats);
      renderLiveness();
      document.getElementById("updated").textContent =
        "updated " + new Date().toISOString();
      document.body.dataset.loaded = "1";
    });
  }

  refresh();
  setInterval(refresh, INTERVAL);
})();
