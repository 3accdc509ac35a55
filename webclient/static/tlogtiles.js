/* A C2SP tlog-tiles reader for the browser: RFC 9162 inclusion and consistency proofs
   computed here from the tiles the server serves read-only (/audit/tile/<L>/<N>[.p/<W>]),
   so that the review page trusts no proof the server computed, only the signed checkpoint
   (its key pinned by fingerprint) and hashes it can check against it. A wrong, missing or
   short tile can only make a proof fail. Mirrors audit/tiles.py. */
(function (global) {
  "use strict";
  var HEIGHT = 8, WIDTH = 256, HASH = 32;

  function encodeIndex(n) {
    var groups = [String(n % 1000).padStart(3, "0")];
    n = Math.floor(n / 1000);
    while (n > 0) { groups.unshift("x" + String(n % 1000).padStart(3, "0")); n = Math.floor(n / 1000); }
    return groups.join("/");
  }

  function tilePath(level, n, width) {
    return "tile/" + level + "/" + encodeIndex(n) + (width < WIDTH ? ".p/" + width : "");
  }

  /* The width of tile n at `level` in a tree of `size` leaves. */
  function widthAt(level, n, size) {
    var count = Math.floor(size / Math.pow(2, HEIGHT * level));
    return Math.max(0, Math.min(WIDTH, count - n * WIDTH));
  }

  function nodeHash(left, right) {  /* SHA-256(0x01 ‖ left ‖ right) */
    var bytes = new Uint8Array(1 + left.length + right.length);
    bytes[0] = 1;
    bytes.set(left, 1);
    bytes.set(right, 1 + left.length);
    return cgcrypto.sha256(bytes);
  }

  /* MTH of a list of hashes (RFC 9162 §2.1.1). */
  async function mth(hashes) {
    if (hashes.length === 1) { return hashes[0]; }
    var k = 1;
    while (k * 2 < hashes.length) { k *= 2; }
    return nodeHash(await mth(hashes.slice(0, k)), await mth(hashes.slice(k)));
  }

  function bitLength(n) { return n === 0 ? 0 : Math.floor(Math.log2(n)) + 1; }
  function split(n) { return Math.pow(2, bitLength(n - 1) - 1); }

  /* Subtree hashes of the tree of `size` leaves, each tile fetched once from `base`. */
  function Tree(size, base) {
    this.size = size;
    this.base = base;
    this.tiles = {};
  }

  Tree.prototype.tile = async function (level, n) {
    var width = widthAt(level, n, this.size), key = level + "/" + n;
    if (!this.tiles[key]) {
      var r = await fetch(this.base + tilePath(level, n, width), { credentials: "same-origin" });
      if (r.status !== 200) { throw new Error("tile " + tilePath(level, n, width) + ": " + r.status); }
      var bytes = new Uint8Array(await r.arrayBuffer());
      if (bytes.length !== width * HASH) { throw new Error("tile " + tilePath(level, n, width) + " has the wrong size"); }
      var hashes = [];
      for (var i = 0; i < width; i++) { hashes.push(bytes.slice(i * HASH, (i + 1) * HASH)); }
      this.tiles[key] = hashes;
    }
    return this.tiles[key];
  };

  /* The root of the perfect subtree over leaves [k·2^height, (k+1)·2^height). */
  Tree.prototype.node = async function (height, k) {
    var level = Math.floor(height / HEIGHT), rest = height % HEIGHT;
    var first = k * Math.pow(2, rest), count = Math.pow(2, rest);
    var n = Math.floor(first / WIDTH), offset = first % WIDTH;
    if (offset + count > widthAt(level, n, this.size)) { throw new Error("node beyond the tree"); }
    var hashes = await this.tile(level, n);
    return mth(hashes.slice(offset, offset + count));
  };

  /* MTH(D[lo:hi]) for the ranges RFC 9162 proofs use: perfect subtrees, folded from the right. */
  Tree.prototype.range = async function (lo, hi) {
    var pieces = [];
    while (lo < hi) {
      var height = bitLength(hi - lo) - 1;
      while (lo % Math.pow(2, height) !== 0) { height -= 1; }
      pieces.push(await this.node(height, lo / Math.pow(2, height)));
      lo += Math.pow(2, height);
    }
    var acc = pieces[pieces.length - 1];
    for (var i = pieces.length - 2; i >= 0; i--) { acc = await nodeHash(pieces[i], acc); }
    return acc;
  };

  /* PATH(index, D[size]), RFC 9162 §2.1.3.1. */
  async function inclusionProof(base, index, size) {
    var tree = new Tree(size, base), path = [], lo = 0, hi = size;
    while (hi - lo > 1) {
      var k = split(hi - lo);
      if (index < lo + k) { path.push(await tree.range(lo + k, hi)); hi = lo + k; }
      else { path.push(await tree.range(lo, lo + k)); lo += k; }
    }
    return path.reverse();
  }

  /* PROOF(old, D[size]), RFC 9162 §2.1.4.1. */
  async function consistencyProof(base, old, size) {
    var tree = new Tree(size, base), path = [], lo = 0, hi = size, m = old, complete = true;
    while (m !== hi - lo) {
      var k = split(hi - lo);
      if (m <= k) { path.push(await tree.range(lo + k, hi)); hi = lo + k; }
      else { path.push(await tree.range(lo, lo + k)); lo += k; m -= k; complete = false; }
    }
    if (!complete) { path.push(await tree.range(lo, hi)); }
    return path.reverse();
  }

  global.tlogtiles = { tilePath: tilePath, inclusionProof: inclusionProof,
                       consistencyProof: consistencyProof };
}(window));
