/* Photos and voice recordings in the browser, for the case pages and the exchange page.

   Uploading: each file is uploaded first, then named (by its SHA-256) in the signed
   parameters. The server reads the type from the bytes and refuses a file that is not what
   it is declared to be; the declared type comes from the file's name where the browser
   gives none (an .amr has none).

   Showing: a file is shown only once its bytes hash to a SHA-256 that the signature (or
   the peer's log) vouches for: a photo as a picture, a voice recording as a player where
   the browser plays its type (MP3), else as a download (AMR, which browsers do not play). */
(function () {
  "use strict";
  var ACCEPT = "image/jpeg,image/png,audio/mpeg,audio/amr,audio/amr-wb,.jpg,.jpeg,.png,.mp3,.amr,.awb";
  var BY_EXTENSION = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", mp3: "audio/mpeg",
                       amr: "audio/amr", awb: "audio/amr-wb" };
  var EXTENSIONS = { "audio/amr": "amr", "audio/amr-wb": "awb", "audio/mpeg": "mp3" };

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }

  function declaredType(file) {
    var ext = file.name.indexOf(".") >= 0 ? file.name.split(".").pop().toLowerCase() : "";
    return BY_EXTENSION[ext] || file.type || "application/octet-stream";
  }

  /* The SHA-256 of each stored (cleaned) file, in order; throws naming the first refused. */
  async function upload(files) {
    var hashes = [];
    for (var i = 0; i < files.length; i++) {
      var r = await fetch("/cases/attachments", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": declaredType(files[i]) }, body: files[i] }), body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (r.status !== 201 || !body) {
        throw new Error(T("cases.upload_failed") + files[i].name + T("common.colon") + (body && body.message || r.status));
      }
      hashes.push(body.sha256);
    }
    return hashes;
  }

  /* A labelled file input named `photos`. */
  function input() {
    var label = el("label", T("cases.photos_or_voice"));
    var field = el("input");
    field.type = "file"; field.name = "photos"; field.multiple = true; field.accept = ACCEPT;
    label.appendChild(field);
    return label;
  }

  /* Fetch attachment `a` ({sha256, kind, media_type, duration_ms}) from `url` and show it in
     `cell` when its bytes hash to a.sha256 and a.sha256 is one of `vouched`; else say it
     does not match. `name`: the start of a download's file name. */
  async function show(url, a, vouched, cell, name) {
    if (a.kind !== "photo" && a.kind !== "voice") { return; }
    var bytes = null, hash = "";
    try {
      var r = await fetch(url, { credentials: "same-origin" });
      if (r.status === 200) { bytes = new Uint8Array(await r.arrayBuffer()); }
    } catch (e) { bytes = null; }
    if (bytes) { hash = cgcrypto.hex(await cgcrypto.sha256(bytes)); }
    if (!bytes || hash !== a.sha256 || vouched.indexOf(hash) < 0) {
      var bad = a.kind === "photo" ? T("cases.photo_does_not_match_its_signature") : T("cases.voice_does_not_match_its_signature");
      cell.appendChild(el("span", bad, "photo-bad"));
      return;
    }
    var blob = URL.createObjectURL(new Blob([bytes], { type: a.media_type }));
    if (a.kind === "photo") {
      var img = el("img", null, "photo");
      img.alt = T("common.site_photos");
      img.title = "SHA-256 " + hash + T("cases.signed");
      img.src = blob;
      cell.appendChild(img);
      return;
    }
    var seconds = Math.round((a.duration_ms || 0) / 1000);
    var box = el("span", T("cases.voice") + Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0") + " ", "voice");
    box.title = "SHA-256 " + hash + T("cases.signed");
    box.dataset.sha256 = hash;
    if (el("audio").canPlayType(a.media_type)) {
      var player = el("audio");
      player.controls = true;
      player.preload = "metadata";
      player.src = blob;
      box.appendChild(player);
    } else {
      var link = el("a", T("cases.voice_download"));
      link.href = blob;
      link.download = name + "-" + hash.slice(0, 12) + "." + (EXTENSIONS[a.media_type] || "bin");
      box.appendChild(link);
    }
    cell.appendChild(box);
  }

  window.cgattach = { ACCEPT: ACCEPT, declaredType: declaredType, upload: upload, input: input, show: show };
}());
