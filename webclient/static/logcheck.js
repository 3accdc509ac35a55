/* An audit entry shown to be in a pinned log, checked in the browser as `citygrid
   verify-action` checks it (audit.logged.verify): the entry's canonical bytes (RFC 8785)
   hashed as leaf `leaf_index`, its inclusion proof up to the root of the checkpoint, and the
   checkpoint signed by the pinned Ed25519 log key. The key comes from the page (the install's
   own, or the exchange peer's), never from the evidence. */
(function (global) {
  "use strict";
  var KEY_NAME = "citygrid-audit";
  var FIELDS = ["at", "request_id", "account", "role", "cert_serial", "cert_sha256", "client_addr",
                "method", "resource", "action", "outcome", "status", "bytes", "latency_ms", "detail"];
  var SPKI_ED25519 = "302a300506032b6570032100";  // the DER prefix of an Ed25519 public key

  /* The raw 32-byte key of an Ed25519 public key in PEM, or null. */
  function rawKey(pem) {
    var der;
    try { der = cgcrypto.b64decode(String(pem || "").replace(/-----[^-]+-----/g, "").replace(/\s+/g, "")); }
    catch (e) { return null; }
    if (der.length !== 44 || cgcrypto.hex(der.slice(0, 12)) !== SPKI_ED25519) { return null; }
    return der.slice(12);
  }

  function isIndex(n) { return typeof n === "number" && Number.isInteger(n) && n >= 0; }

  /* The entry `evidence` ({entry, leaf_index, tree_size, proof, checkpoint}) shows to be in
     the log of `key` (raw), or null. */
  async function entryOf(evidence, key) {
    if (!key || !evidence || typeof evidence !== "object") { return null; }
    var values = evidence.entry, index = evidence.leaf_index, size = evidence.tree_size;
    if (!values || typeof values !== "object" || Array.isArray(values) ||
        Object.keys(values).sort().join() !== FIELDS.slice().sort().join()) { return null; }
    if (!isIndex(index) || !isIndex(size) || index >= size || !Array.isArray(evidence.proof) ||
        typeof evidence.checkpoint !== "string") { return null; }
    try {
      var cp = await cgcrypto.verifyCheckpoint(evidence.checkpoint, KEY_NAME, key);
      if (!cp || cp.size !== size) { return null; }
      var proof = evidence.proof.map(function (p) { return cgcrypto.b64decode(String(p)); });
      var leaf = await cgcrypto.leafHash(cgcrypto.utf8(cgcrypto.canonical(values)));
      return await cgcrypto.verifyInclusion(leaf, index, size, proof, cp.root) ? values : null;
    } catch (e) {
      return null;  // a malformed note, proof or key: not shown to be in the log
    }
  }

  global.logcheck = { rawKey: rawKey, entryOf: entryOf, FIELDS: FIELDS, KEY_NAME: KEY_NAME };
}(window));
