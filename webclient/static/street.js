/* Street statistics: a period's counts per street, by class and by community,
   from GET /street/stats; the same query downloads as CSV or XLSX, and prints. */
(function () {
  "use strict";
  var COUNTS = ["reported", "filed", "closed", "on_time", "overdue"];
  var SUPERVISION = ["reminders", "orders", "escalated"];

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  /* Today in the install's work time zone (the days statistics count in), YYYY-MM-DD. */
  function today() {
    return new Intl.DateTimeFormat("en-CA", { timeZone: ZONE, year: "numeric", month: "2-digit",
                                              day: "2-digit" }).format(new Date());
  }
  function query(f, format) {
    var q = "from=" + encodeURIComponent(f.from.value) + "&to=" + encodeURIComponent(f.to.value);
    if (f.street.value) { q += "&street=" + encodeURIComponent(f.street.value); }
    return "/street/stats?" + q + (format ? "&format=" + format : "");
  }
  function table(headings, head, rows, keys) {
    var t = el("table"), thead = el("thead"), tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", h)); });
    keys.forEach(function (k) { tr.appendChild(el("th", N("street_heading", k, headings[k]), "n")); });
    thead.appendChild(tr);
    t.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (r) {
      var row = el("tr", null, r.cls || "");
      r.cells.forEach(function (c) { row.appendChild(el("td", c)); });
      keys.forEach(function (k) { var td = el("td", r.values[k], "n"); td.dataset.key = k; row.appendChild(td); });
      body.appendChild(row);
    });
    t.appendChild(body);
    return t;
  }
  function show(report) {
    var box = document.getElementById("report");
    box.textContent = "";
    document.getElementById("report-title").textContent =
      T("street.street_statistics") + report.from + T("common.to_3") + report.to;
    report.streets.forEach(function (s) {
      var part = el("section", null, "street-report");
      part.dataset.street = s.street.code;
      part.appendChild(el("h3", s.street.name + T("common.open_paren") + s.street.code + T("common.close_paren")));
      var total = table(report.headings, [T("common.streets")], [{ cells: [s.street.name], values: s.total, cls: "totals" }],
                        COUNTS.concat(SUPERVISION));
      total.classList.add("total");
      part.appendChild(total);
      part.appendChild(el("h3", T("street.by_class")));
      var byClass = table(report.headings, [T("common.type"), T("street.class_code"), T("common.class")], s.by_class.map(function (r) {
        return { cells: [r.kind === "event" ? T("common.event") : T("common.component"), r.major + "/" + r.minor, r.name], values: r };
      }), COUNTS);
      byClass.classList.add("by-class");
      part.appendChild(byClass);
      part.appendChild(el("h3", T("street.by_community")));
      var byCommunity = table(report.headings, [T("street.community_code"), T("common.communities")], s.by_community.map(function (r) {
        return { cells: [r.code, r.name], values: r };
      }), COUNTS);
      byCommunity.classList.add("by-community");
      part.appendChild(byCommunity);
      box.appendChild(part);
    });
    document.getElementById("printed-at").textContent = T("street.citygrid_generated") + cgWhen(new Date(), true);
  }
  async function load(f) {
    var status = document.getElementById("status");
    var r, body = null;
    try {
      r = await fetch(query(f), { credentials: "same-origin" });
      try { body = await r.json(); } catch (e) { body = null; }
    } catch (e) { status.textContent = T("street.cannot_count") + e.message; return null; }
    if (r.status !== 200 || !body) {
      status.textContent = T("street.cannot_count") + (body && body.message ? body.message : r.status);
      return null;
    }
    show(body);
    document.getElementById("csv").href = query(f, "csv");
    document.getElementById("xlsx").href = query(f, "xlsx");
    status.textContent = T("common.text") + body.streets.length + T("street.streets");
    document.body.dataset.loaded = "1";
    return body;
  }

  document.addEventListener("DOMContentLoaded", async function () {
    var me = await (await fetch("/auth/whoami", { credentials: "same-origin" })).json();
    document.getElementById("who").textContent = me.account;
    var f = document.getElementById("period"), day = today();
    f.to.value = day;
    f.from.value = day.slice(0, 8) + "01";
    var first = await load(f);
    if (first) {
      first.streets.forEach(function (s) {
        var o = el("option", s.street.name + T("common.open_paren") + s.street.code + T("common.close_paren")); o.value = s.street.code;
        f.street.appendChild(o);
      });
    }
    f.addEventListener("submit", function (ev) { ev.preventDefault(); load(f); });
    document.getElementById("print").addEventListener("click", function () { window.print(); });
  });
}());
