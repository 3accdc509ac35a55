/* The command centre's side of the city–district exchange: what was sent (and whether the
   peer acknowledged it) and received, forwarding a case, answering a forwarded case; every
   act signed with the enrolled non-extractable WebCrypto key. */
(function () {
  "use strict";
  var me = null, state = null;
  var KIND_NAMES = { "case.forward": "转办案件", "case.result": "处置结果", "component.update": "部件更新" };

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
  function when(iso) { return iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "—"; }

  async function refreshSigner() {
    var signer = await cgcrypto.loadSigner();
    var ready = !!(signer && signer.account === me.account);
    $("signer-status").textContent = ready ? "已登记签名密钥（" + signer.account + "）" : "尚未登记签名密钥";
    $("enrol-box").hidden = ready;
    $("signer").className = ready ? "signer ready" : "signer";
  }

  function describe(m) {
    var c = m.content || {};
    if (m.kind === "case.forward") {
      var k = c["case"] || {};
      return (k.number ? k.number + " " : "") + (k.description || "") + (k.grid ? "（网格 " + k.grid + "）" : "");
    }
    if (m.kind === "case.result") { return (c["case"] ? c["case"] + "：" : "") + c.result; }
    return (c.components || []).map(function (x) { return x.code + " " + x.state; }).join("，");
  }

  async function signed(url, action, resource, params, out) {
    try {
      var reply = await cgcrypto.signAndPost(url, action, resource, params);
      if (reply.status >= 300) { out.textContent = "未完成：" + (reply.body ? reply.body.message : reply.status); return null; }
      return reply.body;
    } catch (e) { out.textContent = "签名失败：" + e.message; return null; }
  }

  function answerCell(m) {
    var td = el("td");
    if (m.kind !== "case.forward") { return td; }
    if (m.answered_by) { td.textContent = "已答复（" + m.answered_by + "）"; return td; }
    var form = el("form", null, "answer");
    var input = el("input"); input.name = "result"; input.maxLength = 2000; input.required = true;
    input.placeholder = "处置结果";
    var button = el("button", "签名并答复"); button.type = "submit";
    var status = el("span");
    form.appendChild(input); form.appendChild(button); form.appendChild(status);
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var done = await signed("/exchange/messages/" + m.source_id + "/result", "exchange.result",
                              "exchange " + m.source_id, { result: input.value.trim(), outcome: "handled" }, status);
      if (done) { await load(); }
    });
    td.appendChild(form);
    return td;
  }

  async function load() {
    var reply = await getJSON("/exchange/messages");
    if (reply.status !== 200) { $("side").textContent = reply.body.message; return; }
    state = reply.body;
    $("side").textContent = state.me === "district" ? "本平台：区级平台（对端：市级平台）"
      : state.me === "city" ? "本平台：市级平台（对端：区级平台）" : "本平台未参加市区数据交换";
    $("forward-case").hidden = state.me !== "district";
    $("forward-new").hidden = state.me !== "city";
    var body = $("received").querySelector("tbody");
    body.textContent = "";
    state.received.forEach(function (m) {
      var tr = el("tr");
      tr.dataset.source = m.source_id;
      [m.source_id, KIND_NAMES[m.kind] || m.kind, describe(m), m.signer, when(m.received_at)].forEach(function (v) {
        tr.appendChild(el("td", v));
      });
      tr.appendChild(answerCell(m));
      body.appendChild(tr);
    });
    body = $("sent").querySelector("tbody");
    body.textContent = "";
    state.sent.forEach(function (m) {
      var tr = el("tr");
      tr.dataset.source = m.source_id;
      var status = m.acked_at ? "对端已确认 " + when(m.acked_at) : (m.last_error ? "待重发：" + m.last_error : "待发送");
      [m.source_id, KIND_NAMES[m.kind] || m.kind, m["case"] || "—", m.attempts, status].forEach(function (v) {
        tr.appendChild(el("td", v));
      });
      body.appendChild(tr);
    });
    document.body.dataset.loaded = String(Date.now());
  }

  function wire() {
    $("enrol").addEventListener("click", async function () {
      var code = $("enrol-code").value.trim();
      if (!code) { $("signer-status").textContent = "请先输入管理员提供的一次性登记码"; return; }
      try { await cgcrypto.enrol(me.account, code); $("enrol-code").value = ""; await refreshSigner(); }
      catch (e) { $("signer-status").textContent = "登记失败：" + e.message; }
    });
    $("forward-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, number = f.elements.number.value.trim();
      var done = await signed("/exchange/cases/" + number + "/forward", "case.dispatch", "case " + number,
                              { from: "filed", bureau: state.peer_org, note: f.elements.note.value.trim() }, $("forward-result"));
      if (done) { $("forward-result").textContent = "已转送（" + done.exchange.source_id + "）"; await load(); }
    });
    $("new-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var f = ev.target, cls = f.elements.cls.value.split("/");
      var done = await signed("/exchange/forward", "exchange.forward", "exchange cases",
                              { kind: "event", major: cls[0], minor: cls[1], grid: f.elements.grid.value.trim(),
                                description: f.elements.description.value.trim() }, $("new-result"));
      if (done) { $("new-result").textContent = "已转送（" + done.exchange.source_id + "）"; await load(); }
    });
  }

  document.addEventListener("DOMContentLoaded", async function () {
    me = (await getJSON("/auth/whoami")).body;
    $("who").textContent = me.account + "（" + me.roles.join("、") + "）";
    wire();
    await refreshSigner();
    await load();
    document.body.dataset.ready = "1";
  });
}());
