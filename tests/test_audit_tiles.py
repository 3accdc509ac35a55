"""The audit tree as C2SP tlog-tiles: tiles written by the real writer match a from-scratch
computation, proofs read from tiles equal the RFC 9162 proofs over all leaves and read
O(log n) rows, `audit verify` finds a tampered tile, a verifier written here from the C2SP
spec checks the log over HTTP alone; and refused handshakes are aggregated per source."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit import merkle, review, tiles
from audit.keys import signer, verifier
from audit.record import Entry, append, checkpoint_now
from audit.verify import verify
from mapserver import db, migrate
from mapserver.settings import Settings

from .app_client import Install
from .conftest import database_url

# ------------------------------------------------------------------ from scratch


def _scratch(leaves: list[bytes]) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """Every full tile straight from the definition: hash j of level L is the root of the
    leaves [j·256^L, (j+1)·256^L)."""
    out = {}
    level = 0
    while len(leaves) >> (8 * level) >= 256:
        span = 1 << (8 * level)
        for t in range((len(leaves) >> (8 * level)) // 256):
            hashes = [
                merkle.root(leaves[(t * 256 + j) * span : (t * 256 + j + 1) * span])
                for j in range(256)
            ]
            out[(level, t)] = (b"".join(hashes), merkle.root(hashes))
        level += 1
    return out


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(str(i).encode()) for i in range(n)]


@pytest.mark.parametrize("n", [1, 255, 256, 257, 511, 65535, 65536, 65536 + 257])
def test_tiles_and_proofs_match_the_definition(n: int) -> None:
    leaves = _leaves(n)
    stored: dict[tuple[int, int], tiles.Tile] = {}

    def earlier(level: int, start: int, stop: int) -> list[bytes]:
        if level == 0:
            return leaves[start:stop]
        return [stored[(level - 1, i)].root for i in range(start, stop)]

    rnd, size = random.Random(n), 0
    while size < n:  # batches of every kind, across tile boundaries
        k = min(n - size, rnd.choice([1, 2, 255, 256, 700, 5000]))
        for t in tiles.advance(size, leaves[size : size + k], earlier):
            stored[(t.level, t.n)] = t
        size += k
    assert {k: (t.hashes, t.root) for k, t in stored.items()} == _scratch(leaves)
    rebuilt = tiles.Builder()
    assert {(t.level, t.n): t for leaf in leaves for t in rebuilt.add(leaf)} == stored

    def read(level: int, index: int, width: int) -> list[bytes]:
        if width == 256:
            return tiles.split(stored[(level, index)].hashes)
        return earlier(level, index * 256, index * 256 + width)

    assert tiles.root(n, read) == merkle.root(leaves)
    for i in {0, 1 % n, n // 2, n - 1, min(255, n - 1), min(256, n - 1)}:
        proof = tiles.inclusion_proof(i, n, read)
        assert proof == merkle.inclusion_proof(leaves, i)
        merkle.verify_inclusion(leaves[i], i, n, proof, merkle.root(leaves))
    for m in {1, n // 3 or 1, min(256, n), n - 1 or 1, n}:
        proof = tiles.consistency_proof(m, n, read)
        assert proof == merkle.consistency_proof(leaves, m)
        if m < n:
            merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves), proof)


def test_tile_paths_are_the_c2sp_ones() -> None:
    assert tiles.path(tiles.TileId(0, 1234067)) == "tile/0/x001/x234/067"
    assert tiles.path(tiles.TileId(1, 0, 15)) == "tile/1/000.p/15"
    assert tiles.path(tiles.TileId(tiles.ENTRIES, 1000, 3)) == "tile/entries/x001/000.p/3"
    assert tiles.parse("tile/2/x001/000") == tiles.TileId(2, 1000, 256)
    for bad in ("tile/0/1", "tile/00/000", "tile/0/x000/001", "tile/0/000.p/0", "tile/0/000.p/256",
                "tile/0/000.p/08", "tile/64/000", "tile/0/000/", "../tile/0/000"):  # fmt: skip
        with pytest.raises(tiles.TileError):
            tiles.parse(bad)


# --------------------------------------------------------------------- the database


def _fresh(name: str, data_dir: Path) -> Settings:
    s = dataclasses.replace(Settings(), database_url=database_url(name), data_dir=data_dir)
    db.drop_database(s)
    db.ensure_database(s)
    with db.connect(s) as conn:
        migrate.upgrade(conn, s)
    return s


def _append(settings: Settings, n: int, batch: int) -> None:
    """n entries through the real writer's append, `batch` per transaction."""
    key = signer(settings.pki_dir)
    with db.connect(settings) as conn:
        done = 0
        while done < n:
            k = min(batch, n - done)
            with conn.transaction():
                append(
                    conn,
                    [Entry(action="tiles.read", resource=f"t{done + i}") for i in range(k)],
                    key,
                    every=1000,
                    seconds=3600,
                )
            done += k


