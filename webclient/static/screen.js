/* CityGrid big screen: asks /screen/state every few seconds with the ETag of
   what it shows (304: nothing changed), redraws the cases overlay every minute; needs no
   interaction. The map is the overview (1:4000) with hot spots and cases (1:2000 tiles
   shown at half size). */
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
  function two(n) { return (n < 10 ? "0" : "") + n; }

  function tick() {
    var d = new Date();
    $("clock").textContent = two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function bars(id, rows) {
    if (!charts[id]) { charts[id] = echarts.init($(id), null, { renderer: "canvas" }); }
    charts[id].setOption({
      grid: { left: 150, right: 60, top: 6, bottom: 6 },
      xAxis: { type: "value", max: 100, show: false },
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

  function refresh() {
    var headers = etag ? { "If-None-Match": etag } : {};
    fetch("/screen/state", { credentials: "same-origin", cache: "no-store", headers: headers })
      .then(function (r) {
        $("live").className = "live";
        if (r.status === 304) { return null; }
        if (!r.ok) { throw new Error(r.status); }
        etag = r.headers.get("ETag");
        return r.json();
      })
      .then(function (s) {
        if (s) { show(s); document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1); }
      })
      .catch(function () { $("live").className = "live stale"; })
      .then(function () { setTimeout(refresh, poll * 1000); });
  }

  cgPixelMap("map", ["topo2000"], [
    { name: "hotspot", url: "/tiles/hotspot/{z}/{x}/{y}.png", zIndex: 10 },
    { name: "cases", url: "/tiles/cases/{z}/{x}/{y}.png", zIndex: 11, scaleOut: 1 }
  ]).then(function (m) {
    mapLayers = m;
    // The overlays change with the workflow: ask again every minute (304 when the same).
    setInterval(function () {
      ["hotspot", "cases"].forEach(function (k) { if (mapLayers.layers[k]) { mapLayers.layers[k].redraw(); } });
    }, 60000);
  });
  window.addEventListener("resize", function () { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); });
  tick();
  setInterval(tick, 1000);
  refresh();
})();
