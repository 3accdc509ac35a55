/* Component online update in the browser: a bureau's components, one component with its
   place in the map picture, history and cases, and the changes it may make (attributes and
   state, a move to a clicked pixel, retirement, a new component, a bulk file), each signed
   with the enrolled non-extractable WebCrypto key. Positions are pixels of the pictures. */
(function () {
  "use strict";
  var me = null, forms = null, current = null, target = null, checkedImport = null;
  var CHANGE_NAMES = { insert: T("components.import"), update: T("components.update"), add: T("components.add"), edit: T("components.change_2"), move: T("components.move"),
                       retire: T("components.retire"), "import": T("components.bulk_update") };
  var OP_NAMES = { edit: T("components.change_2"), move: T("components.move"), retire: T("components.retire"), add: T("components.add") };

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function $(id) { return document.getElementById(id); }
  async function getJSON(url) {
    var r = await fetch(url, { credentials: "same-origin" }), body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    return { status: r.status, body: body };
  }
  function when(iso) { return cgWhen(iso, true); }  // in the install's zone, as the case pages
  function fill(select, pairs) {
    select.textContent = "";
    pairs.forEach(function (p) { var o = el("option", p[1]); o.value = p[0]; select.appendChild(o); });
  }

  async function refreshSigner() {
    var signer = await cgcrypto.loadSigner();
    var ready = !!(signer && signer.account === me.account);
    $("signer-status").textContent = ready
      ? T("common.signing_key_enrolled") + signer.account + T("components.changes_will_be_signed_with_this") : T("components.no_signing_key_enrolled_yet_enrol");
    $("enrol-box").hidden = ready;
    $("signer").className = ready ? "signer ready" : "signer";
    return ready;
  }

  /* The list shows one page of the department's components (the server's `per_page`, by
     code); the pager moves through them. A refresh after a change stays on its page. A page
     asked for before a later one is dropped (`lists` counts them). */
  var listPage = 1, lists = 0, filtered = null;

  /* `fresh`: the filter form was submitted; else the filters last submitted stay (a page
     turned applies nothing typed but not searched for). */
  async function loadList(page, fresh) {
    var mine = ++lists;
    if (page !== undefined) { listPage = page; }
    if (fresh || filtered === null) {
      filtered = new URLSearchParams();
      new FormData($("filter")).forEach(function (v, k) { if (v) { filtered.set(k, v); } });
    }
    var q = new URLSearchParams(filtered);
    if (listPage > 1) { q.set("page", String(listPage)); }
    var reply = await getJSON("/components?" + q.toString());
    if (mine !== lists) { return; }
    var body = $("components").querySelector("tbody");
    body.textContent = "";
    if (reply.status !== 200) {
      $("list-status").textContent = T("components.cannot_read_the_components") + (reply.body ? reply.body.message : reply.status);
      $("list-pager").hidden = true;
      return;
    }
    var found = reply.body, pages = Math.max(1, Math.ceil(found.total / found.per_page));
    if (found.page > pages && found.total > 0) { return loadList(pages); }  // the last page shrank
    found.components.forEach(function (c) {
      var tr = el("tr"), a = el("a", c.code);
      a.href = "#" + c.code;
      a.addEventListener("click", function (ev) { ev.preventDefault(); loadComponent(c.code); });
      var td = el("td"); td.appendChild(a); tr.appendChild(td);
      [c["class"].name, c.name, N("component_state", c.state, c.state_name), c.grid, c.version].forEach(function (v) { tr.appendChild(el("td", v)); });
      tr.dataset.code = c.code;
      body.appendChild(tr);
    });
    $("list-status").textContent = T("common.text") + found.total + T("components.components");
    $("list-pager").hidden = pages < 2;
    $("page-at").textContent = T("common.page") + found.page + " / " + pages + T("common.page_end");
    $("page-prev").disabled = found.page <= 1;
    $("page-next").disabled = found.page >= pages;
    $("components").dataset.page = String(found.page);
  }

  function showPlace(c) {
    var p = c.pixel;
    $("minimap-tile").src = "/tiles/topo500/" + p.level + "/" + p.x + "/" + p.y + ".png?v=" + c.version;
    $("marker").style.left = p.col + "px";
    $("marker").style.top = p.row + "px";
    target = null;
    $("target").hidden = true;
    $("move").disabled = true;
  }

  async function loadComponent(code) {
    var reply = await getJSON("/components/" + code);
    if (reply.status !== 200) { $("detail-result").textContent = reply.body.message; return; }
    var c = reply.body;
    current = c;
    $("detail").hidden = false;
    $("detail-title").textContent = c.code + " " + c.name;
    var dl = $("attributes");
    dl.textContent = "";
    [[T("common.class"), c["class"].name], [T("common.state"), N("component_state", c.state, c.state_name)], [T("common.unit_grid"), c.grid], [T("components.responsible_department"), c.responsible_dept],
     [T("components.owning_department"), c.owner_dept], [T("common.maintaining_department"), c.maintainer_dept], [T("common.version"), c.version],
     [T("components.updated_at"), when(c.changed_at)]].forEach(function (kv) {
      dl.appendChild(el("dt", kv[0])); dl.appendChild(el("dd", kv[1]));
    });
    var f = $("edit-form");
    f.elements.name.value = c.name;
    f.elements.state.value = c.state;
    fill(f.elements.maintainer_dept, forms.departments.concat(
      forms.departments.indexOf(c.maintainer_dept) < 0 ? [c.maintainer_dept] : []).map(function (d) { return [d, d]; }));
    f.elements.maintainer_dept.value = c.maintainer_dept;
    showPlace(c);
    var cases = $("cases");
    cases.textContent = "";
    c.cases.forEach(function (k) {
      var li = el("li"), a = el("a", k.number + T("common.open_paren") + k.state + T("common.close_paren"));
      a.href = k.href; li.appendChild(a); cases.appendChild(li);
    });
    if (!c.cases.length) { cases.appendChild(el("li", T("common.none"))); }
    var body = $("history").querySelector("tbody");
    body.textContent = "";
    c.history.forEach(function (h) {
      var tr = el("tr");
      [h.version, CHANGE_NAMES[h.change] || h.change, when(h.valid_from), when(h.valid_to), h.name,
       N("component_state", h.state, h.state_name), h.grid, h.actor || "—"].forEach(function (v) { tr.appendChild(el("td", v)); });
      body.appendChild(tr);
    });
    document.body.dataset.version = String(c.version);
  }

  async function signed(url, action, resource, params, out) {
    try {
      var reply = await cgcrypto.signAndPost(url, action, resource, params);
      if (reply.status === 409) {  // another's change first (its version): reload; else as said
        var stale = reply.body && reply.body.version !== undefined;
        out.textContent = T("components.conflict") + (reply.body ? reply.body.message : reply.status) +
          (stale ? T("components.reload_and_try_again") : "");
        return null;
      }
      if (reply.status >= 300) { out.textContent = T("components.not_saved") + (reply.body ? reply.body.message : reply.status); return null; }
      return reply.body;
    } catch (e) {
      out.textContent = T("common.signing_failed") + e.message;
      return null;
    }
  }

  async function change(op, params) {
    var out = $("detail-result");
    params.version = current.version;
    var done = await signed("/components/" + current.code + "/" + op, "component." + op,
                            "component " + current.code, params, out);
    if (done) {
      out.textContent = T("components.saved_version") + done.version + T("common.close_paren");
      await loadComponent(current.code);
      await loadList();
    }
  }

  function wire() {
    $("enrol").addEventListener("click", async function () {
      var code = $("enrol-code").value.trim();
      if (!code) { $("signer-status").textContent = T("common.first_enter_the_one_time_enrolment"); return; }
      try { await cgcrypto.enrol(me.account, code); $("enrol-code").value = ""; await refreshSigner(); }
      catch (e) { $("signer-status").textContent = T("common.enrolment_failed") + e.message; }
    });
    $("filter").addEventListener("submit", function (ev) { ev.preventDefault(); loadList(1, true); });
    $("page-prev").addEventListener("click", function () { loadList(listPage - 1); });
    $("page-next").addEventListener("click", function () { loadList(listPage + 1); });
    $("edit-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = ev.target, set = {};
      if (f.elements.name.value.trim() !== current.name) { set.name = f.elements.name.value.trim(); }
      if (f.elements.state.value !== current.state) { set.state = f.elements.state.value; }
      if (f.elements.maintainer_dept.value !== current.maintainer_dept) { set.maintainer_dept = f.elements.maintainer_dept.value; }
      if (!Object.keys(set).length) { $("detail-result").textContent = T("components.nothing_changed"); return; }
      change("edit", { set: set });
    });
    $("minimap").addEventListener("click", function (ev) {
      var box = $("minimap-tile").getBoundingClientRect();  // the picture, inside the frame
      var col = Math.floor(ev.clientX - box.left), row = Math.floor(ev.clientY - box.top);
      if (col < 0 || row < 0 || col > 255 || row > 255 || !current) { return; }
      var p = current.pixel;
      target = { level: p.level, x: p.x, y: p.y, col: col, row: row };
      $("target").style.left = col + "px"; $("target").style.top = row + "px";
      $("target").hidden = false;
      $("move").disabled = false;
    });
    $("move").addEventListener("click", function () { if (target) { change("move", { place: { pixel: target } }); } });
    $("retire-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      change("retire", { reason: ev.target.elements.reason.value.trim() });
    });
    $("show-as-of").addEventListener("click", async function () {
      var at = cgInstant($("as-of").value);  // a time of the install's zone, as shown
      if (!at || !current) { return; }
      var r = await getJSON("/components/" + current.code + "?as_of=" + encodeURIComponent(at.toISOString()));
      $("as-of-result").textContent = r.status === 200
        ? T("components.at_that_time_version") + r.body.version + T("common.comma") + r.body.name + T("common.comma") + N("component_state", r.body.state, r.body.state_name) + T("components.grid_2") + r.body.grid
        : r.body.message;
    });
    $("add-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, cls = f.elements.cls.value.split("/");
      var params = { major: cls[0], minor: cls[1], name: f.elements.name.value.trim(),
                     place: { grid: f.elements.grid.value.trim() } };
      var done = await signed("/components", "component.add", "components", params, $("add-result"));
      if (done) { $("add-result").textContent = T("components.added_component") + done.code; await loadList(); await loadComponent(done.code); }
    });
    $("bulk-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var file = ev.target.elements.file.files[0];
      if (!file) { return; }
      var gpkg = /\.gpkg$/i.test(file.name);
      var r = await fetch("/components/imports?filename=" + encodeURIComponent(file.name), {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": gpkg ? "application/geopackage+sqlite3" : "text/csv" }, body: file });
      var body = null;
      try { body = await r.json(); } catch (e) { body = null; }  // a proxy's page (413) is no JSON
      var table = $("bulk-report"), tbody = table.querySelector("tbody");
      tbody.textContent = "";
      if (r.status !== 201 || !body) {
        $("bulk-status").textContent = T("components.cannot_read_the_file") + (body && body.message ? body.message : r.status);
        table.hidden = true;
        return;
      }
      body.report.forEach(function (row) {
        var tr = el("tr");
        [row.row, OP_NAMES[row.op] || row.op, row.code || T("components.new_code"), row.grid || "—"].forEach(function (v) { tr.appendChild(el("td", v)); });
        tr.appendChild(el("td", row.problems.length ? row.problems.join(T("common.semicolon")) : T("components.ok"), row.problems.length ? "bad" : ""));
        tbody.appendChild(tr);
      });
      table.hidden = false;
      checkedImport = body.ok ? body : null;
      $("bulk-apply").hidden = !body.ok;
      $("bulk-status").textContent = body.ok
        ? T("components.valid") + body.rows + T("components.rows_ready_to_apply")
        : T("components.not_valid") + body.problems + T("components.rows_have_problems_nothing_applied_correct");
    });
    $("bulk-apply").addEventListener("click", async function () {
      if (!checkedImport) { return; }
      var imp = checkedImport;
      var done = await signed("/components/imports/" + imp.id + "/apply", "component.import",
                              "component import " + imp.id, { sha256: imp.sha256 }, $("bulk-status"));
      if (done) {
        $("bulk-status").textContent = T("components.all_applied") + done.applied + T("components.components");
        $("bulk-apply").hidden = true;
        checkedImport = null;
        await loadList();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", async function () {
    me = (await getJSON("/auth/whoami")).body;
    $("who").textContent = me.account + T("common.open_paren") + me.roles.map(function (r) { return N("role", r); }).join(T("common.list_comma")) + T("common.close_paren");
    var reply = await getJSON("/components/forms");
    if (reply.status !== 200) { $("list-status").textContent = reply.body.message; return; }
    forms = reply.body;
    var states = Object.keys(forms.states).map(function (k) { return [k, N("component_state", k, forms.states[k])]; });
    fill($("edit-form").elements.state, states);
    fill($("filter").elements.state, [["", T("common.all")]].concat(states));
    fill($("add-form").elements.cls, forms.classes.map(function (c) {
      return [c.major + "/" + c.minor, c.major + c.minor + " " + c.major_name + " · " + c.name];
    }));
    wire();
    await refreshSigner();
    await loadList();
    document.body.dataset.ready = "1";
  });
}());
