/* CityGrid big screen: asks /screen/state every few seconds with the ETag of
   what it shows (304: nothing changed), redraws the cases overlay every minute; needs no
   interaction. The map shows the whole district with hot spots and cases (their tiles
   of 1:8000 or finer, scaled down where the district does not fit even at 1:8000:
   pixelmap.js fits the district in the box). The clock
   runs in the install's zone, the one the state's times are in (static/i18n.js). */
(function () {
  "use strict";

  var etag = null;
  var poll = 5;
  var seen = {};
  var charts = {};
  var mapLayers = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  function tick() {
    $("clock").textContent = cgClock(new Date());
  }

  function bars(id, rows) {
    if (!charts[id]) { charts[id] = echarts.init($(id), null, { renderer: "canvas" }); }
    charts[id].setOption({
      grid: { left: 150, right: 60, top: 6, bottom: 6 },
      // Points run to 100 by default, to 1000 as an install may configure them (scoring).
      xAxis: { type: "value", max: function (v) { return Math.max(100, v.max); }, show: false },
      yAxis: { type: "category", inverse: true, axisLabel: { color: "#e6eefb", fontSize: 16 },
               axisLine: { show: false }, axisTick: { show: false },
               data: rows.map(function (r) { return r.rank + ". " + r.name; }) },
      series: [{ type: "bar", barWidth: 16, data: rows.map(function (r) { return r.score; }),
                 itemStyle: { color: "#3c8dde" },
                 label: { show: true, position: "right", color: "#e6eefb", fontSize: 16,
                          formatter: function (p) { return p.value + " " + N("grade", rows[p.dataIndex].grade); } } }]
    }, true);
  }

  function show(s) {
    $("today").textContent = s.today;
    Object.keys(s.counters).forEach(function (k) {
      var node = $("c-" + k);
      if (node) { node.textContent = s.counters[k]; }
    });
    document.body.dataset.counters = JSON.stringify(s.counters);
    $("rank-period").textContent = s.rankings.period.from + T("common.to_3") + s.rankings.period.to;
    bars("rank-bureau", s.rankings.bureau);
    bars("rank-street", s.rankings.street);
    var list = $("latest");
    list.textContent = "";
    s.latest.forEach(function (e) {
      var li = el("li", undefined, seen[e.id] || !Object.keys(seen).length ? "" : "new");
      li.appendChild(el("span", e.at.slice(11, 19), "t"));
      li.appendChild(el("span", e.number, "n"));
      li.appendChild(el("span", N("transition", e.transition, e.event), "e"));
      li.appendChild(el("span", e.street + " " + e["class"]));
      list.appendChild(li);
    });
    s.latest.forEach(function (e) { seen[e.id] = true; });
    poll = s.poll_seconds || poll;
  }

  /* One request at a time, the next asked `poll` seconds after this one ends, however it
     ends. An answer not come within ANSWER_WITHIN seconds is given up and the screen shows
     itself stale: a connection that died without a word would otherwise hold it on its last
     state, marked live, for as long as the system's TCP keeps trying. The ETag is kept only
     with the state it names shown: after an answer cut short, the next request asks for
     the whole state again rather than being told that nothing changed. */
  var ANSWER_WITHIN = 20;

  function refresh() {
    var headers = etag ? { "If-None-Match": etag } : {};
    var stop = new AbortController(), late = setTimeout(function () { stop.abort(); }, ANSWER_WITHIN * 1000);
    fetch("/screen/state", { credentials: "same-origin", cache: "no-store", headers: headers, signal: stop.signal })
      .then(function (r) {
        if (r.status === 304) { return; }
        if (!r.ok) { throw new Error(r.status); }
        return r.json().then(function (s) {
          show(s);
          etag = r.headers.get("ETag");
          document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
        });
      })
      .then(function () { $("live").className = "live"; }, function () { $("live").className = "live stale"; })
      .then(function () { clearTimeout(late); setTimeout(refresh, poll * 1000); });
  }

  /* The map, made again until it is made: a screen started while the network or the server
     was down would otherwise stay without one until someone reloads it, and no one is at
     its keyboard. The next try is 15 s later, then twice as long each time, 5 minutes at
     most. */
  function startMap(wait) {
    cgPixelMap("map", ["topo2000"], [
      { name: "hotspot", url: "/tiles/hotspot/{z}/{x}/{y}.png", zIndex: 10 },
      { name: "cases", url: "/tiles/cases/{z}/{x}/{y}.png", zIndex: 11, scaleOut: 1 }
    ], { keepWhole: true }).then(function (m) {
      if (!m) { throw new Error("no map"); }
      mapLayers = m;
      // The overlays change with the workflow: ask again every minute (304 when the same).
      setInterval(function () {
        ["hotspot", "cases"].forEach(function (k) { if (mapLayers.layers[k]) { mapLayers.layers[k].redraw(); } });
      }, 60000);
    }).catch(function () {
      setTimeout(function () { $("map").textContent = ""; startMap(Math.min(wait * 2, 300)); }, wait * 1000);
    });
  }

  startMap(15);
  window.addEventListener("resize", function () { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); });
  tick();
  setInterval(tick, 1000);
  refresh();
})();
