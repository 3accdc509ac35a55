/* CityGrid evaluation dashboard: rankings, trends, the per-class breakdown and hot spots
   drawn with Apache ECharts (served by CityGrid), every indicator with its formula,
   numerator and denominator, and the cases behind a figure. State lives in the URL hash. */
(function () {
  "use strict";

  var form = document.getElementById("query");
  var charts = {};
  var hotspot = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  /* The body of a 200 answer; otherwise an Error that says why there is none: the server's
     refusal, a proxy's status (its page is not JSON), or the network's failure. */
  async function getJSON(url) {
    var r = await fetch(url, { credentials: "same-origin" }), body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok || !body) { throw new Error(body && body.message ? body.message : String(r.status)); }
    return body;
  }
  function pct(v, unit) {
    if (v === null || v === undefined) { return "—"; }
    return unit === "ratio" ? (v * 100).toFixed(2) + "%" : v.toFixed(2);
  }
  function chart(id) {
    if (!charts[id]) { charts[id] = echarts.init($(id), null, { renderer: "canvas" }); }
    return charts[id];
  }
  function iso(d) { return cgWhen(d).slice(0, 10); }  // the day in the install's zone

  /* An indicator in the page's language: its name, and its formula over the names of the
     measures it counts (the server's formula spells them as codes). */
  function titleOf(ind) { return N("indicator", ind.key, ind.title); }
  function sideOf(side) {
    if (!side.terms.length) { return N("measure", "area_km2", side.formula); }
    var text = side.terms.map(function (t, i) {
      var name = N("measure", t.measure, t.measure);
      return i === 0 ? name : (t.sign < 0 ? " - " : " + ") + name;
    }).join("");
    return side.terms.length > 1 ? "(" + text + ")" : text;
  }
  function formulaOf(ind) { return titleOf(ind) + " = " + sideOf(ind.numerator) + " / " + sideOf(ind.denominator); }
  function definitionsOf(side) {
    if (!side.terms.length) { return N("measure_definition", "area_km2", side.definition); }
    if (side.terms.length === 1) { return N("measure_definition", side.terms[0].measure, side.terms[0].definition); }
    return side.terms.map(function (t) {
      return N("measure", t.measure, t.measure) + T("common.colon") + N("measure_definition", t.measure, t.definition);
    }).join(T("common.semicolon"));
  }

  function params() {
    var q = new URLSearchParams();
    ["subject", "from", "to", "indicator", "class"].forEach(function (k) {
      if (form.elements[k].value) { q.set(k, form.elements[k].value); }
    });
    return q;
  }

  function fromHash() {
    var q = new URLSearchParams(location.hash.slice(1));
    var today = new Date();
    var start = new Date(today.getTime() - 89 * 86400000);
    form.elements.subject.value = q.get("subject") || "bureau";
    form.elements.from.value = q.get("from") || iso(start);
    form.elements.to.value = q.get("to") || iso(today);
    form.elements["class"].value = q.get("class") || "all";
    return q.get("indicator");
  }

  /* A load draws four parts, each when it comes: ranking and indicator table (then the
     trend), classes, hot spots. A part of a load the user has since replaced is dropped
     (`loads` counts them); a part that failed keeps its error in the status when the
     others end. */
  var loads = 0;

  function load(wanted) {
    var mine = ++loads, pending = 4, errors = [];
    function current() { return mine === loads; }
    function done() {
      pending -= 1;
      if (pending === 0 && current()) {
        document.body.dataset.ready = "1";
        $("status").textContent = errors.length ? T("evaluation.error") + errors.join(T("common.semicolon")) : "";
      }
    }
    function failed(err) {
      if (!current()) { return; }
      errors.push(err.message);
      $("status").textContent = T("evaluation.error") + errors.join(T("common.semicolon"));
      done();
    }
    document.body.dataset.ready = "";
    $("status").textContent = T("evaluation.loading");
    var q = params();
    var base = "subject=" + q.get("subject") + "&from=" + q.get("from") + "&to=" + q.get("to");
    $("xlsx").href = "/evaluation/report.xlsx?" + base;
    $("pdf").href = "/evaluation/report.pdf?" + base;
    getJSON("/evaluation/indicators?" + base).then(function (data) {
      if (!current()) { return; }
      var sel = form.elements.indicator;
      var keep = wanted || sel.value;
      sel.textContent = "";
      data.indicators.forEach(function (i) {
        var o = el("option", titleOf(i));
        o.value = i.key;
        sel.appendChild(o);
      });
      if (data.indicators.some(function (i) { return i.key === keep; })) { sel.value = keep; }
      history.replaceState(null, "", "#" + params().toString());
      ranking(data);
      table(data);
      done();
      getJSON("/evaluation/trend?indicator=" + sel.value + "&from=" + q.get("from") + "&to=" + q.get("to"))
        .then(function (t) { if (current()) { trend(t); done(); } }, failed);
    }, function (err) { failed(err); done(); });  // and the trend it would have asked for
    getJSON("/evaluation/classes?from=" + q.get("from") + "&to=" + q.get("to"))
      .then(function (c) { if (current()) { classes(c); done(); } }, failed);
    showHotspot(q).then(function () { if (current()) { done(); } }, failed);
  }

  function ranking(data) {
    var rows = data.subjects.filter(function (r) { return r.score !== null; });
    $("rank-meta").textContent = data.period.from + T("common.to_3") + data.period.to + T("evaluation.scoring_configuration_version") + data.config_version + T("evaluation.text");
    chart("chart-ranking").setOption({
      grid: { left: 150, right: 40, top: 10, bottom: 56 },
      tooltip: { trigger: "axis" },
      legend: { data: [T("evaluation.score_this_period"), T("evaluation.score_last_period")], bottom: 0 },
      xAxis: { type: "value" },
      yAxis: { type: "category", inverse: true, data: rows.map(function (r) { return r.rank + ". " + N("centre", r.subject, r.name) + T("common.open_paren") + N("grade", r.grade) + T("common.close_paren"); }) },
      series: [
        { name: T("evaluation.score_this_period"), type: "bar", data: rows.map(function (r) { return r.score; }), itemStyle: { color: "#23395d" },
          label: { show: true, position: "right" } },
        { name: T("evaluation.score_last_period"), type: "bar", data: rows.map(function (r) { return r.previous_score; }), itemStyle: { color: "#b8c4d8" } }
      ]
    }, true);
  }

  function trend(t) {
    var unit = t.indicator.unit;
    $("trend-meta").textContent = formulaOf(t.indicator);
    var series = t.series.map(function (s) {
      return { name: N("centre", s.subject, s.name), type: "line", data: s.points.map(function (p) { return p.value; }), connectNulls: false };
    });
    series.push({ name: T("common.all"), type: "line", lineStyle: { width: 4 }, data: t.all.map(function (p) { return p.value; }) });
    chart("chart-trend").setOption({
      grid: { left: 60, right: 20, top: 30, bottom: 60 },
      tooltip: { trigger: "axis", valueFormatter: function (v) { return pct(v, unit); } },
      legend: { type: "scroll", bottom: 0 },
      xAxis: { type: "category", data: t.periods.map(function (p) { return p.from.slice(5) + "~" + p.to.slice(5); }) },
      yAxis: { type: "value", axisLabel: { formatter: function (v) { return unit === "ratio" ? Math.round(v * 100) + "%" : v; } } },
      series: series
    }, true);
  }

  function classes(c) {
    var rows = c.classes;
    chart("chart-classes").setOption({
      grid: { left: 60, right: 20, top: 30, bottom: 60 },
      tooltip: { trigger: "axis" },
      legend: { data: [T("common.filed"), T("evaluation.closed"), T("evaluation.closed_on_time")], bottom: 0 },
      xAxis: { type: "category", axisLabel: { interval: 0, rotate: 20 },
               data: rows.map(function (r) { return (r.kind === "event" ? T("evaluation.event") : T("evaluation.component")) + r.name; }) },
      yAxis: { type: "value" },
      series: [
        { name: T("common.filed"), type: "bar", data: rows.map(function (r) { return r.filed - r.cancelled; }), itemStyle: { color: "#23395d" } },
        { name: T("evaluation.closed"), type: "bar", data: rows.map(function (r) { return r.closed; }), itemStyle: { color: "#2e9e44" } },
        { name: T("evaluation.closed_on_time"), type: "bar", data: rows.map(function (r) { return r.closed_on_time; }), itemStyle: { color: "#f2b705" } }
      ]
    }, true);
  }

  function table(data) {
    var box = $("indicators");
    box.textContent = "";
    data.indicators.forEach(function (ind) {
      var h = el("h3", titleOf(ind));
      var f = el("p", formulaOf(ind), "formula");
      var defs = el("p", T("evaluation.numerator") + sideOf(ind.numerator) + T("common.colon") + definitionsOf(ind.numerator) +
        T("evaluation.denominator") + sideOf(ind.denominator) + T("common.colon") + definitionsOf(ind.denominator) + T("evaluation.full_stop"), "hint");
      var tbl = el("table");
      tbl.dataset.indicator = ind.key;
      var head = el("tr");
      [T("common.subject"), T("evaluation.numerator_2"), T("evaluation.denominator_2"), T("evaluation.this_period"), T("evaluation.grade"), T("evaluation.weight"), T("evaluation.score"), T("evaluation.last_period")].forEach(function (x) { head.appendChild(el("th", x)); });
      tbl.appendChild(head);
      data.subjects.forEach(function (s) {
        var v = s.indicators[ind.key];
        if (!v) { return; }
        var tr = el("tr");
        tr.dataset.subject = s.subject;
        tr.appendChild(el("td", N("centre", s.subject, s.name)));
        var num = el("td", v.numerator, "num click"), den = el("td", v.denominator, "num click");
        num.title = den.title = T("evaluation.list_the_cases");
        [num, den].forEach(function (td) { td.addEventListener("click", function () { drill(ind, s); }); });
        tr.appendChild(num);
        tr.appendChild(den);
        tr.appendChild(el("td", pct(v.value, ind.unit), "num value"));
        var g = el("td");
        if (v.grade) { g.appendChild(el("span", N("grade", v.grade), "grade g-" + v.grade)); }
        tr.appendChild(g);
        tr.appendChild(el("td", v.weight, "num"));
        tr.appendChild(el("td", v.score === null ? "—" : v.score, "num"));
        tr.appendChild(el("td", pct(v.previous_value, ind.unit), "num"));
        tbl.appendChild(tr);
      });
      [h, f, defs, tbl].forEach(function (x) { box.appendChild(x); });
    });
  }

  /* The cases behind the figure clicked last: an earlier click's answer is dropped. */
  var drills = 0;

  function drill(ind, s) {
    var q = params(), mine = ++drills;
    getJSON("/evaluation/drill?indicator=" + ind.key + "&subject=" + encodeURIComponent(s.subject) +
            "&from=" + q.get("from") + "&to=" + q.get("to")).then(function (d) {
      if (mine !== drills) { return; }
      $("drill").hidden = false;
      $("drill-meta").textContent = N("centre", s.subject, s.name) + " · " + titleOf(ind) + " · " + d.period.from + T("common.to_3") + d.period.to;
      var body = $("drill-body");
      body.textContent = "";
      [[T("evaluation.numerator_2"), d.numerator], [T("evaluation.denominator_2"), d.denominator]].forEach(function (side) {
        if (!side[1]) { return; }
        var p = el("p", side[0] + T("common.open_paren") + side[1].count + T("evaluation.cases"), "side");
        side[1].cases.forEach(function (n) {
          var a = el("a", n);
          a.href = "/inbox/" + n;
          p.appendChild(a);
        });
        if (side[1].truncated) {  // the count is all of them; the list stops at the server's limit
          p.appendChild(el("span", T("evaluation.first_cases_listed") + side[1].cases.length + T("evaluation.first_cases_listed_end"), "hint"));
        }
        body.appendChild(p);
      });
      $("drill").scrollIntoView();
    }, function (err) { if (mine === drills) { $("status").textContent = T("evaluation.error") + err.message; } });
  }

  /* The hot-spot map is made once, by the first load that asks (a load while it is being
     made waits for it, rather than making a second map in the same place); a failure is
     forgotten, so the next load tries again. Each load then shows its own period and class. */
  function showHotspot(q) {
    var url = "/evaluation/hotspot/{z}/{x}/{y}.png?from=" + q.get("from") + "&to=" + q.get("to") + "&class=" + q.get("class");
    if (!hotspot) {
      hotspot = cgPixelMap("hotspot-map", ["topo2000"], [{ name: "hotspot", url: url, zIndex: 10 }]);
      hotspot.catch(function () { hotspot = null; });
    }
    return hotspot.then(function (m) {
      if (m && m.layers.hotspot) { m.layers.hotspot.setUrl(url); }
    });
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); load(); });
  window.addEventListener("resize", function () { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); });
  getJSON("/auth/whoami").then(function (me) {
    $("who").textContent = me.account + T("common.open_paren") + me.roles.map(function (r) { return N("role", r); }).join(T("common.list_comma")) + T("common.close_paren");
  }, function () { /* the page works without its account's name */ });
  var wanted = fromHash();
  load(wanted);
})();
