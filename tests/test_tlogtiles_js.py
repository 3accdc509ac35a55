"""The review page's tlog-tiles reader (webclient/static/tlogtiles.js) computes the same RFC
9162 proofs as audit/tiles.py, across full and partial tiles of levels 0 to 2, and fails on a
tile that is missing or short. Run in Node with WebCrypto's SHA-256 stood in by Node's."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

from audit import merkle, tiles

REPO = Path(__file__).resolve().parents[1]
HARNESS = """
const fs = require("fs"), crypto = require("crypto");
global.window = global;
global.cgcrypto = {
  sha256: async (b) => new Uint8Array(crypto.createHash("sha256").update(b).digest()),
};
const cases = JSON.parse(fs.readFileSync(process.argv[2]));
let files = {};
global.fetch = async (url) => {
  const p = url.replace("/audit/", "");
  if (!(p in files)) { return { status: 404 }; }
  const b = Buffer.from(files[p], "base64");
  const body = b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
  return { status: 200, arrayBuffer: async () => body };
};
eval(fs.readFileSync(process.argv[3], "utf8"));
const b64 = (hs) => hs.map((h) => Buffer.from(h).toString("base64"));
(async () => {
  const out = [];
  for (const c of cases) {
    files = c.files;
    const one = { inclusion: b64(await tlogtiles.inclusionProof("/audit/", c.index, c.size)),
                  consistency: b64(await tlogtiles.consistencyProof("/audit/", c.old, c.size)) };
    files = c.broken;
    try { await tlogtiles.inclusionProof("/audit/", c.index, c.size); one.broken = "read"; }
    catch (e) { one.broken = String(e.message); }
    out.push(one);
  }
  console.log(JSON.stringify(out));
})();
"""


def _level(leaves: list[bytes], level: int) -> list[bytes]:
    hashes = leaves
    for _ in range(level):
        full = len(hashes) // tiles.WIDTH * tiles.WIDTH
        hashes = [merkle.root(hashes[i : i + tiles.WIDTH]) for i in range(0, full, tiles.WIDTH)]
    return hashes


def test_browser_tile_proofs_equal_the_servers(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is required (the web client's build uses it too)"
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(70_000)]
    cases, expected = [], []
    for size, index, old in [(1, 0, 1), (5, 3, 2), (300, 257, 256), (65_537, 65_536, 256),
                             (70_000, 12_345, 300), (70_000, 69_999, 69_000)]:  # fmt: skip
        served: dict[str, str] = {}

        def read(
            level: int, n: int, width: int, size: int = size, served: dict[str, str] = served
        ) -> list[bytes]:
            hashes = _level(leaves[:size], level)[n * tiles.WIDTH : n * tiles.WIDTH + width]
            path = tiles.path(tiles.TileId(level, n, width))
            served[path] = base64.b64encode(b"".join(hashes)).decode()
            return hashes

        inclusion = tiles.inclusion_proof(index, size, read)
        consistency = tiles.consistency_proof(old, size, read)
        broken = {p: v for p, v in served.items() if p.startswith("tile/0/")}
        if broken:  # the first leaf tile a byte short
            first = sorted(broken)[0]
            broken[first] = base64.b64encode(base64.b64decode(broken[first])[:-1]).decode()
        cases.append({"size": size, "index": index, "old": old, "files": served,
                      "broken": broken if size > 1 else {}})  # fmt: skip
        expected.append(
            (
                [base64.b64encode(p).decode() for p in inclusion],
                [base64.b64encode(p).decode() for p in consistency],
            )  # fmt: skip
        )
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases))
    script = tmp_path / "harness.js"
    script.write_text(HARNESS)
    reader = REPO / "webclient" / "static" / "tlogtiles.js"
    done = subprocess.run(
        [node, str(script), str(data), str(reader)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for case, result, (inclusion_, consistency_) in zip(cases, results, expected, strict=True):
        assert result["inclusion"] == inclusion_, case["size"]
        assert result["consistency"] == consistency_, case["size"]
        if case["size"] > 1:  # a tile short by a byte, or missing: the proof fails
            assert "wrong size" in result["broken"] or ": 404" in result["broken"], result
