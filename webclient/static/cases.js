/* The case workflow in the browser: the role's inbox, recording or reporting a case, one
   case with its history (every signature verified here against CityGrid's CA), its place in
   the map pictures, and the actions the person may take, each signed with the enrolled
   non-extractable WebCrypto key. Positions are pixels of the finest map level only. */
(function () {
  "use strict";
  var me = null, forms = null, ca = null, peerCa = null, logKey = null, peerLogKey = null;
  var FIELD_NAMES = {
    note: T("common.note"), reason: T("cases.reason"), result: T("common.handling_result"), bureau: T("cases.bureau"),
    working_hours: T("cases.extra_working_hours"), decision: T("cases.decision"), duplicate_of: T("cases.number_of_the_duplicated_case"),
    description: T("common.description"), place: T("common.location"), source: T("common.source"), component: T("common.component_code"),
    message: T("cases.order"), reply: T("cases.reply")
  };
  var STANDING = { sent: T("cases.delivered"), waiting: T("cases.awaiting_reply"), answered: T("cases.answered_in_time"),
                   answered_late: T("cases.answered_late_escalated"), escalated: T("cases.not_answered_in_time_escalated_to"),
                   ended: T("cases.order_ended"), ended_late: T("cases.order_ended_late") };
  var CHOICE_NAMES = { invalid: T("cases.invalid"), duplicate: T("cases.duplicate"), approve: T("cases.approve"), refuse: T("cases.refuse") };
  var SOURCE_NAMES = { inspector: T("cases.inspectors_report"), phone: T("cases.phone_complaint"), web: T("cases.web_complaint"), sms: T("cases.sms_complaint"),
                       city_platform: T("cases.from_the_city_platform"), leader: T("cases.leaders_instruction") };

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  async function getJSON(url) {
    var r = await fetch(url, { credentials: "same-origin" }), body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    return { status: r.status, body: body };
  }
  function when(iso) { return cgWhen(iso); }  // in the install's zone, as the big screen
  /* A signed field's label: a reminder's message is not an order's. */
  function fieldName(name, transition) {
    if (name === "message" && transition === "remind") { return T("cases.reminder_message"); }
    return FIELD_NAMES[name] || name;
  }
  function remaining(c) {
    if (c.remaining_seconds === null || c.remaining_seconds === undefined) { return "—"; }
    var s = Math.abs(c.remaining_seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    var text = (h ? h + T("cases.h") : "") + m + T("cases.min");
    return c.overdue ? T("cases.overdue_by") + text : text;
  }
  function titleOf(name) {
    if (name === "create") { return T("cases.recorded"); }
    var t = forms.transitions.filter(function (x) { return x.name === name; })[0];
    return t ? N("transition", t.name, t.title) : name;
  }
  function stateName(s) { return s ? N("state", s, forms.states[s] || s) : "—"; }

  /* ---------------------------------------------------------------- signing key */

  async function refreshSigner() {
    var signer = await cgcrypto.loadSigner();
    var ready = !!(signer && signer.account === me.account);
    document.getElementById("signer-status").textContent = ready
      ? T("common.signing_key_enrolled") + signer.account + T("cases.actions_will_be_signed_with_this") : T("cases.no_signing_key_enrolled_yet_enrol");
    document.getElementById("enrol-box").hidden = ready;
    document.getElementById("signer").className = ready ? "signer ready" : "signer";
    return ready;
  }
  function wireEnrolment(after) {
    document.getElementById("enrol").addEventListener("click", async function () {
      var code = document.getElementById("enrol-code").value.trim();
      var status = document.getElementById("signer-status");
      if (!code) { status.textContent = T("common.first_enter_the_one_time_enrolment"); return; }
      try {
        await cgcrypto.enrol(me.account, code);
        document.getElementById("enrol-code").value = "";
        await refreshSigner();
      } catch (e) {
        status.textContent = T("common.enrolment_failed") + e.message;
        return;
      }
      if (after) { await after(); }
    });
  }

  /* ---------------------------------------------------------------- inbox page */

  /* The list shows one page (the server's `per_page`, or the table's `data-per-page`), by
     deadline; the pager moves through the rest. A change of scope or filter starts again at
     the first page; a list asked for before a later one is dropped (`lists` counts them). */
  var listPage = 1, lists = 0;

  async function loadList(page) {
    var mine = ++lists;
    listPage = typeof page === "number" ? page : 1;
    var all = document.getElementById("scope").value === "all";
    var flags = [];
    if (document.getElementById("overdue-only").checked) { flags.push("overdue=1"); }
    if (document.getElementById("escalated-only").checked) { flags.push("escalated=1"); }
    if (listPage > 1) { flags.push("page=" + listPage); }
    var perPage = document.getElementById("inbox").dataset.perPage;
    if (perPage) { flags.push("per_page=" + encodeURIComponent(perPage)); }
    var q = flags.length ? "?" + flags.join("&") : "";
    var reply = await getJSON((all ? "/cases" : "/cases/inbox") + q);
    if (mine !== lists) { return; }
    var body = document.querySelector("#inbox tbody");
    body.textContent = "";
    if (reply.status !== 200) {
      document.getElementById("inbox-status").textContent = T("cases.cannot_read_the_cases") + (reply.body ? reply.body.message : reply.status);
      document.getElementById("inbox-pager").hidden = true;
      return;
    }
    var pages = Math.max(1, Math.ceil(reply.body.total / reply.body.per_page));
    if (reply.body.page > pages && reply.body.total > 0) { return loadList(pages); }  // the list shrank
    reply.body.cases.forEach(function (c) {
      var tr = el("tr");
      tr.dataset.number = c.number;
      tr.dataset.state = c.state;
      var a = el("a", c.number);
      a.href = "/inbox/" + encodeURIComponent(c.number);
      var first = el("td"); first.appendChild(a); tr.appendChild(first);
      tr.appendChild(el("td", (c["class"].name || "") + T("common.open_paren") + c["class"].major + "/" + c["class"].minor + T("common.close_paren")));
      var stateCell = el("td", N("state", c.state, c.state_name), "state");
      if (c.escalated) {
        stateCell.appendChild(el("span", T("cases.order_overdue"), "escalation"));
        tr.dataset.escalated = "1";
      }
      tr.appendChild(stateCell);
      tr.appendChild(el("td", c.street.name + " · " + c.community.name));
      tr.appendChild(el("td", when(c.deadline)));
      tr.appendChild(el("td", remaining(c), c.overdue ? "overdue" : ""));
      if (c.overdue) { tr.classList.add("overdue"); }
      tr.addEventListener("click", function (ev) {
        if (ev.target.tagName !== "A") { location.href = a.href; }
      });
      body.appendChild(tr);
    });
    document.getElementById("inbox-status").textContent =
      reply.body.total ? T("common.text") + reply.body.total + T("cases.cases_2") : (all ? T("cases.no_visible_cases") : T("cases.nothing_in_your_inbox"));
    document.getElementById("inbox-pager").hidden = pages < 2;
    document.getElementById("inbox-page-at").textContent = T("common.page") + reply.body.page + " / " + pages + T("common.page_end");
    document.getElementById("inbox-prev").disabled = reply.body.page <= 1;
    document.getElementById("inbox-next").disabled = reply.body.page >= pages;
    document.getElementById("inbox").dataset.page = String(reply.body.page);
    document.getElementById("inbox").dataset.loaded = "1";
  }

  function setUpNewCase() {
    var reports = me.roles.indexOf("inspector") >= 0, records = me.roles.indexOf("operator") >= 0;
    if (!reports && !records) { return; }
    var section = document.getElementById("new-case"), f = document.getElementById("case-form");
    section.hidden = false;
    document.getElementById("new-case-title").textContent = records ? T("cases.record_a_complaint_operator") : T("cases.report_a_problem_inspector");
    Object.keys(forms.sources).forEach(function (s) {
      if (forms.sources[s] !== (records ? "case.record" : "case.report")) { return; }
      var o = el("option", SOURCE_NAMES[s] || s); o.value = s; f.source.appendChild(o);
    });
    forms.event_classes.forEach(function (c) {
      var o = el("option", c.major + "/" + c.minor + " " + c.major_name + " · " + c.name);
      o.value = c.major + "/" + c.minor; f.event_class.appendChild(o);
    });
    if (!records) { document.getElementById("contact-row").hidden = true; }
    if (forms.attach) { f.querySelector(".photos").hidden = false; }
    f.kind.addEventListener("change", function () {
      var event = f.kind.value === "event";
      f.querySelectorAll(".for-event").forEach(function (n) { n.hidden = !event; });
      f.querySelectorAll(".for-component").forEach(function (n) { n.hidden = event; });
    });
    f.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var out = document.getElementById("case-result");
      var params = { source: f.source.value, kind: f.kind.value, description: f.description.value.trim() };
      if (params.kind === "event") {
        var cls = f.event_class.value.split("/");
        params.major = cls[0]; params.minor = cls[1];
        var where = f.place.value.trim(), kind = f.querySelector('input[name="place_kind"]:checked').value;
        params.place = {}; params.place[kind] = where;
      } else {
        params.component = f.component.value.trim();
      }
      var priv = null;  // the caller's contact: signed as a salted digest, sent beside it
      if (records && f.contact.value.trim()) {
        var salt = cgcrypto.hex(crypto.getRandomValues(new Uint8Array(16)));
        priv = { contact: f.contact.value.trim(), salt: salt };
        params.contact_digest = cgcrypto.hex(await cgcrypto.sha256(cgcrypto.utf8(salt + "\n" + priv.contact)));
      }
      try {
        if (forms.attach && f.photos.files.length) { params.attachments = await cgattach.upload(f.photos.files); }
        var reply = await cgcrypto.signAndPost(records ? "/cases/record" : "/cases/report",
                                               records ? "case.record" : "case.report", "cases", params,
                                               priv ? { private: priv } : null);
        if (reply.status === 201) {
          out.textContent = T("cases.recorded_case") + reply.body.number;
          location.href = "/inbox/" + encodeURIComponent(reply.body.number);
        } else {
          out.textContent = cgRefusal(reply);
        }
      } catch (e) {
        out.textContent = T("common.failed") + e.message;
      }
    });
  }

  /* ---------------------------------------------------------------- case page */

  function showFields(c) {
    var dl = document.getElementById("fields");
    dl.textContent = "";
    function row(term, value, cls) {
      dl.appendChild(el("dt", term));
      var dd = el("dd", value, cls);
      dl.appendChild(dd);
      return dd;
    }
    row(T("common.state"), N("state", c.state, c.state_name), "state").id = "state";
    document.getElementById("state").dataset.state = c.state;
    row(T("common.class"), (c.kind === "event" ? T("cases.event") : T("cases.component")) + c["class"].major + "/" + c["class"].minor + " " + (c["class"].name || ""));
    if (c.component) { row(T("common.component_code"), c.component); }
    row(T("common.source"), SOURCE_NAMES[c.source] || c.source);
    row(T("common.description"), c.description);
    if (c.address) { row(T("common.address"), c.address); }
    row(T("common.unit_grid"), c.grid);
    row(T("common.communities"), c.community.name + T("common.open_paren") + c.community.code + T("common.close_paren"));
    row(T("common.streets"), c.street.name + T("common.open_paren") + c.street.code + T("common.close_paren"));
    if (c.bureau) {
      row(T("cases.bureau"), c.bureau_name ? c.bureau_name + T("common.open_paren") + c.bureau + T("common.close_paren") : c.bureau);
    }
    if (c.contact) { row(T("common.contact"), c.contact); }
    row(T("cases.recorded_by"), c.reporter);
    row(T("cases.recorded_at"), when(c.created_at));
    row(T("common.stage_deadline"), when(c.deadline), c.overdue ? "overdue" : "");
    row(T("common.remaining"), remaining(c), c.overdue ? "overdue" : "");
    if (c.rework_count) { row(T("cases.reworked"), c.rework_count); }
    if (c.postpone_pending) { row(T("cases.postponement_request"), T("cases.awaiting_approval")); }
    if (c.closed_at) { row(T("cases.closed_at"), when(c.closed_at)); }
  }

  /* The case's place: its tile and those around it, moved so that the case is at the
     centre whichever corner of its tile it is in. Only neighbours in the range the account's
     descriptor gives are asked for (another would be a refusal in the audit log); the rest
     stay blank. Without the case's own tile the box is hidden. */
  function showPlace(c) {
    var p = c.pixel, mosaic = document.getElementById("mosaic");
    mosaic.textContent = "";
    mosaic.style.left = (128 - 256 - p.col) + "px";
    mosaic.style.top = (128 - 256 - p.row) + "px";
    var cells = [];
    for (var dy = -1; dy <= 1; dy++) {
      for (var dx = -1; dx <= 1; dx++) {
        var img = document.createElement("img");
        img.alt = "";
        img.className = "missing";
        mosaic.appendChild(img);
        cells.push({ img: img, x: p.x + dx, y: p.y + dy });
      }
    }
    function load(cell) {
      cell.img.addEventListener("load", function () { cell.img.classList.remove("missing"); });
      cell.img.src = "/tiles/topo500/" + p.level + "/" + cell.x + "/" + cell.y + ".png";
    }
    var centre = cells[4];
    centre.img.id = "minimap-tile";
    centre.img.addEventListener("error", function () { document.getElementById("minimap").hidden = true; });
    load(centre);
    window.cgDescriptors(["topo500"]).then(function (found) {
      var level = found[0] && found[0].levels.filter(function (l) { return l.level === p.level; })[0];
      if (!level) { return; }
      var t = level.tiles;
      cells.forEach(function (cell) {
        if (cell !== centre && cell.x >= t.x_min && cell.x <= t.x_max && cell.y >= t.y_min && cell.y <= t.y_max) {
          load(cell);
        }
      });
    }, function () { /* the neighbours stay blank: the case's own tile is shown */ });
    document.getElementById("map-link").href =
      "/#level=" + p.level + "&x=" + p.x + "&y=" + p.y + "&col=" + p.col + "&row=" + p.row;
  }

  function fieldInput(t, name) {
    var label = el("label", fieldName(name, t.name) + " "), input;
    var choices = t.choices[name];
    if (choices) {
      input = el("select");
      choices.forEach(function (v) { var o = el("option", CHOICE_NAMES[v] || v); o.value = v; input.appendChild(o); });
    } else if (name === "bureau") {
      input = el("select");
      forms.bureaus.forEach(function (b) { var o = el("option", b.name + T("common.open_paren") + b.code + T("common.close_paren")); o.value = b.code; input.appendChild(o); });
    } else if (name === "working_hours") {
      input = el("input"); input.type = "number"; input.min = "1"; input.max = "2000"; input.required = true;
    } else {
      input = el("input"); input.maxLength = 2000; input.required = true; input.size = 40;
    }
    input.name = name;
    label.appendChild(input);
    return label;
  }

  function showActions(c, reload) {
    var box = document.getElementById("actions");
    box.textContent = "";
    if (!c.allowed.length) { box.appendChild(el("p", T("cases.nothing_for_you_to_do_on"), "hint")); return; }
    c.allowed.forEach(function (name) {
      var t = forms.transitions.filter(function (x) { return x.name === name; })[0];
      var f = el("form", null, "action");
      f.dataset.transition = name;
      f.appendChild(el("strong", N("transition", t.name, t.title)));
      t.needs.forEach(function (n) { f.appendChild(fieldInput(t, n)); });
      if (forms.attach && (name === "handle" || name === "verify" || name.indexOf("check_") === 0)) {
        f.appendChild(cgattach.input());
      }
      var button = el("button", T("common.sign_and_submit"));
      button.type = "submit";
      f.appendChild(button);
      f.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        var out = document.getElementById("action-result");
        var params = { from: c.state };
        t.needs.forEach(function (n) {
          var v = f.elements[n].value.trim();
          params[n] = n === "working_hours" ? parseInt(v, 10) : v;
        });
        button.disabled = true;
        try {
          if (f.elements.photos && f.elements.photos.files.length) {
            params.attachments = await cgattach.upload(f.elements.photos.files);
          }
          var reply = await cgcrypto.signAndPost("/cases/" + encodeURIComponent(c.number) + "/" + name,
                                                 "case." + name, "case " + c.number, params);
          out.textContent = reply.status === 200
            ? T("cases.done") + N("transition", t.name, t.title) + T("cases.the_case_is_now") + N("state", reply.body.state, reply.body.state_name) + T("cases.close_quote")
            : cgRefusal(reply);
          out.className = reply.status === 200 ? "status good" : "status bad";
        } catch (e) {
          out.textContent = T("common.failed") + e.message; out.className = "status bad";
        }
        await reload();
      });
      box.appendChild(f);
    });
  }

  /* What a step signed, for people: `from` shows as the state change, photos below; the
     caller's contact of a complaint is for operators only (the case shows it to them), and
     its salted digest says nothing to a person (the signature's check covers it), nor does
     a device's GPS fix, signed as a salted digest too: it reads as a device fix. A bureau
     is named. A device's own time of the act (it may send it much later, over a bad link)
     shows as the time on site, unless it reads the same as the step's. */
  function paramText(params, step, c) {
    var hidden = ["from", "attachments", "contact", "contact_digest", "kind", "major", "minor", "client_time"];
    var shown = Object.keys(params || {}).filter(function (k) { return hidden.indexOf(k) < 0; }).map(function (k) {
      var v = params[k];
      if (k === "place" && v && typeof v === "object") { v = placeText(v); }
      else if (k === "bureau") { v = bureauName(v, c); }
      if (typeof v === "object") { v = JSON.stringify(v); }
      if (k === "source") { v = SOURCE_NAMES[v] || v; }
      return fieldName(k, step.transition) + T("common.colon") + (CHOICE_NAMES[v] || v);
    });
    var onSite = typeof params.client_time === "string" ? when(params.client_time) : null;
    if (onSite && onSite !== when(step.at)) { shown.push(T("cases.on_site_at") + T("common.colon") + onSite); }
    return shown.join(T("common.semicolon"));
  }
  function placeText(place) {
    return Object.keys(place).map(function (kind) {
      if (kind === "gps") { return T("cases.device_fix"); }
      if (kind === "pixel") { return T("cases.picked_on_the_map"); }
      return typeof place[kind] === "object" ? kind : place[kind];
    }).join(" ");
  }
  /* A bureau's name (and code): the case names every bureau it and its steps name
     (bureau_names, one since retired too), else from the bureaus the forms offer. */
  function bureauName(code, c) {
    var named = (forms.bureaus || []).filter(function (b) { return b.code === code; })[0];
    var known = c && c.bureau_names ? c.bureau_names[code] : undefined;
    var name = known || (named ? named.name : (c && c.bureau === code ? c.bureau_name : null));
    return name ? name + T("common.open_paren") + code + T("common.close_paren") : code;
  }

  /* The case's messages with the city–district peer: what this platform sent (and whether
     the peer acknowledged it) and what it received, each received one's signer checked here
     as the inbox checked it (exchangecheck.js), and each message's files shown once their
     bytes hash to what it lists. Hidden when there are none. */
  async function showExchange(c) {
    var box = document.getElementById("exchange-box");
    if (!box) { return; }
    var reply = await getJSON("/cases/" + encodeURIComponent(c.number) + "/exchange");
    if (current !== c) { return; }
    var body = document.querySelector("#exchange tbody");
    body.textContent = "";
    var listed = reply.status === 200 ? reply.body : { sent: [], received: [] };
    var rows = listed.sent.map(function (m) { return { m: m, at: m.created_at, sent: true }; })
      .concat(listed.received.map(function (m) { return { m: m, at: m.received_at, sent: false }; }))
      .sort(function (a, b) { return a.at < b.at ? -1 : a.at > b.at ? 1 : 0; });
    box.hidden = !rows.length;
    for (var i = 0; i < rows.length; i++) {
      var m = rows[i].m, content = m.content || {}, tr = el("tr");
      tr.dataset.source = m.source_id;
      tr.appendChild(el("td", when(rows[i].at)));
      tr.appendChild(el("td", rows[i].sent ? T("case.sent_to_the_peer") : T("case.received_from_the_peer")));
      tr.appendChild(el("td", exchangeKind(m)));
      var text = el("td", exchangeText(m)), state = el("td");
      tr.appendChild(text);
      tr.appendChild(state);
      body.appendChild(tr);
      var vouched = [];
      if (rows[i].sent) {
        state.textContent = m.acked_at ? T("exchange.acknowledged_by_the_peer") + when(m.acked_at)
          : m.last_error ? T("exchange.to_be_resent") + m.last_error : T("exchange.waiting_to_be_sent");
        vouched = (content.attachments || []).map(function (a) { return a.sha256; });
      } else {
        state.textContent = T("common.verifying");
        state.className = "sig";
        var result;
        try { result = await cgexchange.checkReceived(m, listed.me, peerCa, peerLogKey); }
        catch (e) { result = { ok: false, reason: String(e.message || e) }; }
        if (current !== c) { return; }
        state.textContent = result.ok ? "✓ " + result.account : "✗ " + result.reason;
        state.className = result.ok ? "sig verified" : "sig bad";
        if (result.ok) { vouched = (content.attachments || []).map(function (a) { return a.sha256; }); }
      }
      var files = Array.isArray(content.attachments) ? content.attachments : [];
      for (var k = 0; k < files.length && vouched.length; k++) {
        await cgattach.show("/cases/" + encodeURIComponent(c.number) + "/exchange/" + encodeURIComponent(m.source_id) +
                            "/files/" + files[k].sha256, files[k], vouched, text, "case-" + c.number);
        if (current !== c) { return; }
      }
    }
  }
  function exchangeKind(m) {
    var names = { "case.forward": T("exchange.forwarded_case"), "case.result": T("common.handling_result"),
                  "exchange.withdrawn": T("exchange.withdrawn_message") };
    return names[m.kind] || m.kind;
  }
  function exchangeText(m) {
    var c = m.content || {};
    if (m.kind === "case.result") { return (c.outcome === "refused" ? T("case.peer_refused") : "") + (c.result || ""); }
    if (m.kind === "case.forward") { return c.note || (c["case"] || {}).description || ""; }
    if (m.kind === "exchange.withdrawn") { return c.reason || ""; }
    return "";
  }

  /* Reminders and orders of the street office; an order's escalation is computed by the
     server from its due time (no signed step of its own). */
  function showSupervision(c) {
    var items = c.supervision || [];
    document.getElementById("supervision-box").hidden = !items.length;
    var body = document.querySelector("#supervision tbody");
    body.textContent = "";
    items.forEach(function (s) {
      var tr = el("tr");
      tr.dataset.kind = s.kind;
      tr.dataset.standing = s.standing;
      tr.appendChild(el("td", when(s.at)));
      tr.appendChild(el("td", s.actor));
      tr.appendChild(el("td", s.kind === "order" ? T("cases.order_2") : T("cases.reminder")));
      tr.appendChild(el("td", s.message));
      tr.appendChild(el("td", s.due_at ? when(s.due_at) : "—"));
      tr.appendChild(el("td", STANDING[s.standing] || s.standing,
                        s.escalated ? "escalated" : (s.standing === "answered" ? "answered" : "")));
      tr.appendChild(el("td", s.answer ? s.answer + T("common.open_paren") + when(s.answered_at) + T("common.close_paren")
                              : (s.ended_at ? titleOf(s.ended_by) + T("common.open_paren") + when(s.ended_at) + T("common.close_paren") : "—")));
      body.appendChild(tr);
    });
  }

  function showEscalations(c) {
    var body = document.querySelector("#history tbody");
    (c.supervision || []).filter(function (s) { return s.escalated; }).forEach(function (s) {
      var tr = el("tr", null, "system");
      tr.dataset.transition = "escalate";
      tr.appendChild(el("td", "—"));
      tr.appendChild(el("td", when(s.escalated_at)));
      tr.appendChild(el("td", T("cases.system")));
      tr.appendChild(el("td", T("cases.order_overdue_escalated_to_the_command")));
      tr.appendChild(el("td", "—"));
      tr.appendChild(el("td", T("cases.order_3") + when(s.at) + T("cases.not_answered_in_time")));
      tr.appendChild(el("td", T("cases.by_the_time_limits_no_signature"), "sig"));
      body.appendChild(tr);
    });
  }

  /* A case the city platform forwarded: the act that made the message (its last signed
     action) was signed by a person at the city, under the city's CA, forwarding this case's
     text. The city's log and its proof are checked offline (`citygrid verify-action`). */
  async function checkForwarded(said, c) {
    var b = said.bundle, acts = b && b.actions;
    if (!peerCa) { return { ok: false, reason: T("cases.city_ca_not_configured") }; }
    if (!b || b.source_id !== said.source_id || b.kind !== "case.forward" || !acts || !acts.length ||
        !b.content || !b.content.case || b.content.case.description !== c.description) {
      return { ok: false, reason: T("cases.city_message_does_not_match") };
    }
    var last = acts[acts.length - 1];
    var result = await certcheck.checkBundle(peerCa, {
      format: "citygrid-signed-action/2", payload: last.payload, signature: last.signature,
      certificate: last.certificate, crls: last.crl ? [last.crl] : []
    }, { action: "exchange.forward", resource: "exchange cases", parameters: { description: c.description } });
    if (result.ok) { result.city = true; }
    return result;
  }

  /* A signed step's place in this platform's log: its entry, naming the step's signature,
     under a checkpoint signed by the log key (logcheck.js). The entry's time; "pending"
     while the server has no complete evidence yet (a step of the last seconds); null when
     the evidence does not show it. */
  async function loggedAt(b) {
    if (b.log === null && typeof b.pending === "string") { return "pending"; }
    var entry = await logcheck.entryOf(b.log, logKey);
    if (!entry || entry.outcome !== "ok" || !entry.detail || typeof b.signature !== "string") { return null; }
    var signature = cgcrypto.hex(await cgcrypto.sha256(cgcrypto.b64decode(b.signature)));
    return entry.detail.signature_sha256 === signature ? String(entry.at) : null;
  }

  async function showHistory(c) {
    var url = "/cases/" + encodeURIComponent(c.number) + "/bundle";
    var link = document.getElementById("bundle-link");
    if (link) {  // the same bundle as a file: each download is an export, audited as one
      link.href = url;
      link.download = "case-" + c.number + ".json";
      link.hidden = false;
    }
    var bundle = await getJSON(url);
    if (current !== c) { return; }  // a later load shows its own history
    var body = document.querySelector("#history tbody"), chain = document.getElementById("chain-status");
    body.textContent = "";
    var events = bundle.status === 200 ? bundle.body.events : [];
    var good = 0, previous = null, partner = false;
    for (var i = 0; i < c.history.length; i++) {
      var h = c.history[i], e = events[i], tr = el("tr");
      tr.dataset.transition = h.transition;
      tr.appendChild(el("td", h.version));
      tr.appendChild(el("td", when(h.at)));
      tr.appendChild(el("td", h.actor));
      tr.appendChild(el("td", titleOf(h.transition)));
      tr.appendChild(el("td", stateName(h.from) + " → " + stateName(h.to)));
      var shown = el("td"), mark = el("td", T("common.verifying"), "sig");
      tr.appendChild(shown);
      tr.appendChild(mark);
      body.appendChild(tr);
      var result;
      if (!e || e.transition !== h.transition || e.version !== h.version || e.actor !== h.actor) {
        result = { ok: false, reason: T("cases.signed_record_does_not_match_the") };
      } else if (previous && e.from !== previous.to) {
        result = { ok: false, reason: T("cases.state_chain_broken") };
      } else if (i === 0 && h.transition === "create" && !e.bundle && e.open311) {
        result = { ok: false, partner: true, sha256: String(e.open311.request_sha256 || "") };
      } else if (i === 0 && h.transition === "create" && !e.bundle && e.exchange) {
        result = await checkForwarded(e.exchange, c);
      } else {
        var create = h.transition === "create";
        result = await certcheck.checkBundle(ca, e.bundle, {
          action: create ? (c.source === "inspector" ? "case.report" : "case.record") : "case." + h.transition,
          resource: create ? "cases" : "case " + c.number,
          parameters: create ? {} : { from: h.from }
        });
        if (result.ok && result.account !== h.actor) { result = { ok: false, reason: T("cases.signer_is_not_the_actor") }; }
        if (result.ok && logKey) {
          var at = await loggedAt(e.bundle);
          if (at === null) { result = { ok: false, reason: T("cases.not_in_the_log") }; } else { result.loggedAt = at; }
        }
      }
      previous = e;
      tr.dataset.logged = result.loggedAt || "";
      if (result.partner) {
        partner = true;
        mark.textContent = T("cases.partner_request_unsigned");
        mark.className = "sig partner";
        mark.title = T("cases.request_sha256") + result.sha256;
      } else if (result.ok) {
        good++;
        shown.textContent = paramText(result.payload.parameters, h, c);
        mark.textContent = result.city ? T("cases.signed_at_the_city") + result.account : T("cases.verified");
        mark.className = "sig verified";
        mark.title = T("cases.signed_at") + result.payload.time +
          (result.loggedAt === "pending" ? T("common.comma") + T("cases.log_pending")
            : result.loggedAt ? T("common.comma") + T("cases.logged_at") + result.loggedAt : "");
      } else {
        mark.textContent = "✗ " + result.reason;
        mark.className = "sig bad";
      }
      if (current !== c) { return; }
      var signedHashes = result.ok ? (result.payload.parameters.attachments || []) : [];
      for (var k = 0; k < (h.attachments || []).length; k++) {
        await cgattach.show("/cases/" + encodeURIComponent(c.number) + "/attachments/" + h.attachments[k].sha256,
                            h.attachments[k], signedHashes, shown, "case-" + c.number);
      }
    }
    if (current !== c) { return; }
    var counted = good + (partner ? 1 : 0);
    var all = counted === c.history.length && events.length === c.history.length;
    chain.textContent = all ? T("cases.all") + good + T("cases.signatures_verified_state_chain_complete") +
                              (partner ? T("cases.first_step_partner_request") : "")
                            : "✗ " + (c.history.length - counted) + T("cases.steps_signatures_failed_verification");
    chain.className = all ? "status good" : "status bad";
    document.getElementById("history").dataset.verified = String(good);
    await showHead(bundle.status === 200 ? bundle.body.head : null, c);
    showEscalations(c);
  }

  /* The bundle's head: an export's entry in this platform's log stating the case's version
     and state (mapserver.cases.reading.head). Shown here to be in the log signed by the
     platform's log key, it says the history holds every step there was when the log took
     that export in. This page's own request for the bundle is such an export: the first
     visit after a step finds none yet, so the page asks again a few times, further apart
     each time, until the log has signed a checkpoint over it (every few seconds). Each
     asking is an export, audited as one. */
  var HEAD_RETRIES_MS = [2000, 4000, 8000, 16000];
  var headRetry = null;
  /* The case this page shows: set by loadCase once read, cleared while it reads. A head
     checked for an earlier load, or found after the page moved on, is dropped, not shown. */
  var current = null;

  async function showHead(head, c, tries) {
    var box = document.getElementById("head-status"), last = c.history[c.history.length - 1];
    tries = tries || 0;
    if (current !== c) { return; }
    box.className = "status";
    delete box.dataset.verified;  // a verdict on an earlier version of the case is no verdict on this one
    if (!head) { box.textContent = ""; return; }
    if (head.pending) {
      if (tries < HEAD_RETRIES_MS.length) {
        box.textContent = T("cases.head_pending");
        headRetry = setTimeout(function () { recheckHead(c, tries + 1); }, HEAD_RETRIES_MS[tries]);
      } else {
        box.textContent = T("cases.head_pending_reload");
      }
      return;
    }
    if (!logKey) { box.textContent = T("cases.log_key_not_configured"); box.className = "status bad"; return; }
    var entry = await logcheck.entryOf(head.log, logKey);
    if (current !== c) { return; }
    var stated = entry && entry.detail && entry.detail.case_head;
    var ok = !!stated && entry.outcome === "ok" && entry.resource === "case " + c.number + " bundle" &&
      stated["case"] === c.number && stated.version === c.history.length && !!last && stated.state === last.to;
    box.textContent = ok ? T("cases.head_verified") + stated.version + T("cases.head_verified_at") + when(entry.at)
                         : T("cases.head_not_verified");
    box.className = ok ? "status good" : "status bad";
    box.dataset.verified = String(ok);
  }

  async function recheckHead(c, tries) {
    headRetry = null;
    if (current !== c) { return; }  // the page moved on
    var bundle = await getJSON("/cases/" + encodeURIComponent(c.number) + "/bundle");
    if (bundle.status !== 200 || current !== c || bundle.body.events.length !== c.history.length) {
      return;  // the case moved on: a reload shows it
    }
    await showHead(bundle.body.head, c, tries);
  }

  var caseLoads = 0;  // an earlier load's answer, come after a later one's, is dropped

  async function loadCase(number) {
    if (headRetry !== null) { clearTimeout(headRetry); headRetry = null; }
    current = null;
    var mine = ++caseLoads;
    var reply = await getJSON("/cases/" + encodeURIComponent(number));
    if (mine !== caseLoads) { return; }
    var error = document.getElementById("case-error");
    var shown = document.querySelectorAll("main.page > :not(#case-error)");
    if (reply.status !== 200) {
      error.hidden = false;
      error.textContent = reply.status === 404 ? T("cases.no_such_case_or_you_may") : T("cases.cannot_read_the_cases") + reply.status;
      // Nothing of a case one may no longer see stays on the page (a bureau's own return).
      if (reply.status === 404) { shown.forEach(function (n) { n.style.display = "none"; }); }
      return;
    }
    error.hidden = true;
    var c = reply.body;
    current = c;
    document.getElementById("number").textContent = c.number;
    showFields(c);
    showPlace(c);
    showSupervision(c);
    var ready = await refreshSigner();
    if (current !== c) { return; }  // a later load took over
    showActions(c, function () { return loadCase(number); });
    if (!ready) {
      document.querySelectorAll("#actions button").forEach(function (b) { b.disabled = true; });
    }
    await showHistory(c);
    if (current === c) { document.body.dataset.version = String(c.version); }
    await showExchange(c);
    if (current === c) { document.body.dataset.exchange = String(c.version); }
  }

  document.addEventListener("DOMContentLoaded", async function () {
    me = (await getJSON("/auth/whoami")).body;
    document.getElementById("who").textContent = me.account + T("common.open_paren") + me.roles.map(function (r) { return N("role", r); }).join(T("common.list_comma")) + T("common.close_paren");
    forms = (await getJSON("/cases/forms")).body;
    ca = await certcheck.authority(document.querySelector('meta[name="citygrid-ca"]').content);
    var peerPem = document.querySelector('meta[name="citygrid-peer-ca"]');
    if (peerPem && peerPem.content.trim()) { peerCa = await certcheck.authority(peerPem.content); }
    var logPem = document.querySelector('meta[name="citygrid-log-key"]');
    logKey = logPem ? logcheck.rawKey(logPem.content) : null;
    var peerLogPem = document.querySelector('meta[name="citygrid-peer-log-key"]');
    peerLogKey = peerLogPem && peerLogPem.content.trim() ? logcheck.rawKey(peerLogPem.content) : null;
    if (document.body.dataset.page === "inbox") {
      wireEnrolment();
      await refreshSigner();
      setUpNewCase();
      ["scope", "overdue-only", "escalated-only"].forEach(function (id) {
        document.getElementById(id).addEventListener("change", function () { loadList(1); });
      });
      document.getElementById("inbox-prev").addEventListener("click", function () { loadList(listPage - 1); });
      document.getElementById("inbox-next").addEventListener("click", function () { loadList(listPage + 1); });
      await loadList();
    } else {
      document.getElementById("ca-thumb").textContent = ca.thumbprint;
      var number = decodeURIComponent(location.pathname.split("/").pop());
      wireEnrolment(function () { return loadCase(number); });
      await loadCase(number);
    }
  });
}());