def _stored(
    conn: psycopg.Connection,
) -> tuple[list[bytes], dict[tuple[int, int], tuple[bytes, bytes]]]:
    leaves = [
        bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM audit_entry ORDER BY leaf_index")
    ]
    rows = conn.execute("SELECT level, idx, hashes, root FROM audit_tile").fetchall()
    return leaves, {(lv, i): (bytes(h), bytes(r)) for lv, i, h, r in rows}


def _superuser_sql(settings: Settings, sql: str) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Settings]:
    s = _fresh("citygrid_tiles_small", tmp_path)
    yield s
    db.drop_database(s)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """65536 + 300 entries (a full level-1 tile) written by the real writer."""
    s = _fresh("citygrid_tiles_big", tmp_path_factory.mktemp("tiles-big"))
    _append(s, 65536 + 300, 997)
    with db.transaction(s) as conn:
        checkpoint_now(conn, signer(s.pki_dir))
    yield s
    db.drop_database(s)


def test_writer_tiles_across_boundaries(small: Settings) -> None:
    for n, batch in ((255, 100), (1, 1), (1, 1), (300, 7)):  # 255, 256, 257, 557
        _append(small, n, batch)
        with db.connect(small) as conn:
            leaves, stored = _stored(conn)
            assert stored == _scratch(leaves)
            assert verify(conn, verifier(small.pki_dir)).ok
    assert len(leaves) == 557 and set(stored) == {(0, 0), (0, 1)}


def test_big_log_tiles_proofs_and_verify(big: Settings) -> None:
    with db.connect(big) as conn:
        leaves, stored = _stored(conn)
        assert stored == _scratch(leaves)
        assert (1, 0) in stored and len(stored) == 257 + 1  # 65836 leaves: 257 full, 1 above
        report = verify(conn, verifier(big.pki_dir))
        assert report.ok and report.entries == len(leaves)
        size = int(conn.execute("SELECT max(size) FROM audit_checkpoint").fetchone()[0])  # type: ignore[index]
        for i in (0, 255, 256, 65535, 65536, size - 1):
            got = review.inclusion(conn, i)
            proof = [base64.b64decode(p) for p in got["proof"]]
            assert got["tree_size"] == size and proof == merkle.inclusion_proof(leaves[:size], i)
            merkle.verify_inclusion(leaves[i], i, size, proof, base64.b64decode(got["root"]))
        old = int(conn.execute("SELECT min(size) FROM audit_checkpoint").fetchone()[0])  # type: ignore[index]
        got = review.consistency(conn, old, size)
        proof = [base64.b64decode(p) for p in got["proof"]]
        assert proof == merkle.consistency_proof(leaves[:size], old)
        merkle.verify_consistency(
            old, size, merkle.root(leaves[:old]), merkle.root(leaves[:size]), proof
        )


class _Counting(psycopg.Connection[Any]):
    """A real connection that counts its statements and the rows they return."""

    queries = 0
    rows = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        cur = super().execute(*args, **kwargs)
        self.queries += 1
        self.rows += max(cur.rowcount, 0)
        return cur


def _cost(settings: Settings, index: int) -> tuple[int, int]:
    with _Counting.connect(settings.database_url) as conn:
        review.inclusion(conn, index)
        return conn.queries, conn.rows


def test_a_proof_reads_log_n_rows(small: Settings, big: Settings) -> None:
    _append(small, 300, 50)
    with db.transaction(small) as conn:
        checkpoint_now(conn, signer(small.pki_dir))
    few_q, few_rows = _cost(small, 3)
    many_q, many_rows = _cost(big, 3)
    # One query for the checkpoint, one for the full tiles the proof needs, one for its
    # partial tiles (≤ 255 hashes a level): never a row per leaf, whatever the size.
    assert few_q == many_q == 3, (few_q, many_q)
    assert many_rows <= 2 + 3 * 256 and many_rows < 2 * few_rows + 256, (few_rows, many_rows)


