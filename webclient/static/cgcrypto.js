/* CityGrid's browser-side cryptography: base64, RFC 8785 canonical JSON, SHA-256,
   RFC 9162 Merkle proof verification, signed-note checkpoints (Ed25519), and the
   non-extractable ECDSA P-256 signing key kept in IndexedDB. */
(function (global) {
  "use strict";

  function b64encode(bytes) {
    var s = "";
    bytes = new Uint8Array(bytes);
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s);
  }
  function b64decode(text) {
    var s = atob(text), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  }
  function utf8(text) { return new TextEncoder().encode(text); }
  function hex(bytes) {
    return Array.prototype.map.call(new Uint8Array(bytes), function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }
  function concat() {
    var total = 0, parts = Array.prototype.slice.call(arguments);
    parts.forEach(function (p) { total += p.length; });
    var out = new Uint8Array(total), at = 0;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }
  function equal(a, b) {
    if (a.length !== b.length) { return false; }
    for (var i = 0; i < a.length; i++) { if (a[i] !== b[i]) { return false; } }
    return true;
  }

  /* RFC 8785: object keys sorted by UTF-16 code units, ECMAScript number and string forms. */
  function canonical(value) {
    if (value === null || typeof value !== "object") { return JSON.stringify(value); }
    if (Array.isArray(value)) { return "[" + value.map(canonical).join(",") + "]"; }
    return "{" + Object.keys(value).sort().map(function (k) {
      return JSON.stringify(k) + ":" + canonical(value[k]);
    }).join(",") + "}";
  }

  function sha256(bytes) {
    return crypto.subtle.digest("SHA-256", bytes).then(function (d) { return new Uint8Array(d); });
  }
  function nodeHash(l, r) { return sha256(concat(new Uint8Array([1]), l, r)); }
  function leafHash(entryBytes) { return sha256(concat(new Uint8Array([0]), entryBytes)); }

  /* RFC 9162 §2.1.3.2 */
  async function verifyInclusion(leaf, index, size, proof, root) {
    if (index >= size) { return false; }
    var fn = index, sn = size - 1, r = leaf;
    for (var i = 0; i < proof.length; i++) {
      if (sn === 0) { return false; }
      if ((fn & 1) || fn === sn) {
        r = await nodeHash(proof[i], r);
        while (!(fn & 1) && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        r = await nodeHash(r, proof[i]);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(r, root);
  }

  /* RFC 9162 §2.1.4.2 */
  async function verifyConsistency(size1, size2, root1, root2, proof) {
    if (size2 < size1 || size1 === 0) { return false; }
    if (size1 === size2) { return proof.length === 0 && equal(root1, root2); }
    if (!proof.length) { return false; }
    var path = proof.slice();
    if ((size1 & (size1 - 1)) === 0) { path.unshift(root1); }
    var fn = size1 - 1, sn = size2 - 1;
    while (fn & 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    var fr = path[0], sr = path[0];
    for (var i = 1; i < path.length; i++) {
      if (sn === 0) { return false; }
      if ((fn & 1) || fn === sn) {
        fr = await nodeHash(path[i], fr);
        sr = await nodeHash(path[i], sr);
        while (!(fn & 1) && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        sr = await nodeHash(sr, path[i]);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(fr, root1) && equal(sr, root2);
  }

  /* C2SP signed note: verify the signature of `name` with an Ed25519 raw public key. */
  async function verifyCheckpoint(note, name, publicRaw) {
    var split = note.indexOf("\n\n");
    if (split < 0) { return null; }
    var body = note.slice(0, split + 1), lines = body.split("\n");
    var key = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
    var id = (await sha256(concat(utf8(name), new Uint8Array([10, 1]), publicRaw))).slice(0, 4);
    var sigLines = note.slice(split + 2).split("\n");
    for (var i = 0; i < sigLines.length; i++) {
      var prefix = "\u2014 " + name + " ";
      if (sigLines[i].indexOf(prefix) !== 0) { continue; }
      var blob = b64decode(sigLines[i].slice(prefix.length));
      if (!equal(blob.slice(0, 4), id)) { continue; }
      var ok = await crypto.subtle.verify({ name: "Ed25519" }, key, blob.slice(4), utf8(body));
      if (ok) { return { size: parseInt(lines[1], 10), root: b64decode(lines[2]) }; }
    }
    return null;
  }

  /* The signing key: non-extractable, kept in IndexedDB with its certificate. */
  function store(mode, fn) {
    return new Promise(function (resolve, reject) {
      var open = indexedDB.open("citygrid-signing", 1);
      open.onupgradeneeded = function () { open.result.createObjectStore("keys"); };
      open.onerror = function () { reject(open.error); };
      open.onsuccess = function () {
        var tx = open.result.transaction("keys", mode);
        var req = fn(tx.objectStore("keys"));
        tx.oncomplete = function () { resolve(req && req.result); };
        tx.onerror = function () { reject(tx.error); };
      };
    });
  }
  function loadSigner() { return store("readonly", function (s) { return s.get("signer"); }); }
  function saveSigner(value) { return store("readwrite", function (s) { return s.put(value, "signer"); }); }

  function pemToDer(pem) {
    return b64decode(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
  }

  async function postJSON(url, body) {
    var r = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: body === undefined ? "" : JSON.stringify(body) });
    var data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return { status: r.status, body: data };
  }

  /* `code`: the one-time enrolment code an administrator gave out of band. */
  async function enrol(account, code) {
    var pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false,
                                               ["sign", "verify"]);
    var spki = b64encode(await crypto.subtle.exportKey("spki", pair.publicKey));
    var nonce = (await postJSON("/auth/nonce")).body.nonce;
    var proof = utf8(canonical({ account: account, nonce: nonce, public_key: spki,
                                 purpose: "citygrid-signing-enrolment" }));
    var sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, pair.privateKey, proof);
    var reply = await postJSON("/auth/signing/enrol", { public_key: spki, nonce: nonce,
                                                         proof: b64encode(sig), code: code });
    if (reply.status !== 201) { throw new Error((reply.body && reply.body.message) || "enrolment refused"); }
    var signer = { privateKey: pair.privateKey, certificate: reply.body.certificate, account: account };
    await saveSigner(signer);
    return signer;
  }

  async function signAndPost(url, action, resource, parameters, beside) {
    var signer = await loadSigner();
    if (!signer) { throw new Error("no signing key: enrol first"); }
    var nonce = (await postJSON("/auth/nonce")).body.nonce;
    var thumb = hex(await sha256(pemToDer(signer.certificate)));
    var time = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    var payload = utf8(canonical({ action: action, resource: resource, parameters: parameters,
                                   nonce: nonce, time: time, signer: thumb }));
    var sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, signer.privateKey, payload);
    var body = { payload: b64encode(payload), signature: b64encode(sig),
                 certificate: signer.certificate };
    Object.keys(beside || {}).forEach(function (k) { body[k] = beside[k]; });  // unsigned, e.g. private
    return postJSON(url, body);
  }

  global.cgcrypto = {
    b64encode: b64encode, b64decode: b64decode, utf8: utf8, hex: hex, canonical: canonical,
    sha256: sha256, leafHash: leafHash, verifyInclusion: verifyInclusion,
    verifyConsistency: verifyConsistency, verifyCheckpoint: verifyCheckpoint,
    loadSigner: loadSigner, enrol: enrol, signAndPost: signAndPost, postJSON: postJSON
  };
}(window));
