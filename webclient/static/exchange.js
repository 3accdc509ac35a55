/* The command centre's side of the city–district exchange: what was sent (and whether the
   peer acknowledged it) and received, forwarding a case, answering a forwarded case; every
   act signed with the enrolled non-extractable WebCrypto key. */
(function () {
  "use strict";
  var me = null, state = null, peerCa = null, peerLogKey = null;
  var KIND_NAMES = { "case.forward": T("exchange.forwarded_case"), "case.result": T("common.handling_result"), "component.update": T("exchange.component_update"), "exchange.withdrawn": T("exchange.withdrawn_message") };

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

  async function refreshSigner() {
    var signer = await cgcrypto.loadSigner();
    var ready = !!(signer && signer.account === me.account);
    $("signer-status").textContent = ready ? T("common.signing_key_enrolled") + signer.account + T("common.close_paren") : T("common.no_signing_key_enrolled_yet");
    $("enrol-box").hidden = ready;
    $("signer").className = ready ? "signer ready" : "signer";
  }

  function describe(m) {
    var c = m.content || {};
    if (m.kind === "case.forward") {
      var k = c["case"] || {};
      return (k.number ? k.number + " " : "") + (k.description || "") + (k.grid ? T("exchange.grid") + k.grid + T("common.close_paren") : "");
    }
    if (m.kind === "case.result") { return (c["case"] ? c["case"] + T("common.colon") : "") + c.result; }
    if (m.kind === "exchange.withdrawn") { return T("exchange.withdrawal_of") + (KIND_NAMES[c.withdrawn] || c.withdrawn) + T("common.colon") + c.reason; }
    return (c.components || []).map(function (x) { return x.code + " " + x.state; }).join(T("common.comma"));
  }

  async function signed(url, action, resource, params, out) {
    try {
      var reply = await cgcrypto.signAndPost(url, action, resource, params);
      if (reply.status >= 300) { out.textContent = T("exchange.not_done") + (reply.body ? reply.body.message : reply.status); return null; }
      return reply.body;
    } catch (e) { out.textContent = T("common.signing_failed") + e.message; return null; }
  }

  /* A one-field form that signs `action` on `exchange SOURCE_ID` with what `params` makes
     of the field's text, then reloads the lists. */
  function signedForm(cls, name, placeholder, label, m, path, action, params, attach) {
    var form = el("form", null, cls);
    var input = el("input"); input.name = name; input.maxLength = 2000; input.required = true;
    input.placeholder = placeholder;
    var button = el("button", label); button.type = "submit";
    var status = el("span");
    form.appendChild(input);
    if (attach) { form.appendChild(cgattach.input()); }
    form.appendChild(button); form.appendChild(status);
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var values = params(input.value.trim());
      button.disabled = true;
      try {
        if (attach && !await withFiles(form, values, status)) { return; }
        var done = await signed("/exchange/messages/" + m.source_id + "/" + path, action,
                                "exchange " + m.source_id, values, status);
        if (done) { await load(); }
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  /* The form's chosen photos and recordings, uploaded and named in `params.attachments`
     (the message carries them to the peer); false, saying why in `out`, when one is refused. */
  async function withFiles(form, params, out) {
    var chosen = form.elements.photos;
    if (!chosen || !chosen.files.length) { return true; }
    try { params.attachments = await cgattach.upload(chosen.files); return true; }
    catch (e) { out.textContent = e.message; return false; }
  }

  /* A message's photos and recordings, each shown once its bytes hash to what the message
     lists (for a received message, once the peer's log is shown to vouch for the list). */
  async function showFiles(td, m) {
    var c = m.content || {}, listed = Array.isArray(c.attachments) ? c.attachments : [];
    var hashes = listed.map(function (a) { return a.sha256; });
    for (var i = 0; i < listed.length; i++) {
      await cgattach.show("/exchange/messages/" + encodeURIComponent(m.source_id) + "/files/" + listed[i].sha256,
                          listed[i], hashes, td, "exchange-" + m.source_id);
    }
    if (c.attachments_left) { td.appendChild(el("span", T("exchange.files_left") + c.attachments_left, "hint")); }
  }

  function answerCell(m) {
    var td = el("td");
    if (m.kind !== "case.forward") { return td; }
    if (m.answered_by) { td.textContent = T("exchange.answered") + m.answered_by + T("common.close_paren"); return td; }
    td.appendChild(signedForm("answer", "result", T("common.handling_result"), T("exchange.sign_and_answer"),
      m, "result", "exchange.result", function (text) { return { result: text, outcome: "handled" }; }, true));
    return td;
  }

  /* A sent message the peer has not acknowledged may be withdrawn (a signed act, with its
     reason): the withdrawal takes its place under its number. */
  function withdrawCell(m) {
    var td = el("td");
    if (m.withdrawn_at || m.acked_at) { return td; }
    td.appendChild(signedForm("withdraw", "reason", T("exchange.withdraw_reason"), T("exchange.sign_and_withdraw"),
      m, "withdraw", "exchange.withdraw", function (text) { return { reason: text }; }));
    return td;
  }


  async function showSigner(td, m) {
    td.textContent = T("common.verifying");
    td.className = "sig";
    var result;
    try { result = await cgexchange.checkReceived(m, state.me, peerCa, peerLogKey); } catch (e) { result = { ok: false, reason: String(e.message || e) }; }
    td.textContent = result.ok ? "✓ " + result.account : "✗ " + result.reason;
    td.className = result.ok ? "sig verified" : "sig bad";
    if (result.ok) { td.title = T("exchange.verified_here"); }
    return result.ok;
  }

  function receivedRow(m, checks) {
    var tr = el("tr");
    tr.dataset.source = m.source_id;
    [m.source_id, KIND_NAMES[m.kind] || m.kind, describe(m), m.signer, when(m.received_at)].forEach(function (v) {
      tr.appendChild(el("td", v));
    });
    checks.push(showSigner(tr.children[3], m).then(function (ok) { return ok ? showFiles(tr.children[2], m) : null; }));
    tr.appendChild(answerCell(m));
    return tr;
  }

  function sentRow(m, checks) {
    var tr = el("tr");
    tr.dataset.source = m.source_id;
    var status = m.acked_at ? T("exchange.acknowledged_by_the_peer") + when(m.acked_at) : (m.last_error ? T("exchange.to_be_resent") + m.last_error : T("exchange.waiting_to_be_sent"));
    var kind = KIND_NAMES[m.kind] || m.kind;
    if (m.withdrawn_at) {
      var c = m.content || {};
      kind = T("exchange.withdrawn") + (KIND_NAMES[c.withdrawn] || c.withdrawn);
      status = T("exchange.withdrawn") + c.reason + (m.too_late ? T("exchange.withdrawal_too_late") : "") + " · " + status;
      tr.className = "withdrawn";
    }
    [m.source_id, kind, m["case"] || "—", m.attempts, status].forEach(function (v) {
      tr.appendChild(el("td", v));
    });
    if (m["case"]) {  // the case page: where a withdrawn forwarding's case is recalled
      var link = el("a", m["case"]);
      link.href = "/inbox/" + encodeURIComponent(m["case"]);
      tr.children[2].textContent = "";
      tr.children[2].appendChild(link);
    }
    tr.appendChild(withdrawCell(m));
    if (!m.withdrawn_at) { checks.push(showFiles(tr.children[1], m)); }
    return tr;
  }

  /* Each list shows its newest page; "older" asks for the next page before the oldest shown
     (the listing's `older_sent` / `older_received` cursor) and adds it below. */
  var LISTS = {
    received: { cursor: "older_received", param: "received_before", rows: "received", make: receivedRow },
    sent: { cursor: "older_sent", param: "sent_before", rows: "sent", make: sentRow }
  };

  async function addRows(name, page) {
    var list = LISTS[name], body = $(name).querySelector("tbody"), checks = [];
    page[list.rows].forEach(function (m) { body.appendChild(list.make(m, checks)); });
    var more = $(name + "-older");
    more.hidden = page[list.cursor] === null;
    more.dataset.before = page[list.cursor] === null ? "" : String(page[list.cursor]);
    await Promise.all(checks);
  }

  /* A load replaces both lists; an "older" page asked for before it belongs to the lists it
     replaced and is dropped (`loads` counts them). */
  var loads = 0;

  async function older(name) {
    var more = $(name + "-older"), mine = loads, reply;
    more.disabled = true;
    try {
      reply = await getJSON("/exchange/messages?" + LISTS[name].param + "=" + encodeURIComponent(more.dataset.before));
    } catch (e) {
      reply = { status: 0, body: { message: T("common.failed") + e.message } };
    } finally {
      more.disabled = false;
    }
    if (mine !== loads) { return; }
    if (reply.status !== 200) { $("side").textContent = reply.body ? reply.body.message : String(reply.status); return; }
    await addRows(name, reply.body);
    document.body.dataset.loaded = String(Date.now());
  }

  async function load() {
    var mine = ++loads;
    var reply = await getJSON("/exchange/messages");
    if (mine !== loads) { return; }
    if (reply.status !== 200) { $("side").textContent = reply.body ? reply.body.message : String(reply.status); return; }
    state = reply.body;
    $("side").textContent = state.me === "district" ? T("exchange.this_platform_district_level_peer_city")
      : state.me === "city" ? T("exchange.this_platform_city_level_peer_district") : T("exchange.this_platform_takes_no_part_in");
    $("forward-case").hidden = state.me !== "district";
    $("forward-new").hidden = state.me !== "city";
    $("received").querySelector("tbody").textContent = "";
    $("sent").querySelector("tbody").textContent = "";
    await Promise.all([addRows("received", state), addRows("sent", state)]);
    document.body.dataset.loaded = String(Date.now());
  }

  function wire() {
    var send = $("new-form").querySelector("button[type=submit]");
    send.parentNode.insertBefore(cgattach.input(), send);
    $("received-older").addEventListener("click", function () { older("received"); });
    $("sent-older").addEventListener("click", function () { older("sent"); });
    $("enrol").addEventListener("click", async function () {
      var code = $("enrol-code").value.trim();
      if (!code) { $("signer-status").textContent = T("common.first_enter_the_one_time_enrolment"); return; }
      try { await cgcrypto.enrol(me.account, code); $("enrol-code").value = ""; await refreshSigner(); }
      catch (e) { $("signer-status").textContent = T("common.enrolment_failed") + e.message; }
    });
    $("forward-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, number = f.elements.number.value.trim();
      var done = await signed("/exchange/cases/" + number + "/forward", "case.dispatch", "case " + number,
                              { from: "filed", bureau: state.peer_org, note: f.elements.note.value.trim() }, $("forward-result"));
      if (done) { $("forward-result").textContent = T("exchange.forwarded") + done.exchange.source_id + T("common.close_paren"); await load(); }
    });
    $("new-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, cls = f.elements.cls.value.split("/"), send = f.querySelector("button[type=submit]");
      var params = { kind: "event", major: cls[0], minor: cls[1], grid: f.elements.grid.value.trim(),
                     description: f.elements.description.value.trim() };
      var done = null;
      send.disabled = true;  // one message for one click, however long the uploads take
      try {
        if (!await withFiles(f, params, $("new-result"))) { return; }
        done = await signed("/exchange/forward", "exchange.forward", "exchange cases", params, $("new-result"));
      } finally {
        send.disabled = false;
      }
      if (done) { $("new-result").textContent = T("exchange.forwarded") + done.exchange.source_id + T("common.close_paren"); await load(); }
    });
  }

  document.addEventListener("DOMContentLoaded", async function () {
    me = (await getJSON("/auth/whoami")).body;
    $("who").textContent = me.account + T("common.open_paren") + me.roles.map(function (r) { return N("role", r); }).join(T("common.list_comma")) + T("common.close_paren");
    var peerPem = document.querySelector('meta[name="citygrid-peer-ca"]');
    if (peerPem && peerPem.content.trim()) { peerCa = await certcheck.authority(peerPem.content); }
    var keyPem = document.querySelector('meta[name="citygrid-peer-log-key"]');
    peerLogKey = keyPem ? logcheck.rawKey(keyPem.content) : null;
    wire();
    await refreshSigner();
    await load();
    document.body.dataset.ready = "1";
  });
}());
