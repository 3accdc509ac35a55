/* Security officers' review page: list and filter entries, check each entry's inclusion
   proof and the checkpoints' signatures and consistency here in the browser. Proofs are
   computed here from the log's tlog-tiles (tlogtiles.js), never taken from the server.
   The log's key is trusted only when its fingerprint matches the one the security office
   pinned here (localStorage, entered once from `citygrid audit key --fingerprint`), never
   because the server says so; the last checkpoint verified here is kept too, and every visit
   proves the newest one consistent with it. */
(function () {
  "use strict";
  var FIELDS = logcheck.FIELDS, KEY_NAME = logcheck.KEY_NAME;  // an entry, as the log hashes it
  var PIN = "citygrid.audit.pin";    // the log key's fingerprint, as the security office gave it
  var LAST = "citygrid.audit.last";  // {size, root} of the last checkpoint verified here
  var TILES = "/audit/";             // the log's tlog-tiles, read-only
  var publicKey = null;

  function bad(box, text) { box.textContent = text; box.className = "status bad"; }

  /* Whether a failure is the server's or the network's answer for now (rate limited, busy,
     unreachable), not a finding about the log: a check that could not run is said as such,
     never as a signature, proof or consistency that failed, and is tried again later.
     tlogtiles.js names a tile's HTTP status at the end of its message ("tile …: 429"). */
  function unavailable(error) {
    return (error instanceof TypeError && /fetch/i.test(error.message)) || error instanceof Unavailable ||
      /: (429|5\d\d)$/.test(String(error && error.message));
  }

  function Unavailable(message) { this.message = message; }
  Unavailable.prototype = Object.create(Error.prototype);

  function notNow(status) { return status === 429 || status >= 500; }

  /* A check that could not run, in words: the server's status (429, 503…) where it
     answered, neither good nor bad. */
  function notNowText(error) {
    var m = /(\d{3})$/.exec(String(error && error.message));
    return T("review.could_not_check_now") + (m ? m[1] : "—") + T("review.try_again_shortly");
  }
  function couldNot(box, error) { box.textContent = notNowText(error); box.className = "status"; }

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
      return T("review.the_latest_checkpoint") + latest.size + T("review.entries_is_smaller_than_the_checkpoint") + last.size +
             T("review.entries_the_log_may_have_been");
    }
    var lastRoot = cgcrypto.b64decode(last.root);
    if (latest.size === last.size) {
      return cgcrypto.b64encode(latest.root) === last.root ? null
        : T("review.the_checkpoint_this_browser_last_verified") + last.size + T("review.entries_has_a_different_root_hash");
    }
    var proof;
    try {
      proof = await tlogtiles.consistencyProof(TILES, last.size, latest.size);
    } catch (e) {
      if (unavailable(e)) { throw e; }  // not judged: the last verified checkpoint stays
      return T("review.cannot_prove_consistency_with_the_checkpoint") + last.size + T("review.entries_log_tiles_missing");
    }
    var ok = await cgcrypto.verifyConsistency(last.size, latest.size, lastRoot, latest.root, proof);
    return ok ? null : T("review.the_checkpoint_this_browser_last_verified") + last.size + T("review.entries_is_inconsistent_the_log_was");
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (notNow(r.status)) { throw new Unavailable(url + ": " + r.status); }
      return r.json();
    });
  }

  async function integrity() {
    var box = document.getElementById("integrity");
    var cps = (await getJSON("/audit/checkpoints")).checkpoints;
    if (!cps.length) { box.textContent = T("review.no_checkpoint_yet"); return; }
    var latest = await cgcrypto.verifyCheckpoint(cps[0].note, KEY_NAME, publicKey);
    if (!latest) { box.textContent = T("review.the_latest_checkpoints_signature_is_invalid"); box.className = "status bad"; return; }
    var since = await sinceLastVisit(latest);
    if (since) { bad(box, since); return; }
    localStorage.setItem(LAST, JSON.stringify({ size: latest.size, root: cgcrypto.b64encode(latest.root) }));
    var text = T("review.the_latest_checkpoint_2") + latest.size + T("review.entries_has_a_valid_signature");
    var unsure = null;  // the consistency with the previous checkpoint could not be checked now
    if (cps.length > 1) {
      var prev = await cgcrypto.verifyCheckpoint(cps[1].note, KEY_NAME, publicKey), ok = false;
      try {
        ok = prev && await cgcrypto.verifyConsistency(
          prev.size, latest.size, prev.root, latest.root,
          await tlogtiles.consistencyProof(TILES, prev.size, latest.size));
      } catch (e) { ok = false; unsure = unavailable(e) ? e : null; }
      if (unsure) {
        text += T("common.semicolon") + notNowText(unsure);
      } else {
        text += ok ? T("review.consistent_with_the_previous_checkpoint") + prev.size + T("review.entries") : T("review.inconsistent_with_the_previous_checkpoint");
        if (!ok) { box.className = "status bad"; }
      }
    }
    box.textContent = text;
    if (box.className !== "status bad") { box.className = unsure ? "status" : "status good"; }
  }

  /* The entry shown in the detail box: a proof still being checked for another entry the
     officer clicked before is dropped when it ends. */
  var detailShown = null;

  async function showDetail(entry) {
    detailShown = entry;
    document.getElementById("detail").hidden = false;
    document.getElementById("detail-body").textContent = JSON.stringify(entry, null, 2);
    var status = document.getElementById("proof-status");
    function say(text, cls) {
      if (detailShown !== entry) { return false; }
      status.textContent = text; status.className = cls; return true;
    }
    say(T("common.verifying"), "status");
    var values = {};
    FIELDS.forEach(function (f) { values[f] = entry[f] === undefined ? null : entry[f]; });
    if (!publicKey) { say(T("review.the_logs_public_key_was_not"), "status bad"); return; }
    var leaf = await cgcrypto.leafHash(cgcrypto.utf8(cgcrypto.canonical(values)));
    if (cgcrypto.b64encode(leaf) !== entry.leaf_hash) {
      say(T("review.the_entrys_content_does_not_match"), "status bad"); return;
    }
    var cp = null, asked = "/audit/checkpoint", r = null;
    try {
      r = await fetch(asked, { credentials: "same-origin" });
      cp = r.status === 200 ? await cgcrypto.verifyCheckpoint(await r.text(), KEY_NAME, publicKey) : null;
    } catch (e) { cp = null; }
    if (!cp && (r === null || notNow(r.status))) {
      say(notNowText(new Unavailable(asked + ": " + (r === null ? "—" : r.status))), "status"); return;
    }
    if (!cp) { say(T("review.the_latest_checkpoints_signature_is_invalid_2"), "status bad"); return; }
    if (entry.leaf_index >= cp.size) {
      say(T("review.this_entry_is_not_yet_in") + cp.size + T("review.entries_try_again_later"), "status"); return;
    }
    var ok = false;
    try {
      var proof = await tlogtiles.inclusionProof(TILES, entry.leaf_index, cp.size);
      ok = await cgcrypto.verifyInclusion(leaf, entry.leaf_index, cp.size, proof, cp.root);
    } catch (e) {
      if (unavailable(e)) { say(notNowText(e), "status"); return; }
      ok = false;
    }
    say(ok ? T("review.verified_this_entry_is_in_the") + cp.size + T("review.entries_2") : T("review.invalid_inclusion_proof"),
        ok ? "status good verified" : "status bad");
  }

  /* The list pages back by leaf index: each page asks for one entry more than it shows, and
     "older" asks for the entries before the last one shown, under the same filters. A page
     asked for before the filters changed is dropped (`searches` counts them). */
  var searches = 0, filters = {};

  function pageSize() { return Number(document.getElementById("entries").dataset.page) || 100; }

  async function entriesPage(params, before) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) { if (params[k]) { q.set(k, params[k]); } });
    if (before !== null) { q.set("before", String(before)); }
    q.set("limit", String(pageSize() + 1));
    var r = await fetch("/audit/entries?" + q.toString(), { credentials: "same-origin" }), body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (r.status !== 200 || !body || !Array.isArray(body.entries)) {
      throw new Error(body && body.message ? body.message : String(r.status));
    }
    return body.entries;
  }

  function addEntries(found) {
    var body = document.querySelector("#entries tbody"), more = document.getElementById("entries-older");
    found.slice(0, pageSize()).forEach(function (e) {
      var tr = document.createElement("tr");
      tr.dataset.leaf = e.leaf_index;
      [e.leaf_index, e.at, e.account, e.action, e.outcome, e.resource].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v === null ? "" : String(v); tr.appendChild(td);
      });
      tr.addEventListener("click", function () { showDetail(e); });
      body.appendChild(tr);
    });
    more.hidden = found.length <= pageSize();
    more.dataset.before = more.hidden ? "" : String(found[pageSize() - 1].leaf_index);
  }

  async function load(params) {
    var mine = ++searches, status = document.getElementById("entries-status"), found;
    var more = document.getElementById("entries-older"), hidden = more.hidden;
    more.hidden = true;  // no older page of the list shown while another is asked for
    status.textContent = "";
    try { found = await entriesPage(params, null); }
    catch (e) {
      if (mine === searches) { status.textContent = T("common.failed") + e.message; more.hidden = hidden; }
      return;  // the list, its filters and its cursor stay as they were
    }
    if (mine !== searches) { return; }
    filters = params;
    document.querySelector("#entries tbody").textContent = "";
    addEntries(found);
    document.getElementById("entries").dataset.loaded = String(mine);
  }

  async function older() {
    var mine = searches, more = document.getElementById("entries-older"), found;
    var status = document.getElementById("entries-status");
    more.disabled = true;
    try { found = await entriesPage(filters, Number(more.dataset.before)); }
    catch (e) {
      if (mine === searches) { status.textContent = T("common.failed") + e.message; }
      return;
    } finally { more.disabled = false; }
    if (mine !== searches) { return; }
    addEntries(found);
  }

  document.addEventListener("DOMContentLoaded", async function () {
    // Pinning needs nothing from the server: it works from the first moment, and what the
    // officer typed meanwhile is kept.
    var pinned = localStorage.getItem(PIN);
    var input = document.getElementById("pin-fingerprint");
    if (!input.value) { input.value = pinned || ""; }
    document.getElementById("pin-save").addEventListener("click", function () {
      var value = normalFingerprint(input.value);
      if (!value) { document.getElementById("pin-status").textContent = T("review.a_fingerprint_is_64_hexadecimal_digits"); return; }
      if (value !== localStorage.getItem(PIN)) { localStorage.removeItem(LAST); }  // another log
      localStorage.setItem(PIN, value);
      location.reload();
    });
    var me = await getJSON("/auth/whoami");
    document.getElementById("who").textContent = me.account;
    var offered = cgcrypto.b64decode((await getJSON("/audit/key")).public_key);
    var box = document.getElementById("integrity");
    var offeredPrint = await fingerprint(offered);
    if (!pinned) {
      bad(box, T("review.no_log_public_key_fingerprint_pinned"));
    } else if (offeredPrint !== pinned) {
      bad(box, T("review.the_log_public_key_the_server") + offeredPrint + T("review.does_not_match_the_pinned_fingerprint"));
    } else {
      publicKey = offered;
    }
    document.getElementById("filters").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = ev.target;
      load({ account: f.account.value, action: f.action.value, outcome: f.outcome.value,
             from: f.from.value ? f.from.value + ":00Z" : "", to: f.to.value ? f.to.value + ":00Z" : "" });
    });
    document.getElementById("entries-older").addEventListener("click", older);
    if (publicKey) {
      try { await integrity(); } catch (e) {
        if (unavailable(e)) { couldNot(box, e); } else { bad(box, T("common.failed") + e.message); }
      }
    }
    await load({});
  });
}());
