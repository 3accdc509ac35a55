/* Checking signed actions in the browser, against CityGrid's CA and nothing else: a small
   DER reader for X.509 certificates and CRLs, ECDSA P-256 / SHA-256 verification with
   WebCrypto, and the same rules the server applies (auth/signed_action.py): the signing
   certificate is issued by the CA, valid at signing time, a signing certificate, not revoked
   before the signing time by the CA's CRL, and named in the payload, which must be canonical
   JSON whose signature verifies with the certificate's key. */
(function (global) {
  "use strict";

  var ECDSA_SHA256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
  var OID_CN = [0x55, 0x04, 0x03], OID_OU = [0x55, 0x04, 0x0b];

  function tlv(b, i) {
    if (i + 2 > b.length) { throw new Error("truncated DER"); }
    var tag = b[i], len = b[i + 1], at = i + 2;
    if (len & 0x80) {
      var n = len & 0x7f;
      if (n < 1 || n > 4) { throw new Error("bad DER length"); }
      len = 0;
      for (var k = 0; k < n; k++) { len = len * 256 + b[at++]; }
    }
    if (at + len > b.length) { throw new Error("truncated DER"); }
    return { tag: tag, start: i, body: at, end: at + len };
  }
  function children(b, node) {
    var out = [], i = node.body;
    while (i < node.end) { var c = tlv(b, i); out.push(c); i = c.end; }
    return out;
  }
  function bytesOf(b, node) { return b.slice(node.start, node.end); }
  function content(b, node) { return b.slice(node.body, node.end); }
  function same(a, c) {
    if (a.length !== c.length) { return false; }
    for (var i = 0; i < a.length; i++) { if (a[i] !== c[i]) { return false; } }
    return true;
  }

  function time(b, node) {
    var s = new TextDecoder().decode(content(b, node));
    if (node.tag === 0x17) { s = (parseInt(s.slice(0, 2), 10) < 50 ? "20" : "19") + s; }
    return new Date(Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8),
                             +s.slice(8, 10), +s.slice(10, 12), +s.slice(12, 14)));
  }

  function unsignedInt(bytes) {
    var i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) { i++; }
    return bytes.slice(i);
  }

  /* ECDSA-Sig-Value (DER) → the raw r‖s form WebCrypto verifies. */
  function rawSignature(sig) {
    if (sig.length === 64) { return sig; }
    var seq = tlv(sig, 0), parts = children(sig, seq), out = new Uint8Array(64);
    [0, 1].forEach(function (k) {
      var v = unsignedInt(content(sig, parts[k]));
      if (v.length > 32) { throw new Error("bad ECDSA signature"); }
      out.set(v, 32 * (k + 1) - v.length);
    });
    return out;
  }

  function nameValue(b, name, oid) {
    var found = null;
    children(b, name).forEach(function (set) {
      children(b, set).forEach(function (atv) {
        var parts = children(b, atv);
        if (same(content(b, parts[0]), oid)) { found = new TextDecoder().decode(content(b, parts[1])); }
      });
    });
    return found;
  }

  /* A signed structure (certificate or CRL): its TBS bytes, algorithm and signature. */
  function signedParts(der) {
    var top = children(der, tlv(der, 0));
    var alg = children(der, top[1])[0];
    return { tbs: bytesOf(der, top[0]), tbsNode: top[0], algorithm: content(der, alg),
             signature: content(der, top[2]).slice(1) };
  }

  function certificate(der) {
    var p = signedParts(der), f = children(der, p.tbsNode), i = f[0].tag === 0xa0 ? 1 : 0;
    var validity = children(der, f[i + 3]);
    return {
      der: der, tbs: p.tbs, algorithm: p.algorithm, signature: p.signature,
      serial: unsignedInt(content(der, f[i])),
      issuer: bytesOf(der, f[i + 2]), subject: bytesOf(der, f[i + 4]),
      notBefore: time(der, validity[0]), notAfter: time(der, validity[1]),
      cn: nameValue(der, f[i + 4], OID_CN), ou: nameValue(der, f[i + 4], OID_OU),
      spki: bytesOf(der, f[i + 5])
    };
  }

  function crl(der) {
    var p = signedParts(der), f = children(der, p.tbsNode), i = f[0].tag === 0x02 ? 1 : 0;
    var issuer = bytesOf(der, f[i + 1]), k = i + 3, revoked = [];
    if (f[k] && (f[k].tag === 0x17 || f[k].tag === 0x18)) { k++; }  // nextUpdate
    if (f[k] && f[k].tag === 0x30) {
      children(der, f[k]).forEach(function (entry) {
        var e = children(der, entry);
        revoked.push({ serial: unsignedInt(content(der, e[0])), at: time(der, e[1]) });
      });
    }
    return { tbs: p.tbs, algorithm: p.algorithm, signature: p.signature, issuer: issuer, revoked: revoked };
  }

  function importKey(spki) {
    return crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  }
  function verify(key, signature, data) {
    return crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, rawSignature(signature), data);
  }

  /* The CA: from its PEM, once per page. */
  async function authority(pem) {
    var cert = certificate(cgcrypto.b64decode(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "")));
    cert.key = await importKey(cert.spki);
    cert.thumbprint = cgcrypto.hex(await cgcrypto.sha256(cert.der));
    return cert;
  }

  /* Check one bundle {payload, signature, certificate, crls, log}; `expect` holds the
     action, resource and parameters it must carry (those it names: for a message of the
     exchange peer, the peer's log binds the act to the message, exchange.js). Returns {ok,
     reason, account, payload}. This checks the signature; an entry's place in a log is
     checked by logcheck.js, and the log's time by `citygrid verify-action`. */
  async function checkBundle(ca, bundle, expect) {
    function no(reason) { return { ok: false, reason: reason }; }
    if (!bundle || bundle.format !== "citygrid-signed-action/2") { return no(T("certcheck.no_signature")); }
    var data = cgcrypto.b64decode(bundle.payload), text = new TextDecoder().decode(data), doc;
    try { doc = JSON.parse(text); } catch (e) { return no(T("certcheck.signed_content_is_not_json")); }
    if (cgcrypto.canonical(doc) !== text) { return no(T("certcheck.signed_content_is_not_canonical_json")); }
    var when = new Date(doc.time);
    var pem = bundle.certificate.split("-----END CERTIFICATE-----")[0];
    var cert = certificate(cgcrypto.b64decode(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "")));
    if (!same(cert.issuer, ca.subject) || !same(cert.algorithm, ECDSA_SHA256) ||
        !await verify(ca.key, cert.signature, cert.tbs)) { return no(T("certcheck.signing_certificate_not_issued_by_this")); }
    if (!(cert.notBefore <= when && when <= cert.notAfter)) { return no(T("certcheck.certificate_not_valid_at_the_time")); }
    if (cert.ou !== "signing") { return no(T("certcheck.not_a_signing_certificate")); }
    if (doc.signer !== cgcrypto.hex(await cgcrypto.sha256(cert.der))) { return no(T("certcheck.signed_content_names_another_certificate")); }
    if (!await verify(await importKey(cert.spki), cgcrypto.b64decode(bundle.signature), data)) {
      return no(T("certcheck.invalid_signature"));
    }
    var crls = bundle.crls || [];
    for (var c = 0; c < crls.length; c++) {
      var list = crl(cgcrypto.b64decode(crls[c].replace(/-----[^-]+-----/g, "").replace(/\s+/g, "")));
      if (!same(list.issuer, ca.subject) || !await verify(ca.key, list.signature, list.tbs)) {
        return no(T("certcheck.revocation_list_not_issued_by_the"));
      }
      var gone = list.revoked.some(function (r) { return same(r.serial, cert.serial) && r.at <= when; });
      if (gone) { return no(T("certcheck.signing_certificate_revoked")); }
    }
    if ((expect.action !== undefined && doc.action !== expect.action) ||
        (expect.resource !== undefined && doc.resource !== expect.resource)) {
      return no(T("certcheck.signed_operation_does_not_match_this"));
    }
    var params = expect.parameters || {};
    for (var k in params) {
      if (Object.prototype.hasOwnProperty.call(params, k) &&
          cgcrypto.canonical(doc.parameters[k]) !== cgcrypto.canonical(params[k])) {
        return no(T("certcheck.signed_parameters_do_not_match_this") + k + T("common.close_paren"));
      }
    }
    return { ok: true, account: cert.cn, payload: doc };
  }

  global.certcheck = { authority: authority, checkBundle: checkBundle, certificate: certificate,
                       crl: crl, rawSignature: rawSignature };
}(window));