def test_verify_finds_a_tampered_tile(small: Settings) -> None:
    _append(small, 600, 100)
    with db.connect(small) as conn:
        assert verify(conn, verifier(small.pki_dir)).ok
    _superuser_sql(
        small,
        "UPDATE audit_tile SET hashes = overlay(hashes PLACING '\\xff'::bytea FROM 40)"
        " WHERE level = 0 AND idx = 1",
    )
    with db.connect(small) as conn:
        report = verify(conn, verifier(small.pki_dir))
    assert report.problem == "tile/0/001 differs from the tile recomputed from the entries"
    _superuser_sql(small, "DELETE FROM audit_tile WHERE level = 0 AND idx = 1")
    with db.connect(small) as conn:
        assert verify(conn, verifier(small.pki_dir)).problem == "tile/0/001 is missing"


def test_tiles_are_append_only_for_the_app(small: Settings) -> None:
    _append(small, 256, 256)
    with psycopg.connect(small.serving_database_url, autocommit=True) as app:
        for sql in (
            "UPDATE audit_tile SET root = root",
            "DELETE FROM audit_tile",
            "TRUNCATE audit_tile",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)
    with (
        psycopg.connect(small.database_url, autocommit=True) as owner,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        owner.execute("DELETE FROM audit_tile")


def test_migration_builds_tiles_for_an_existing_log(small: Settings) -> None:
    """A log written before migration 0018: its tiles are built from the leaf hashes."""
    _append(small, 256 * 3 + 5, 200)
    _superuser_sql(small, "DROP TABLE audit_tile; DELETE FROM schema_migrations WHERE version = 18")
    with db.connect(small) as conn:
        assert [m.version for m in migrate.upgrade(conn, small)] == [18]
    with db.connect(small) as conn:
        leaves, stored = _stored(conn)
        assert len(stored) == 3 and stored == _scratch(leaves)
        assert verify(conn, verifier(small.pki_dir)).ok


# ------------------------------------------------ an independent verifier over HTTP


def _index_path(n: int) -> str:
    """C2SP tlog-tiles: N in groups of three digits, every group but the last after an x."""
    digits = f"{n:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])


class HttpTiles:
    """A tlog client that knows only the spec and the pinned key: no CityGrid code."""

    def __init__(self, get: Any, key: Ed25519PublicKey, origin: str, key_name: str):
        self.get, self.key, self.origin, self.key_name = get, key, origin, key_name

    def checkpoint(self) -> tuple[int, bytes]:
        note = self.get("/audit/checkpoint").decode()
        body, signatures = note.split("\n\n", 1)
        raw = self.key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_id = hashlib.sha256(self.key_name.encode() + b"\n\x01" + raw).digest()[:4]
        for line in signatures.splitlines():
            name, _, blob = line.removeprefix("\u2014 ").partition(" ")
            sig = base64.b64decode(blob)
            if name == self.key_name and sig[:4] == key_id:
                self.key.verify(sig[4:], (body + "\n").encode())  # raises if forged
                origin, size, root = body.split("\n")[:3]
                assert origin == self.origin
                return int(size), base64.b64decode(root)
        raise AssertionError("no signature by the pinned key")

    def hashes(self, level: int, n: int, size: int) -> list[bytes]:
        width = min(256, (size >> (8 * level)) - n * 256)
        suffix = "" if width == 256 else f".p/{width}"
        data = self.get(f"/audit/tile/{level}/{_index_path(n)}{suffix}")
        assert len(data) == 32 * width
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def node(self, height: int, k: int, size: int) -> bytes:
        """Hash of leaves [k·2^h, (k+1)·2^h): one tile hash, or folded from 2^(h mod 8)."""
        level, rest = divmod(height, 8)
        layer = self.hashes(level, (k << rest) >> 8, size)
        start = (k << rest) % 256
        layer = layer[start : start + (1 << rest)]
        while len(layer) > 1:
            layer = [_node(layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
        return layer[0]

    def mth(self, lo: int, hi: int, size: int) -> bytes:
        if hi - lo == 1 or (hi - lo) & (hi - lo - 1) == 0:
            return self.node((hi - lo).bit_length() - 1, lo // (hi - lo), size)
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        return _node(self.mth(lo, lo + k, size), self.mth(lo + k, hi, size))

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """PATH(m, D[n]) of RFC 9162 2.1.3.1, hashes fetched as tiles."""
        lo, hi, path = 0, size, []
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append(self.mth(lo + k, hi, size))
                hi = lo + k
            else:
                path.append(self.mth(lo, lo + k, size))
                lo += k
        return path[::-1]

    def entry(self, index: int, size: int) -> bytes:
        n, width = index // 256, min(256, size - index // 256 * 256)
        suffix = "" if width == 256 else f".p/{width}"
        data, out = self.get(f"/audit/tile/entries/{_index_path(n)}{suffix}"), []
        while data:
            (length,) = struct.unpack(">H", data[:2])
            out.append(data[2 : 2 + length])
            data = data[2 + length :]
        assert len(out) == width
        return out[index % 256]


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2, step by step."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0 and r == root


def test_an_independent_verifier_checks_the_log_over_http(small: Settings, tmp_path: Path) -> None:
    _append(small, 256 * 2 + 40, 100)
    with db.transaction(small) as conn:
        checkpoint_now(conn, signer(small.pki_dir))
    install = Install(small, tmp_path)
    try:
        install.account("tiles-officer", ["security_officer"])
        client = install.client("tiles-officer")

        def get(path: str) -> bytes:
            reply = client.get(path)
            assert reply.status_code == 200, (path, reply.get_json(silent=True))
            return reply.data

        reader = HttpTiles(get, verifier(small.pki_dir), "citygrid.audit/v1", "citygrid-audit")
        size, root = reader.checkpoint()
        assert size >= 552
        for index in (0, 300, 511, 512, size - 1):
            leaf = hashlib.sha256(b"\x00" + reader.entry(index, size)).digest()
            _check_inclusion(leaf, index, size, reader.inclusion(index, size), root)
        with pytest.raises(AssertionError):  # a wrong entry does not verify
            _check_inclusion(b"\x00" * 32, 300, size, reader.inclusion(300, size), root)
        beyond = client.get(f"/audit/tile/0/{_index_path(size // 256 + 1)}")
        assert beyond.status_code == 404 and beyond.get_json()["error"]
        assert client.get("/audit/tile/0/1").status_code == 404
        assert install.client(None).get("/audit/tile/0/000").status_code in (401, 403)
    finally:
        install.close()


# ------------------------------------------------------------- refused handshakes


def _refusals(settings: Settings, since: int) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(settings.database_url) as conn:
        return [
            (addr, detail)
            for addr, detail in conn.execute(
                "SELECT client_addr, detail FROM audit_entry WHERE action = 'tls.refused'"
                " AND id > %s ORDER BY id",
                (since,),
            )
        ]


def _last_id(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit_entry").fetchone()[0])  # type: ignore[index]


def test_refusals_from_one_source_are_counted_per_window(small: Settings) -> None:
    from audit.writer import GroupCommitWriter
    from auth.tls_worker import RefusalLog, tls_refusal

    now = [1000.0]
    writer = GroupCommitWriter(small.serving_database_url, signer(small.pki_dir), 1000, 60)
    refusals = RefusalLog(
        writer,
        logging.getLogger(__name__),
        full_per_window=3,
        window_seconds=60,
        interval_seconds=20,
        clock=lambda: now[0],
    )

    def rows(n: int) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + 10
        while len(_refusals(small, 0)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return _refusals(small, 0)

    for i in range(10):
        refusals.add(tls_refusal(("192.0.2.7", i), "no_certificate" if i % 3 else "expired", "x"))
    for i in range(2):
        refusals.add(tls_refusal(("192.0.2.8", i), "expired", "x"))
    now[0] += 10
    refusals.tick()  # no interval has passed: nothing counted is written yet
    # The writer commits on two connections: entries submitted together may land in either
    # order, so which sources the first five came from is what is compared.
    assert sorted(a for a, d in rows(5)) == ["192.0.2.7"] * 3 + ["192.0.2.8"] * 2
    now[0] += 11  # an interval has passed: one counted entry for the source past its three
    refusals.tick()
    addr, detail = rows(6)[-1]
    assert addr == "192.0.2.7" and detail["coalesced"] == 7
    assert detail["reasons"] == {"no_certificate": 4, "expired": 3}
    assert detail["summary"].startswith("7 more refusals from 192.0.2.7: no_certificate ×4")
    for i in range(2):  # the same minute: still counted, not in full
        refusals.add(tls_refusal(("192.0.2.7", i), "expired", "x"))
    now[0] += 21
    refusals.tick()
    assert [d.get("coalesced") for a, d in rows(7)[5:]] == [7, 2]
    now[0] += 20  # a new minute: the source gets its first three in full again
    refusals.add(tls_refusal(("192.0.2.7", 1), "expired", "x"))
    refusals.close(timeout=10)  # queued; in the tree after the sequencer's next round
    assert len(rows(8)) == 8 and "coalesced" not in rows(8)[-1][1]
    with db.connect(small) as conn:
        assert verify(conn, verifier(small.pki_dir)).ok


def test_a_refusal_flood_from_one_source_spares_served_requests(tmp_path: Path) -> None:
    """Real `citygrid serve` over mutual TLS: hundreds of refused handshakes from one
    address while a valid client keeps asking; its answers stay prompt, and every refusal
    is in the log, in full or counted, once the server has stopped."""
    from auth import accounts, certs, pki
    from auth.ca_store import CaStore

    from .tls import Server

    secret = "tiles flood test passphrase"
    settings = _fresh("citygrid_tiles_flood", tmp_path / "var")
    try:
        store = CaStore(settings.pki_dir)
        store.init(secret.encode())
        out = tmp_path / "certs"
        out.mkdir()
        with db.transaction(settings) as conn:
            accounts.add(conn, "flood-officer", ["security_officer"], None)
            certs.issue(conn, store, secret.encode(), "flood-officer", pki.Kind.PERSON, out)
            certs.publish_crl(conn, store, secret.encode())
        since = _last_id(settings)
        server = Server(
            {
                "CITYGRID_DATABASE_URL": settings.database_url,
                "CITYGRID_DATA_DIR": str(settings.data_dir),
                "CITYGRID_CA_PASSPHRASE": secret,
            },
            workers=1,
        )
        try:
            server.wait_ready()
            good = ssl.create_default_context(cafile=str(store.cert_path))
            good.load_cert_chain(str(out / "flood-officer.crt"), str(out / "flood-officer.key"))
            anonymous = ssl.create_default_context(cafile=str(store.cert_path))
            flood, attempts = 400, [0]
            lock = threading.Lock()

            def refused() -> None:
                while True:
                    with lock:
                        if attempts[0] >= flood:
                            return
                        attempts[0] += 1
                    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
                        try:
                            with anonymous.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                                tls.recv(1)  # TLS 1.3: the refusal arrives as an alert
                        except (ssl.SSLError, OSError):
                            pass

            import http.client

            # The arbiter listens before its worker has loaded the app: wait for it first.
            warm = http.client.HTTPSConnection("127.0.0.1", server.port, context=good, timeout=30)
            warm.request("GET", "/auth/whoami")
            assert warm.getresponse().status == 200
            warm.close()
            attackers = [threading.Thread(target=refused) for _ in range(8)]
            for t in attackers:
                t.start()
            latencies = []

            while any(t.is_alive() for t in attackers):
                https = http.client.HTTPSConnection(
                    "127.0.0.1", server.port, context=good, timeout=20
                )
                started = time.monotonic()
                https.request("GET", "/auth/whoami")
                assert https.getresponse().status == 200
                latencies.append(time.monotonic() - started)
                https.close()
            for t in attackers:
                t.join()
        finally:
            server.stop()
        rows = [
            (a, d) for a, d in _refusals(settings, since) if d.get("reason") != "handshake_timeout"
        ]
        full = [d for a, d in rows if "coalesced" not in d]
        counted = [d for a, d in rows if "coalesced" in d]
        assert all(a == "127.0.0.1" for a, _ in rows)
        assert len(full) <= 20 * 2, len(full)  # the first 20 of a window (two at most)
        assert len(full) + sum(d["coalesced"] for d in counted) == flood
        assert latencies and max(latencies) < 2.0, sorted(latencies)[-3:]
        with db.connect(settings) as conn:
            assert verify(conn, verifier(settings.pki_dir)).ok
    finally:
        db.drop_database(settings)
