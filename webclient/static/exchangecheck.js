/* A message received from the city–district peer, checked in the browser as the inbox
   checked it when it came (mapserver.exchange.bundle.verify): the act that made it is in
   the peer's log (a checkpoint signed by the peer's log key), its entry names the act's
   signature and records this message's number, kind, addressee (`me`) and content, and
   the signature is by a certificate of the peer's CA. For the exchange page and a case's
   page. Resolves to {ok, reason, account}. */
(function () {
  "use strict";

  async function checkReceived(m, me, peerCa, peerLogKey) {
    function no(reason) { return { ok: false, reason: reason }; }
    var a = m.made_by;
    if (!peerCa || !peerLogKey) { return no(T("exchange.peer_keys_not_configured")); }
    if (!a || typeof a !== "object" || typeof a.signature !== "string") { return no(T("certcheck.no_signature")); }
    var entry = await logcheck.entryOf(a.log, peerLogKey);
    if (!entry) { return no(T("exchange.not_in_the_peers_log")); }
    var detail = entry.detail || {}, signature;
    try { signature = cgcrypto.b64decode(a.signature); } catch (e) { return no(T("certcheck.invalid_signature")); }
    if (entry.outcome !== "ok" || detail.signature_sha256 !== cgcrypto.hex(await cgcrypto.sha256(signature))) {
      return no(T("exchange.log_entry_is_not_this_act"));
    }
    var content = cgcrypto.hex(await cgcrypto.sha256(cgcrypto.utf8(cgcrypto.canonical(m.content))));
    var told = { source_id: m.source_id, seq: m.seq, kind: m.kind, to: me, content_sha256: content };
    if (!detail.exchange || cgcrypto.canonical(detail.exchange) !== cgcrypto.canonical(told)) {
      return no(T("exchange.message_is_not_what_the_log_recorded"));
    }
    var result = await certcheck.checkBundle(peerCa, {
      format: "citygrid-signed-action/2", payload: a.payload, signature: a.signature,
      certificate: a.certificate, crls: a.crl ? [a.crl] : []
    }, {});
    if (result.ok && result.account !== m.signer) { return no(T("exchange.signer_differs")); }
    return result;
  }

  window.cgexchange = { checkReceived: checkReceived };
}());
