/* Administration page: enrol a WebCrypto signing key, then sign administrative actions —
   accounts (add, search, disable/enable, roles, enrolment codes, certificate revocation),
   the organisation tree, class tables, time limits and work calendar (each change signed
   and versioned on the server: mapserver.maintenance). */
(function () {
  "use strict";
  var me = null, roles = [], streets = [], orgKinds = {};
  var STAGES = { accept: T("manage.accept"), file: T("common.filed"), dispatch: T("manage.dispatch"), handle: T("manage.handle"), forward: T("manage.feedback"),
                 check: T("manage.check"), order_reply: T("manage.order_reply") };
  var UNITS = { working_hours: T("common.working_hours"), working_days: T("common.working_days") };

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function option(select, value, text) {
    var o = el("option", text); o.value = value; select.appendChild(o); return o;
  }
  function when(iso) { return iso ? iso.replace("T", " ").slice(0, 16) : "—"; }
  /* The body of a 200 answer; otherwise an Error that says why there is none: the server's
     refusal, a proxy's status (its page is not JSON), or the network's failure. */
  async function getBody(url) {
    var r = await fetch(url, { credentials: "same-origin" }), body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (r.status !== 200 || !body) { throw new Error(body && body.message ? body.message : String(r.status)); }
    return body;
  }
  function report(ok, text) {
    var out = document.getElementById("op-result");
    out.hidden = false;
    out.textContent = text;
    out.className = ok ? "status good" : "status bad";
  }
  /* Sign one change, say what came of it, and reload what it touched. A change made whose
     reload then fails is reported as made (and the page as not showing it), not as failed:
     the administrator would sign it again. */
  async function signed(url, action, resource, params, after) {
    var reply;
    try {
      reply = await cgcrypto.signAndPost(url, action, resource, params);
    } catch (e) {
      report(false, T("common.failed") + e.message);
      return null;
    }
    if (reply.status !== 200 && reply.status !== 201) {
      report(false, cgRefusal(reply));
      return null;
    }
    var made = T("manage.signed_and_submitted") + action + " " + resource + T("manage.signed_action_2") + reply.body.signed_action + T("common.close_paren");
    // Said once, when the page has shown the change or could not: a first word that a
    // second one then corrects would be read (and acted on) in between.
    var remark = "";
    try {
      if (after) { await after(reply.body); }
      await loadChanges();
    } catch (e) {
      remark = T("manage.the_page_does_not_show_it_yet") + e.message;
    }
    report(true, made + remark);
    return reply.body;
  }
  /* Load one part of the page; a part that cannot be read says so and leaves the others. */
  async function part(load) {
    try { await load(); } catch (e) { report(false, T("common.failed") + e.message); }
  }

  async function refresh() {
    var signer = await cgcrypto.loadSigner();
    document.getElementById("signer-status").textContent = signer && signer.account === me.account
      ? T("common.signing_key_enrolled") + signer.account + T("common.close_paren") : T("common.no_signing_key_enrolled_yet");
  }

  /* ---------------------------------------------------------------- accounts */

  /* The list and the detail show what was asked last: an earlier search's or click's
     answer, come later, is dropped (`searches` and `details` count them). A search that
     fails leaves the list as it was. */
  var searches = 0, details = 0;

  async function searchAccounts() {
    var f = document.getElementById("account-search"), mine = ++searches;
    var q = new URLSearchParams();
    ["q", "role", "active"].forEach(function (k) { if (f[k].value) { q.set(k, f[k].value); } });
    var found = await getBody("/maintenance/accounts?" + q.toString()).catch(function (e) {
      if (mine === searches) { throw e; }  // a failure of a search since replaced goes unsaid
    });
    if (mine !== searches) { return; }
    var body = document.querySelector("#account-list tbody");
    body.textContent = "";
    found.accounts.forEach(function (a) {
      var tr = el("tr");
      tr.dataset.name = a.name;
      [a.name, a.display_name, a.org_name || a.org || "—", a.roles.join(T("common.list_comma")),
       a.active ? T("common.enabled") : T("common.disabled"), a.valid_certificates].forEach(function (v) { tr.appendChild(el("td", v)); });
      tr.addEventListener("click", function () { part(function () { return showAccount(a.name); }); });
      body.appendChild(tr);
    });
    document.getElementById("account-truncated").hidden = !found.truncated;
    document.getElementById("account-list").dataset.loaded = String(found.accounts.length);
  }

  async function showAccount(name) {
    var mine = ++details;
    var a = await getBody("/maintenance/accounts/" + encodeURIComponent(name)).catch(function (e) {
      if (mine === details) { throw e; }
    });
    if (mine !== details) { return; }
    var box = document.getElementById("account-detail");
    box.hidden = false;
    box.dataset.name = a.name;
    document.getElementById("detail-name").textContent = a.name;
    document.getElementById("detail-active").textContent = a.active ? T("common.enabled") : T("common.disabled");
    var toggle = document.getElementById("toggle-active");
    toggle.textContent = a.active ? T("manage.sign_and_disable") : T("manage.sign_and_enable");
    toggle.onclick = function () {
      var path = a.active ? "/admin/accounts/" + encodeURIComponent(a.name) + "/disable"
                          : "/maintenance/accounts/" + encodeURIComponent(a.name) + "/enable";
      signed(path, a.active ? "account.disable" : "account.enable", "account " + a.name, {},
             function () { return refreshAccount(a.name); });
    };
    var held = document.getElementById("detail-roles");
    held.textContent = "";
    a.roles.forEach(function (r) {
      var chip = el("span", r + " ", "chip");
      chip.dataset.role = r;
      var b = el("button", T("manage.revoke"));
      b.type = "button";
      b.addEventListener("click", function () {
        signed("/maintenance/accounts/" + encodeURIComponent(a.name) + "/revoke-role", "account.revoke_role",
               "account " + a.name, { role: r }, function () { return refreshAccount(a.name); });
      });
      chip.appendChild(b);
      held.appendChild(chip);
    });
    var certs = document.querySelector("#certificates tbody");
    certs.textContent = "";
    a.certificates.forEach(function (c) {
      var tr = el("tr");
      tr.dataset.serial = c.serial;
      tr.appendChild(el("td", c.serial.slice(0, 16) + "…"));
      tr.appendChild(el("td", c.kind));
      tr.appendChild(el("td", when(c.not_after)));
      tr.appendChild(el("td", c.revoked_at ? T("manage.revoked") + c.revocation_reason + T("common.close_paren") : T("manage.valid")));
      var cell = el("td");
      if (!c.revoked_at) {
        var b = el("button", T("manage.sign_and_revoke"));
        b.type = "button";
        b.addEventListener("click", async function () {
          // Revocation is committed even when the CRL is published later by the signer (the
          // answer then refuses, saying so): the account is shown again either way.
          var again = function () { return refreshAccount(a.name); };
          if (!(await signed("/admin/certificates/" + c.serial + "/revoke", "pki.revoke", "certificate " + c.serial,
                             { reason: "key_compromise" }, again))) {
            try { await again(); } catch (e) { /* the refusal stays said */ }
          }
        });
        cell.appendChild(b);
      }
      tr.appendChild(cell);
      certs.appendChild(tr);
    });
    document.getElementById("issued-code").textContent = "";
    box.dataset.loaded = a.name + ":" + a.active + ":" + a.roles.join(",") + ":" +
      a.certificates.filter(function (c) { return c.revoked_at; }).length;
  }
  async function refreshAccount(name) { await showAccount(name); await searchAccounts(); }

  function wireAccounts() {
    var search = document.getElementById("account-search"), grant = document.getElementById("grant-role");
    roles.forEach(function (r) { option(search.role, r, r); option(grant.role, r, r); });
    search.addEventListener("submit", function (ev) { ev.preventDefault(); part(searchAccounts); });
    grant.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var name = document.getElementById("account-detail").dataset.name;
      signed("/maintenance/accounts/" + encodeURIComponent(name) + "/grant", "account.grant", "account " + name,
             { role: grant.role.value }, function () { return refreshAccount(name); });
    });
    document.getElementById("issue-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var name = document.getElementById("account-detail").dataset.name, f = ev.target;
      var pem = f.csr.value.trim(), reply;
      try {
        var der = cgcrypto.b64decode(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
        var params = { kind: "person", csr_sha256: cgcrypto.hex(await cgcrypto.sha256(der)) };
        if (f.days.value) { params.days = parseInt(f.days.value, 10); }
        // The CSR travels beside the signed action, which names its SHA-256.
        reply = await cgcrypto.signAndPost("/maintenance/accounts/" + encodeURIComponent(name) + "/certificates",
                                           "pki.issue", "account " + name, params, { csr: pem });
      } catch (e) {
        report(false, T("common.failed") + e.message);
        return;
      }
      if (reply.status !== 201) { report(false, cgRefusal(reply)); return; }
      var made = T("manage.signed_and_submitted_pki_issue_account") + name + T("manage.signed_action_2") + reply.body.signed_action +
                 T("manage.certificate_serial") + reply.body.serial;
      var shown = document.getElementById("issued-certificate"), link = document.getElementById("issued-download");
      shown.textContent = reply.body.certificate; shown.hidden = false;
      link.href = URL.createObjectURL(new Blob([reply.body.certificate], { type: "application/x-pem-file" }));
      link.download = name + ".crt"; link.hidden = false;
      f.csr.value = "";
      var remark = "";
      try {
        await showAccount(name);
        await loadChanges();
      } catch (e) {
        remark = T("manage.the_page_does_not_show_it_yet") + e.message;
      }
      report(true, made + remark);
    });
    document.getElementById("enrol-code-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var name = document.getElementById("account-detail").dataset.name;
      await signed("/maintenance/accounts/" + encodeURIComponent(name) + "/enrol-code",
                   "pki.enrol_code", "account " + name, { hours: parseInt(ev.target.hours.value, 10) },
                   function (body) { document.getElementById("issued-code").textContent = body.code; });
    });
  }

  /* ---------------------------------------------------------------- organisations */

  function treeList(nodes) {
    var ul = el("ul");
    nodes.forEach(function (n) {
      var li = el("li");
      li.dataset.code = n.code;
      var label = el("a", n.name + T("common.open_paren") + n.code + " · " + N("org_kind", n.kind, orgKinds[n.kind] || n.kind) + T("common.close_paren") + (n.active ? "" : T("manage.disabled")));
      label.href = "#organisations";
      label.addEventListener("click", function () { editOrg(n); });
      li.appendChild(label);
      if (n.children.length) { li.appendChild(treeList(n.children)); }
      ul.appendChild(li);
    });
    return ul;
  }
  function editOrg(n) {
    var f = document.getElementById("org-form");
    f.code.value = n.code; f.name.value = n.name; f.kind.value = n.kind;
    f.parent.value = n.parent || ""; f.street.value = n.street || ""; f.active.checked = n.active;
  }
  async function loadOrgs() {
    var b = await getBody("/maintenance/organisations");
    orgKinds = b.kinds;
    var f = document.getElementById("org-form");
    if (!f.kind.options.length) {
      Object.keys(orgKinds).forEach(function (k) { option(f.kind, k, N("org_kind", k, orgKinds[k])); });
      b.streets.forEach(function (s) { option(f.street, s.code, s.name + T("common.open_paren") + s.code + T("common.close_paren")); });
    }
    while (f.parent.options.length > 1) { f.parent.remove(1); }
    (function walk(nodes) {
      nodes.forEach(function (n) { option(f.parent, n.code, n.name + T("common.open_paren") + n.code + T("common.close_paren")); walk(n.children); });
    }(b.tree));
    var box = document.getElementById("org-tree");
    box.textContent = "";
    box.appendChild(treeList(b.tree));
  }
  function wireOrgs() {
    document.getElementById("org-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = ev.target, code = f.code.value.trim();
      signed("/maintenance/organisations/" + encodeURIComponent(code), "org.save", "organisation " + code, {
        name: f.name.value.trim(), kind: f.kind.value, parent: f.parent.value || null,
        street: f.street.value || null, active: f.active.checked
      }, loadOrgs);
    });
  }

  /* ---------------------------------------------------------------- classes */

  /* The table of the kind chosen last: an earlier kind's answer, come later, is dropped. */
  var classLoads = 0;

  async function loadClasses() {
    var kind = document.getElementById("class-kind").value, mine = ++classLoads;
    var found = await getBody("/maintenance/classes/" + kind).catch(function (e) {
      if (mine === classLoads) { throw e; }
    });
    if (mine !== classLoads) { return; }
    var body = document.querySelector("#class-table tbody");
    body.textContent = "";
    found.classes.forEach(function (c) {
      var tr = el("tr");
      tr.dataset.code = c.major + "/" + c.minor;
      [c.major + "/" + c.minor, c.major_name, c.name, c.department, c.filing_condition,
       c.closing_condition, c.time_limit + " " + UNITS[c.time_unit]].forEach(function (v) { tr.appendChild(el("td", v)); });
      tr.addEventListener("click", function () { editClass(kind, c); });
      body.appendChild(tr);
    });
    document.getElementById("class-table").dataset.loaded = kind;
  }
  function editClass(kind, c) {
    var f = document.getElementById("class-form");
    f.hidden = false;
    f.dataset.kind = kind; f.dataset.major = c.major; f.dataset.minor = c.minor;
    document.getElementById("class-code").textContent = kind + " " + c.major + "/" + c.minor;
    ["name", "department", "filing_condition", "closing_condition"].forEach(function (k) { f[k].value = c[k] || ""; });
    f.time_limit.value = c.time_limit; f.time_unit.value = c.time_unit;
    f.querySelector(".for-event").hidden = kind !== "event";
  }
  function wireClasses() {
    document.getElementById("class-kind").addEventListener("change", function () { part(loadClasses); });
    document.getElementById("class-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = ev.target, kind = f.dataset.kind, code = kind + "/" + f.dataset.major + "/" + f.dataset.minor;
      var params = { name: f.name.value.trim(), department: f.department.value.trim(),
                     filing_condition: f.filing_condition.value.trim(),
                     time_limit: Number(f.time_limit.value), time_unit: f.time_unit.value };
      if (kind === "event") { params.closing_condition = f.closing_condition.value.trim(); }
      signed("/maintenance/classes/" + code, "class.update", "class " + code, params,
             function () { return Promise.all([loadClasses(), loadLimits()]); });
    });
  }

  /* ---------------------------------------------------------------- limits, calendar */

  async function loadLimits() {
    var b = await getBody("/maintenance/limits");
    document.getElementById("limits-version").textContent = b.version;
    document.getElementById("limits").dataset.version = String(b.version);
    var stages = document.querySelector("#stage-limits tbody"), over = document.querySelector("#class-overrides tbody");
    stages.textContent = ""; over.textContent = "";
    b.stages.forEach(function (s) {
      var tr = el("tr"); tr.dataset.stage = s.stage;
      tr.appendChild(el("td", (STAGES[s.stage] || s.stage) + T("common.open_paren") + s.stage + T("common.close_paren")));
      tr.appendChild(el("td", s.amount + " " + UNITS[s.unit]));
      stages.appendChild(tr);
    });
    b.overrides.forEach(function (o) {
      var tr = el("tr");
      [o.kind + "/" + o.major + "/" + o.minor, STAGES[o.stage] || o.stage, o.amount + " " + UNITS[o.unit]]
        .forEach(function (v) { tr.appendChild(el("td", v)); });
      over.appendChild(tr);
    });
    var versions = document.querySelector("#limit-versions tbody");
    versions.textContent = "";
    b.versions.slice().reverse().forEach(function (v) {
      var tr = el("tr");
      [v.version, when(v.created_at), v.subject ? v.subject + " " + JSON.stringify(v.change) : T("manage.initial_version"),
       v.account || "—", v.signed_action ? "#" + v.signed_action : "—"].forEach(function (x) { tr.appendChild(el("td", x)); });
      versions.appendChild(tr);
    });
  }
  function wireLimits() {
    var f = document.getElementById("limit-form");
    Object.keys(STAGES).forEach(function (s) { option(f.stage, s, STAGES[s] + T("common.open_paren") + s + T("common.close_paren")); });
    f.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var params = {}, cls = f.of_class.value.trim();
      if (cls) {
        var parts = cls.split("/");
        if (parts.length !== 3) { report(false, T("manage.write_classes_as_event_01_02")); return; }
        params.kind = parts[0]; params.major = parts[1]; params.minor = parts[2];
      }
      if (f.remove.checked) { params.remove = true; } else {
        params.amount = Number(f.amount.value); params.unit = f.unit.value;
      }
      signed("/maintenance/limits/" + f.stage.value, "limit.set", "limit " + f.stage.value, params, loadLimits);
    });
  }
  async function loadCalendar() {
    var b = await getBody("/maintenance/calendar");
    document.getElementById("calendar-version").textContent = b.version;
    document.getElementById("work-hours").textContent = b.work_hours;
    document.getElementById("work-zone").textContent = b.timezone;
    var body = document.querySelector("#overrides tbody");
    body.textContent = "";
    b.overrides.forEach(function (o) {
      var tr = el("tr"); tr.dataset.day = o.day;
      [o.day, o.kind === "holiday" ? T("common.holiday") : T("common.working_day_swapped"), o.note].forEach(function (v) { tr.appendChild(el("td", v)); });
      body.appendChild(tr);
    });
    document.getElementById("calendar").dataset.version = String(b.version);
  }
  function wireCalendar() {
    document.getElementById("calendar-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = ev.target;
      signed("/maintenance/calendar/" + f.day.value, "calendar.set", "calendar " + f.day.value,
             { kind: f.kind.value, note: f.note.value.trim() }, loadCalendar);
    });
  }
  /* The change log, newest first, a page at a time (the table's `data-page`, else the
     server's 200): "older changes" adds the page before the oldest shown. */
  function historyUrl(before) {
    var q = new URLSearchParams(), size = document.getElementById("change-log").dataset.page;
    if (size) { q.set("limit", size); }
    if (before) { q.set("before", before); }
    return "/maintenance/history" + (q.toString() ? "?" + q.toString() : "");
  }
  function addChanges(b) {
    var body = document.querySelector("#change-log tbody"), more = document.getElementById("change-log-older");
    b.changes.forEach(function (c) {
      var tr = el("tr"); tr.dataset.area = c.area; tr.dataset.version = c.version;
      [c.version, when(c.created_at), c.area, c.subject, c.account, "#" + c.signed_action]
        .forEach(function (v) { tr.appendChild(el("td", v)); });
      body.appendChild(tr);
    });
    more.hidden = b.older === null;
    more.dataset.before = b.older === null ? "" : String(b.older);
  }
  var changeLoads = 0;  // a page of older changes asked for before a reload is dropped
  async function olderChanges() {
    var more = document.getElementById("change-log-older"), mine = changeLoads, b;
    more.disabled = true;
    try { b = await getBody(historyUrl(more.dataset.before)); }
    catch (e) { if (mine === changeLoads) { report(false, T("common.failed") + e.message); } return; }
    finally { more.disabled = false; }
    if (mine === changeLoads) { addChanges(b); }
  }
  async function loadChanges() {
    var mine = ++changeLoads;
    var b = await getBody(historyUrl(null));
    if (mine !== changeLoads) { return; }
    document.querySelector("#change-log tbody").textContent = "";
    addChanges(b);
    var s = await getBody("/maintenance/summary");
    document.getElementById("eval-version").textContent = s.evaluation.version;
  }

  document.addEventListener("DOMContentLoaded", async function () {
    try { me = await getBody("/auth/whoami"); }
    catch (e) { report(false, T("common.failed") + e.message); return; }  // nothing here works without it
    document.getElementById("who").textContent = me.account;
    await refresh();
    document.getElementById("enrol").addEventListener("click", async function () {
      var code = document.getElementById("enrol-code").value.trim();
      if (!code) {
        document.getElementById("signer-status").textContent = T("common.first_enter_the_one_time_enrolment");
        return;
      }
      try {
        await cgcrypto.enrol(me.account, code);
        document.getElementById("enrol-code").value = "";
        await refresh();
      } catch (e) {
        document.getElementById("signer-status").textContent = T("common.enrolment_failed") + e.message;
      }
    });
    document.getElementById("add-account").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, params = { name: f.name.value, roles: [f.role.value] };
      if (f.org.value) { params.org = f.org.value; }
      var out = document.getElementById("result");
      try {
        var reply = await cgcrypto.signAndPost("/admin/accounts", "account.add", "accounts", params);
        out.textContent = reply.status === 201
          ? T("manage.created_account") + reply.body.name + T("manage.signed_action_2") + reply.body.signed_action + T("common.close_paren")
          : cgRefusal(reply);
      } catch (e) {
        out.textContent = T("common.failed") + e.message;
      }
    });
    await part(async function () { roles = (await getBody("/maintenance/accounts")).roles; });
    wireAccounts(); wireOrgs(); wireClasses(); wireLimits(); wireCalendar();
    document.getElementById("change-log-older").addEventListener("click", olderChanges);
    await Promise.all([searchAccounts, loadOrgs, loadClasses, loadLimits, loadCalendar, loadChanges].map(part));
    document.body.dataset.ready = "1";
  });
}());
