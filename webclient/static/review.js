/* Security officers' review page: list and filter entries, check each entry's inclusion
   proof and the checkpoints' signatures and consistency here in the browser. Proofs are
   computed here from the log's tlog-tiles (tlogtiles.js), never taken from the server.
   The log's key is trusted only when its fingerprint matches the one the security office
   pinned here (localStorage, entered once from `citygrid audit key --fingerprint`), never
   because the server says so; the last checkpoint verified here is kept too, and every visit
   proves the newest one consistent with it. */
(function () {
  "use strict";
  var FIELDS = ["at", "request_id", "account", "role", "cert_serial", "cert_sha256", "client_addr",
                "method", "resource", "action", "outcome", "status", "bytes", "latency_ms", "detail"];
  var KEY_NAME = "citygrid-audit";
  var PIN = "citygrid.audit.pin";    // the log key's fingerprint, as the security office gave it
  var LAST = "citygrid.audit.last";  // {size, root} of the last checkpoint verified here
  var TILES = "/audit/";             // the log's tlog-tiles, read-only
  var publicKey = null;

  function bad(box, text) { box.textContent = text; box.className = "status bad"; }

  function normalFingerprint(text) {
    var digits = (text || "").replace(/[\s:]/g, "").toLowerCase();
    return /^[0-9a-f]{64}$/.test(digits) ? digits.match(/.{4}/g).join(" ") : null;
  }

  async function fingerprint(raw) {
    return cgcrypto.hex(await cgcrypto.sha256(raw)).match(/.{4}/g).join(" ");
  }

  /* The newest checkpoint against the last one this browser verified: never smaller, and
     provably an extension of it. Returns an error text or null. */
  async function sinceLastVisit(latest) {
    var last = null;
    try { last = JSON.parse(localStorage.getItem(LAST) || "null"); } catch (e) { last = null; }
    if (!last) { return null; }
    if (latest.size < last.size) {
      return "✗ 最新检查点（" + latest.size + " 条）小于本浏览器上次验证的检查点（" + last.size +
             " 条）：日志可能被截断或回滚";
    }
    var lastRoot = cgcrypto.b64decode(last.root);
    if (latest.size === last.size) {
      return cgcrypto.b64encode(latest.root) === last.root ? null
        : "✗ 与本浏览器上次验证的检查点（" + last.size + " 条）根哈希不同：日志被改写";
    }
    var proof;
    try {
      proof = await tlogtiles.consistencyProof(TILES, last.size, latest.size);
    } catch (e) {
      return "✗ 无法证明与本浏览器上次验证的检查点（" + last.size + " 条）一致：日志瓦片缺失";
    }
    var ok = await cgcrypto.verifyConsistency(last.size, latest.size, lastRoot, latest.root, proof);
    return ok ? null : "✗ 与本浏览器上次验证的检查点（" + last.size + " 条）不一致：日志被改写";
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); });
  }

  async function integrity() {
    var box = document.getElementById("integrity");
    var cps = (await getJSON("/audit/checkpoints")).checkpoints;
    if (!cps.length) { box.textContent = "尚无检查点"; return; }
    var latest = await cgcrypto.verifyCheckpoint(cps[0].note, KEY_NAME, publicKey);
    if (!latest) { box.textContent = "✗ 最新检查点签名无效"; box.className = "status bad"; return; }
    var since = await sinceLastVisit(latest);
    if (since) { bad(box, since); return; }
    localStorage.setItem(LAST, JSON.stringify({ size: latest.size, root: cgcrypto.b64encode(latest.root) }));
    var text = "✓ 最新检查点（" + latest.size + " 条）签名有效";
    if (cps.length > 1) {
      var prev = await cgcrypto.verifyCheckpoint(cps[1].note, KEY_NAME, publicKey), ok = false;
      try {
        ok = prev && await cgcrypto.verifyConsistency(
          prev.size, latest.size, prev.root, latest.root,
          await tlogtiles.consistencyProof(TILES, prev.size, latest.size));
      } catch (e) { ok = false; }
      text += ok ? "，与上一检查点（" + prev.size + " 条）一致" : "，✗ 与上一检查点不一致";
      if (!ok) { box.className = "status bad"; }
    }
    box.textContent = text;
    if (box.className !== "status bad") { box.className = "status good"; }
  }

  async function showDetail(entry) {
    document.getElementById("detail").hidden = false;
    document.getElementById("detail-body").textContent = JSON.stringify(entry, null, 2);
    var status = document.getElementById("proof-status");
    status.textContent = "正在验证…";
    var values = {};
    FIELDS.forEach(function (f) { values[f] = entry[f] === undefined ? null : entry[f]; });
    if (!publicKey) {
      status.textContent = "✗ 日志公钥未经固定的指纹确认，无法验证"; status.className = "status bad"; return;
    }
    var leaf = await cgcrypto.leafHash(cgcrypto.utf8(cgcrypto.canonical(values)));
    if (cgcrypto.b64encode(leaf) !== entry.leaf_hash) {
      status.textContent = "✗ 条目内容与其叶哈希不符"; status.className = "status bad"; return;
    }
    var r = await fetch("/audit/checkpoint", { credentials: "same-origin" });
    var cp = r.status === 200 ? await cgcrypto.verifyCheckpoint(await r.text(), KEY_NAME, publicKey) : null;
    if (!cp) { status.textContent = "✗ 最新检查点签名无效或缺失"; status.className = "status bad"; return; }
    if (entry.leaf_index >= cp.size) {
      status.textContent = "此条目尚未包含在已签名检查点（" + cp.size + " 条）中，稍后再试";
      status.className = "status"; return;
    }
    var ok = false;
    try {
      var proof = await tlogtiles.inclusionProof(TILES, entry.leaf_index, cp.size);
      ok = await cgcrypto.verifyInclusion(leaf, entry.leaf_index, cp.size, proof, cp.root);
    } catch (e) { ok = false; }
    status.textContent = ok ? "✓ 已验证：此条目包含在已签名检查点（" + cp.size + " 条）中"
                            : "✗ 包含证明无效";
    status.className = ok ? "status good verified" : "status bad";
  }

  async function load(params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) { if (params[k]) { q.set(k, params[k]); } });
    var data = await getJSON("/audit/entries?" + q.toString());
    var body = document.querySelector("#entries tbody");
    body.textContent = "";
    data.entries.forEach(function (e) {
      var tr = document.createElement("tr");
      tr.dataset.leaf = e.leaf_index;
      [e.leaf_index, e.at, e.account, e.action, e.outcome, e.resource].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v === null ? "" : String(v); tr.appendChild(td);
      });
      tr.addEventListener("click", function () { showDetail(e); });
      body.appendChild(tr);
    });
  }

  document.addEventListener("DOMContentLoaded", async function () {
    var me = await getJSON("/auth/whoami");
    document.getElementById("who").textContent = me.account;
    var offered = cgcrypto.b64decode((await getJSON("/audit/key")).public_key);
    var pinned = localStorage.getItem(PIN);
    var input = document.getElementById("pin-fingerprint");
    input.value = pinned || "";
    document.getElementById("pin-save").addEventListener("click", function () {
      var value = normalFingerprint(input.value);
      if (!value) { document.getElementById("pin-status").textContent = "指纹应为 64 位十六进制数"; return; }
      if (value !== localStorage.getItem(PIN)) { localStorage.removeItem(LAST); }  // another log
      localStorage.setItem(PIN, value);
      location.reload();
    });
    var box = document.getElementById("integrity");
    var offeredPrint = await fingerprint(offered);
    if (!pinned) {
      bad(box, "✗ 尚未固定日志公钥指纹：请输入安全办公室提供的指纹（citygrid audit key --fingerprint）");
    } else if (offeredPrint !== pinned) {
      bad(box, "✗ 服务器给出的日志公钥（指纹 " + offeredPrint + "）与固定的指纹不符：不能信任此服务器的检查点");
    } else {
      publicKey = offered;
    }
    document.getElementById("filters").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = ev.target;
      load({ account: f.account.value, action: f.action.value, outcome: f.outcome.value,
             from: f.from.value ? f.from.value + ":00Z" : "", to: f.to.value ? f.to.value + ":00Z" : "" });
    });
    if (publicKey) { await integrity(); }
    await load({});
  });
}());
