"""The gateway over real TLS: gunicorn started by `citygrid serve`, real certificates."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.settings import Settings

from .conftest import demo_database
from .load import Load, kill, workers
from .sequenced import sequenced
from .tls import REFUSED, Server, request

SECRET = "gateway test passphrase"


class World:
    """A CA, accounts and their certificates, on the demo district's database."""

    def __init__(self, settings: Settings, out: Path):
        self.settings = settings
        self.out = out
        self.store = CaStore(settings.pki_dir)
        self.store.init(SECRET.encode())
        self.ca = self.store.cert_path
        self.files: dict[str, tuple[Path, Path]] = {}
        with db.transaction(settings) as conn:
            for name, role, org in [
                ("gw-alice", "viewer", "street-001"),
                ("gw-bob", "viewer", "street-002"),
                ("gw-carol", "viewer", "street-001"),
                ("gw-dave", "viewer", "street-001"),
                ("gw-officer", "security_officer", None),
                ("gw-admin", "admin", None),
                ("gw-expired", "viewer", "street-001"),
                ("gw-server", "viewer", "street-001"),
                ("gw-limited", "inspector", "street-001"),
            ]:
                accounts.add(conn, name, [role], org)
                if name not in ("gw-expired", "gw-server"):
                    issued = certs.issue(
                        conn, self.store, SECRET.encode(), name, pki.Kind.PERSON, out
                    )
                    self.files[name] = (out / f"{name}.crt", out / f"{name}.key")
                    if name == "gw-carol":
                        self.carol_serial = issued.serial
            ca_key, ca_cert = self.store.key(SECRET.encode()), self.store.certificate()
            long_ago = pki.now() - dt.timedelta(days=400)
            self._craft(
                conn,
                "gw-expired",
                pki.issue(
                    ca_key,
                    ca_cert,
                    *self._key("gw-expired"),
                    pki.Kind.PERSON,
                    "gw-expired",
                    30,
                    long_ago,
                ),
            )
            self._craft(
                conn,
                "gw-server",
                pki.issue(ca_key, ca_cert, *self._key("gw-server"), pki.Kind.SERVER, "gw-server"),
            )
            accounts.set_active(conn, "gw-dave", False)
            certs.publish_crl(conn, self.store, SECRET.encode())
        # A look-alike CA nobody trusts, with a certificate for gw-alice.
        other_key = pki.new_key()
        other_ca = pki.make_ca(other_key, "CityGrid CA")
        key = pki.new_key()
        forged = pki.issue(other_key, other_ca, key.public_key(), pki.Kind.PERSON, "gw-alice")
        self.files["forged"] = self._write("forged", forged, key)

    _keys: dict[str, Any] = {}

    def _key(self, name: str) -> tuple[Any]:
        key = pki.new_key()
        self._keys[name] = key
        return (key.public_key(),)

    def _write(self, name: str, cert: Any, key: Any) -> tuple[Path, Path]:
        crt, k = self.out / f"{name}.crt", self.out / f"{name}.key"
        crt.write_bytes(pki.pem(cert))
        k.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return crt, k

    def _craft(self, conn: psycopg.Connection, name: str, cert: Any) -> None:
        account = accounts.get(conn, name)
        kind = pki.Kind.SERVER if name == "gw-server" else pki.Kind.PERSON
        certs.register(conn, cert, kind, account.id)
        self.files[name] = self._write(name, cert, self._keys[name])

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "CITYGRID_DATABASE_URL": self.settings.database_url,
            "CITYGRID_DATA_DIR": str(self.settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            "CITYGRID_RATE_LIMIT_TILES": "*=100000/hour",
            "CITYGRID_AUDIT_CHECKPOINT_ENTRIES": "5",
            **extra,
        }

    def get(self, port: int, path: str, who: str | None, **kw: Any):  # type: ignore[no-untyped-def]
        cert, key = self.files[who] if who else (None, None)
        return request(port, path, self.ca, cert, key, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """An install of its own: database, CA and audit key."""
    settings = demo_database("citygrid_gw", tmp_path_factory.mktemp("gw-var"))
    yield World(settings, tmp_path_factory.mktemp("gw-certs"))
    db.drop_database(settings)


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[Server]:
    srv = Server(world.env())
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _refusals(world: World, since: dt.datetime) -> list[tuple[str, str]]:
    sequenced(world.settings.database_url)
    with psycopg.connect(world.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT action, detail ->> 'reason' FROM audit_entry"
            " WHERE at >= %s AND outcome = 'refused' ORDER BY id",
            (since,),
        ).fetchall()
    return [(a, r) for a, r in rows]


def _wait_for_refusal(world: World, since: dt.datetime, reason: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(r == reason for _, r in _refusals(world, since)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no audit entry with reason {reason}: {_refusals(world, since)}")


def test_valid_certificate_gets_tiles(world: World, server: Server) -> None:
    who = world.get(server.port, "/auth/whoami", "gw-alice")
    assert who.status == 200 and who.json() == {
        "account": "gw-alice",
        "roles": ["viewer"],
        "kind": "person",
    }
    desc = world.get(server.port, "/tiles/topo2000", "gw-alice").json()
    level = desc["levels"][-1]
    t = level["tiles"]
    tile = world.get(
        server.port, f"/tiles/topo2000/{level['level']}/{t['x_min']}/{t['y_min']}.png", "gw-alice"
    )
    assert tile.status == 200 and tile.body.startswith(b"\x89PNG")
    assert "Server" not in tile.headers or "gunicorn" not in tile.headers["Server"].lower()
    for header in (
        "Strict-Transport-Security",
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "Referrer-Policy",
    ):
        assert header in tile.headers
    assert "frame-ancestors 'none'" in tile.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        (None, "no_certificate"),
        ("forged", "untrusted_issuer"),
        ("gw-expired", "expired"),
        ("gw-server", "not_client_certificate"),
    ],
)
def test_refused_in_the_handshake_and_audited(
    world: World, server: Server, who: str | None, reason: str
) -> None:
    since = pki.now() - dt.timedelta(seconds=1)
    with pytest.raises(REFUSED):
        world.get(server.port, "/auth/whoami", who)
    _wait_for_refusal(world, since, reason)


def test_disabled_account_refused_by_the_app(world: World, server: Server) -> None:
    since = pki.now() - dt.timedelta(seconds=1)
    reply = world.get(server.port, "/tiles/topo2000", "gw-dave")
    assert reply.status == 401 and reply.json()["error"] == "unauthenticated"
    _wait_for_refusal(world, since, "account_disabled")


def test_revocation_takes_effect_without_restart(world: World, server: Server) -> None:
    assert world.get(server.port, "/auth/whoami", "gw-carol").status == 200
    with db.transaction(world.settings) as conn:
        certs.revoke(conn, world.carol_serial, "key_compromise")
        certs.publish_crl(conn, world.store, SECRET.encode())
    since = pki.now() - dt.timedelta(seconds=1)
    with pytest.raises(REFUSED):
        world.get(server.port, "/auth/whoami", "gw-carol")
    _wait_for_refusal(world, since, "revoked")


def test_policy(world: World, server: Server) -> None:
    desc = world.get(server.port, "/tiles/topo2000", "gw-alice").json()
    level = desc["levels"][-1]  # 1:2000
    own, other = {}, {}
    with psycopg.connect(world.settings.database_url) as demo_conn:
        svc_rows = demo_conn.execute(
            "SELECT c.street_code, ST_X(ST_PointOnSurface(g.geom)), ST_Y(ST_PointOnSurface(g.geom))"
            " FROM unit_grid g JOIN community c ON c.code = g.community_code ORDER BY g.code"
        ).fetchall()
    from tiles.service import grid_from

    grid = grid_from(world.settings)
    for street, x, y in svc_rows:
        target = own if street == "110108001" else other
        if not target:
            tx, ty, col, row = grid.locate(level["level"], x, y)
            target.update(level=level["level"], x=tx, y=ty, col=col, row=row)
    query = "/map/identify?map=topo2000&level={level}&x={x}&y={y}&col={col}&row={row}"
    mine = world.get(server.port, query.format(**own), "gw-alice")
    assert mine.status == 200 and mine.json()["street"]["code"] == "110108001"
    theirs = world.get(server.port, query.format(**other), "gw-alice")
    assert theirs.status == 403 and theirs.json()["error"] == "forbidden"
    # A viewer sees the overview map but not the 1:500 survey map.
    assert world.get(server.port, "/tiles/topo500", "gw-alice").status == 403
    # Separation of duties.
    body = b'{"name": "gw-new", "roles": ["viewer"]}'
    hdrs = {"Content-Type": "application/json"}
    assert (
        world.get(
            server.port, "/admin/accounts", "gw-officer", method="POST", body=body, headers=hdrs
        ).status
        == 403
    )
    assert world.get(server.port, "/audit/entries", "gw-admin").status == 403
    assert world.get(server.port, "/audit/entries", "gw-officer").status == 200


def test_tokens_bound_to_the_certificate(world: World, server: Server) -> None:
    issued = world.get(server.port, "/auth/token", "gw-alice", method="POST")
    assert issued.status == 200
    token = issued.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert world.get(server.port, "/auth/whoami", "gw-alice", headers=bearer).status == 200
    stolen = world.get(server.port, "/auth/whoami", "gw-bob", headers=bearer)
    assert stolen.status == 401
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-2]}xx.{sig}"
    bad = world.get(
        server.port, "/auth/whoami", "gw-alice", headers={"Authorization": f"Bearer {tampered}"}
    )
    assert bad.status == 401
    none = world.get(
        server.port, "/auth/whoami", "gw-alice", headers={"Authorization": "Basic abc"}
    )
    assert none.status == 401


def test_rate_limit_across_two_workers(world: World) -> None:
    srv = Server(world.env(CITYGRID_RATE_LIMIT_TILES="*=30/hour"))
    try:
        srv.wait_ready()
        path = "/tiles/topo2000"
        statuses = [world.get(srv.port, path, "gw-limited").status for _ in range(30)]
        assert statuses == [200] * 30
        over = world.get(srv.port, path, "gw-limited")
        assert over.status == 429 and int(over.headers["Retry-After"]) > 0
        assert over.json()["error"] == "too_many_requests"
        sequenced(world.settings.database_url)
        with psycopg.connect(world.settings.database_url) as conn:
            hits = conn.execute(
                "SELECT count(*) FROM audit_entry WHERE action = 'rate_limit'"
                " AND account = 'gw-limited'"
            ).fetchone()[0]
        assert hits >= 1
    finally:
        srv.stop()


def test_a_fast_client_is_limited_in_leased_blocks(world: World) -> None:
    """256 tile requests a day: each of the two workers takes the client's requests from Redis
    in blocks of up to 4 (a 64th of the limit). Together they never answer more than the
    limit, and leave at most a block each unused (mapserver.rate_limits)."""
    from cryptography import x509
    from redis import Redis

    redis = Redis.from_url(world.settings.redis_url)

    def scripts_run() -> int:  # the limiter's round trips, on this machine's Redis
        stats = redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    srv = Server(world.env(CITYGRID_RATE_LIMIT_TILES="*=256/day"))
    try:
        srv.wait_ready()
        before = scripts_run()
        statuses = [world.get(srv.port, "/tiles/topo2000", "gw-limited").status for _ in range(280)]
        round_trips = scripts_run() - before
    finally:
        srv.stop()
    assert set(statuses) == {200, 429}
    answered = statuses.count(200)
    assert 256 - 2 * 3 <= answered <= 256, answered
    cert = x509.load_pem_x509_certificate(world.files["gw-limited"][0].read_bytes())
    key = f"citygrid:rl:cert:{pki.thumbprint(cert)}:tiles:256/86400"
    counted = sum(int(redis.get(k) or 0) for k in redis.scan_iter(f"{key}:*"))
    assert counted == 256  # counted ahead, as far as the limit had room, and no further
    # Blocks: far fewer round trips than requests (one each would be 280 and more).
    assert round_trips < 200, round_trips


def test_redis_down_fails_closed(world: World) -> None:
    srv = Server(world.env(CITYGRID_REDIS_URL="redis://127.0.0.1:1/0"))
    try:
        srv.wait_ready()
        reply = world.get(srv.port, "/tiles/topo2000", "gw-alice")
        assert reply.status == 503 and reply.json()["error"] == "unavailable"
    finally:
        srv.stop()


def test_request_size_limit_and_json_errors(world: World, server: Server) -> None:
    big = b'{"name": "' + b"x" * (12 << 20) + b'"}'
    # Refused unread, the body is read and dropped before the connection closes: the client
    # gets the refusal, not a reset while it is still sending (auth/tls_worker.py).
    reply = world.get(
        server.port,
        "/admin/accounts",
        "gw-admin",
        method="POST",
        body=big,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 413 and reply.json()["error"] == "request_entity_too_large"
    missing = world.get(server.port, "/no/such/page", "gw-alice")
    assert missing.status == 404 and missing.json() == {
        "error": "not_found",
        "message": missing.json()["message"],
    }
    bad = world.get(
        server.port,
        "/admin/accounts",
        "gw-admin",
        method="POST",
        body=b"[1,2",
        headers={"Content-Type": "application/json"},
    )
    assert bad.status == 400 and "Traceback" not in bad.body.decode()


def _attack_tokens(world: World) -> dict[str, str]:
    """Tokens an attacker might present, signed (where signed) with the server's own keys."""
    import base64
    import hashlib
    import hmac
    import json

    import jwt

    from auth import tokens as tk

    keys = tk.KeySet(world.settings.pki_dir / "jwt")
    kid, key = keys.signing_key()
    alice_crt = world.files["gw-alice"][0]
    from cryptography import x509

    alice = x509.load_pem_x509_certificates(alice_crt.read_bytes())[0]
    now = int(time.time())
    good = {
        "iss": tk.ISSUER,
        "aud": tk.AUDIENCE,
        "sub": "gw-alice",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "cnf": {"x5t#S256": tk.x5t_s256(pki.thumbprint(alice))},
    }

    def signed(**changes: Any) -> str:
        claims = {k: v for k, v in {**good, **changes}.items() if v is not None}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})

    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = f"{b64({'alg': 'HS256', 'kid': kid})}.{b64(good)}"
    hs_sig = (
        base64.urlsafe_b64encode(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    valid = signed()
    head, payload, sig = valid.split(".")
    return {
        "alg-none": f"{b64({'alg': 'none', 'kid': kid})}.{b64(good)}.",
        "hs256-with-public-key": f"{hs_input}.{hs_sig}",
        "expired": signed(exp=now - 10),
        "missing-exp": signed(exp=None),
        "wrong-aud": signed(aud="elsewhere"),
        "wrong-iss": signed(iss="evil"),
        "tampered": f"{head}.{b64({**good, 'sub': 'gw-admin'})}.{sig}",
        "valid": valid,
    }


def test_jwt_attacks_over_https(world: World, server: Server) -> None:
    attacks = _attack_tokens(world)
    valid = attacks.pop("valid")
    ok = world.get(
        server.port, "/auth/whoami", "gw-alice", headers={"Authorization": f"Bearer {valid}"}
    )
    assert ok.status == 200
    other = world.get(
        server.port, "/auth/whoami", "gw-bob", headers={"Authorization": f"Bearer {valid}"}
    )
    assert other.status == 401, "a token presented over another client's certificate"
    for name, token in attacks.items():
        reply = world.get(
            server.port, "/auth/whoami", "gw-alice", headers={"Authorization": f"Bearer {token}"}
        )
        assert reply.status == 401, name
        assert reply.json()["error"] == "unauthenticated", name


def _checkpointed(world: World, timeout: float = 30.0) -> None:
    """Until every request so far is in the tree and under a signed checkpoint."""
    sequenced(world.settings.database_url)
    deadline = time.monotonic() + timeout
    with psycopg.connect(world.settings.database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM audit_entry),"
                " (SELECT coalesce(max(size), 0) FROM audit_checkpoint)"
            ).fetchone()
            assert row is not None
            if row[1] >= row[0]:
                return
            assert time.monotonic() < deadline, f"checkpoint at {row[1]} of {row[0]} entries"
            time.sleep(0.05)


def test_audit_review_with_proofs(world: World, server: Server) -> None:
    import base64
    import csv
    import io

    from audit import checkpoint, merkle
    from audit.keys import verifier

    for _ in range(6):
        assert world.get(server.port, "/auth/whoami", "gw-alice").status == 200
    _checkpointed(world)
    injected = world.get(server.port, "/x%0Aforged%20line%0D", "gw-alice")
    assert injected.status == 404
    _checkpointed(world)  # a second checkpoint, for the consistency proof below
    page = world.get(server.port, "/audit/entries?account=gw-alice&limit=50", "gw-officer")
    assert page.status == 200
    items = page.json()["entries"]
    assert items and all(e["account"] == "gw-alice" for e in items)
    cps = world.get(server.port, "/audit/checkpoints", "gw-officer").json()["checkpoints"]
    assert len(cps) >= 2
    public = verifier(world.settings.pki_dir)
    latest = checkpoint.verify(cps[0]["note"], public)
    target = items[-1]["leaf_index"]
    proof = world.get(server.port, f"/audit/proof/inclusion?entry={target}", "gw-officer").json()
    signed = checkpoint.verify(proof["checkpoint"], public)
    merkle.verify_inclusion(
        base64.b64decode(proof["leaf_hash"]),
        target,
        signed.size,
        [base64.b64decode(p) for p in proof["proof"]],
        signed.root,
    )
    old = cps[-1]["size"]
    cons = world.get(
        server.port, f"/audit/proof/consistency?from={old}&to={latest.size}", "gw-officer"
    ).json()
    merkle.verify_consistency(
        old,
        latest.size,
        base64.b64decode(cons["from_root"]),
        latest.root,
        [base64.b64decode(p) for p in cons["proof"]],
    )
    exported = world.get(
        server.port, "/audit/export?format=csv&account=gw-alice&limit=500", "gw-officer"
    )
    assert exported.status == 200
    text = exported.body.decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert len(text.splitlines()) == len(rows)  # no value spans or forges a line
    assert any("\\u000a" in cell for row in rows for cell in row)
    as_json = world.get(
        server.port, "/audit/export?format=json&account=gw-alice", "gw-officer"
    ).json()
    assert as_json["checkpoint"]["size"] > 0 and as_json["entries"][0]["entry"]["account"]
    bad = world.get(server.port, "/audit/entries?limit=0", "gw-officer")
    assert bad.status == 400
    assert world.get(server.port, "/audit/entries?colour=red", "gw-officer").status == 400
    assert world.get(server.port, "/audit/proof/inclusion?entry=abc", "gw-officer").status == 400
    # The officer's own reads are in the log too.
    sequenced(world.settings.database_url)
    mine = world.get(
        server.port, "/audit/entries?account=gw-officer&action=audit.entries", "gw-officer"
    ).json()["entries"]
    assert mine


# ---------------------------------------------------------------- signed actions


def _signing(world: World, name: str) -> tuple[Any, Any]:
    """A signing certificate and key for `name`, issued once per module."""
    from cryptography import x509

    cache = world.__dict__.setdefault("signing", {})
    if name not in cache:
        with db.transaction(world.settings) as conn:
            issued = certs.issue(
                conn, world.store, SECRET.encode(), name, pki.Kind.SIGNING, world.out
            )
        cert = x509.load_pem_x509_certificates((world.out / f"{name}.signing.crt").read_bytes())[0]
        key = serialization.load_pem_private_key(
            (world.out / f"{name}.signing.key").read_bytes(), None
        )
        cache[name] = (cert, key, issued.serial)
    return cache[name][0], cache[name][1]


def _envelope(
    world: World,
    server: Server,
    tls_who: str,
    cert: Any,
    key: Any,
    action: str,
    resource: str,
    params: dict[str, Any],
    nonce: str | None = None,
) -> dict[str, str]:
    import base64

    from auth import signed_action

    if nonce is None:
        nonce = world.get(server.port, "/auth/nonce", tls_who, method="POST").json()["nonce"]
    data = signed_action.payload(action, resource, params, nonce, pki.now(), pki.thumbprint(cert))
    return {
        "payload": base64.b64encode(data).decode(),
        "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
        "certificate": pki.pem(cert).decode(),
    }


def _post(world: World, server: Server, who: str, path: str, envelope: dict[str, str]):  # type: ignore[no-untyped-def]
    import json

    return world.get(
        server.port,
        path,
        who,
        method="POST",
        body=json.dumps(envelope).encode(),
        headers={"Content-Type": "application/json"},
    )


def _accounts(world: World) -> int:
    with psycopg.connect(world.settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM account").fetchone()[0]


def test_signed_action_accepted_and_bundle_verifies_offline(
    world: World, server: Server, tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner

    from auth.signed_action import verify_bundle
    from mapserver.cli import main

    from .evidence import checkpoint, trust

    cert, key = _signing(world, "gw-admin")
    params = {"name": "gw-signed", "roles": ["viewer"], "org": "street-001"}
    env = _envelope(world, server, "gw-admin", cert, key, "account.add", "accounts", params)
    reply = _post(world, server, "gw-admin", "/admin/accounts", env)
    assert reply.status == 201, reply.body
    action_id = reply.json()["signed_action"]
    checkpoint(world.settings)  # its entry in the tree, under a signed checkpoint: exportable
    sequenced(world.settings.database_url)
    with psycopg.connect(world.settings.database_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM account WHERE name = 'gw-signed'").fetchone()[0] == 1
        )
        sig_hash = conn.execute(
            "SELECT signature_sha256 FROM signed_action WHERE id = %s", (action_id,)
        ).fetchone()[0]
        audited = conn.execute(
            "SELECT count(*) FROM audit_entry WHERE action = 'account.add'"
            " AND detail ->> 'signature_sha256' = %s",
            (sig_hash,),
        ).fetchone()[0]
    assert audited == 1
    bundle = world.get(server.port, f"/auth/actions/{action_id}/bundle", "gw-officer")
    assert bundle.status == 200
    verified = verify_bundle(bundle.json(), trust(world.settings)).action
    assert verified.action == "account.add" and verified.account == "gw-admin"
    path = tmp_path / "bundle.json"
    path.write_bytes(bundle.body)
    pins = ["--ca", str(world.ca), "--log-key", str(world.settings.pki_dir / "audit-ed25519.pub")]
    ok = CliRunner().invoke(main, ["verify-action", str(path), *pins])
    assert ok.exit_code == 0 and ok.output.startswith("valid: account.add on accounts by gw-admin")
    doc = json.loads(bundle.body)
    raw = bytearray(__import__("base64").b64decode(doc["payload"]))
    raw[raw.index(b"gw-signed")] ^= 1  # one byte changed
    doc["payload"] = __import__("base64").b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(doc))
    bad = CliRunner().invoke(main, ["verify-action", str(path), *pins])
    assert bad.exit_code == 1 and "INVALID" in bad.output
    # Someone else's bundle answers like a missing one: ids reveal nothing.
    assert world.get(server.port, f"/auth/actions/{action_id}/bundle", "gw-bob").status == 404


def test_signed_action_refusals_change_nothing(world: World, server: Server) -> None:
    import base64
    import json

    cert, key = _signing(world, "gw-admin")
    alice_cert, alice_key = _signing(world, "gw-alice")
    params = {"name": "gw-never", "roles": ["viewer"]}
    before = _accounts(world)

    def attempt(envelope: dict[str, str]) -> int:
        return _post(world, server, "gw-admin", "/admin/accounts", envelope).status

    wrong_key = pki.new_key()
    assert (
        attempt(
            _envelope(world, server, "gw-admin", cert, wrong_key, "account.add", "accounts", params)
        )
        == 400
    )
    assert (
        attempt(
            _envelope(
                world, server, "gw-admin", alice_cert, alice_key, "account.add", "accounts", params
            )
        )
        == 403
    )
    altered = _envelope(world, server, "gw-admin", cert, key, "account.add", "accounts", params)
    doc = json.loads(base64.b64decode(altered["payload"]))
    doc["parameters"]["roles"] = ["admin"]
    import rfc8785

    altered["payload"] = base64.b64encode(rfc8785.dumps(doc)).decode()
    assert attempt(altered) == 400
    other_action = _envelope(
        world, server, "gw-admin", cert, key, "account.disable", "accounts", params
    )
    assert attempt(other_action) == 400
    replay = _envelope(
        world,
        server,
        "gw-admin",
        cert,
        key,
        "account.add",
        "accounts",
        {"name": "gw-once", "roles": ["viewer"]},
    )
    assert attempt(replay) == 201
    assert attempt(replay) == 400  # the same nonce again
    nonce = world.get(server.port, "/auth/nonce", "gw-admin", method="POST").json()["nonce"]
    with psycopg.connect(world.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE action_nonce SET expires_at = now() - interval '1 second' WHERE nonce = %s",
            (nonce,),
        )
    assert (
        attempt(
            _envelope(
                world, server, "gw-admin", cert, key, "account.add", "accounts", params, nonce=nonce
            )
        )
        == 400
    )
    # A revoked signing certificate.
    with db.transaction(world.settings) as conn:
        extra = certs.issue(
            conn, world.store, SECRET.encode(), "gw-admin", pki.Kind.SIGNING, world.out / "second"
        )
        certs.revoke(conn, extra.serial, "key_compromise")
    from cryptography import x509

    revoked_cert = x509.load_pem_x509_certificates(
        (world.out / "second" / "gw-admin.signing.crt").read_bytes()
    )[0]
    revoked_key = serialization.load_pem_private_key(
        (world.out / "second" / "gw-admin.signing.key").read_bytes(), None
    )
    assert (
        attempt(
            _envelope(
                world,
                server,
                "gw-admin",
                revoked_cert,
                revoked_key,
                "account.add",
                "accounts",
                params,
            )
        )
        == 400
    )
    assert attempt({"payload": "%%%", "signature": "", "certificate": "x"}) == 400
    # Validly signed, but a display name that is no text (it was stored as its Python repr).
    for shown in (["x"], {"a": 1}, 7, True):
        odd = dict(params, display_name=shown)
        envelope = _envelope(world, server, "gw-admin", cert, key, "account.add", "accounts", odd)
        reply = _post(world, server, "gw-admin", "/admin/accounts", envelope)
        assert reply.status == 400 and "display_name" in reply.json()["message"], reply.body
    assert _accounts(world) == before + 1  # only gw-once, from the one valid request
    with psycopg.connect(world.settings.database_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM account WHERE name = 'gw-never'").fetchone()[0] == 0
        )


def test_sigkill_loses_no_answered_entry(world: World) -> None:
    """Under load from two workers, SIGKILL one: every answered request has its entry."""
    from click.testing import CliRunner

    from mapserver.cli import main

    srv = Server(world.env())
    try:
        srv.wait_ready()
        desc = world.get(srv.port, "/tiles/topo2000", "gw-alice").json()
        level = desc["levels"][-1]
        t = level["tiles"]
        path = f"/tiles/topo2000/{level['level']}/{t['x_min']}/{t['y_min']}.png"
        with Load(lambda n: world.get(srv.port, path, "gw-alice")) as load:
            load.answers_reach(30)
            pids = workers(srv.proc.pid)
            assert len(pids) == 2
            kill(pids[0])
            # Served on after the kill (by the survivor, and the worker gunicorn starts anew).
            load.answers_reach(len(load.answered) + 30)
    finally:
        srv.stop()
    answered = load.answered
    assert len(answered) >= 60
    with psycopg.connect(world.settings.database_url) as conn:
        recorded = {
            r
            for (r,) in conn.execute(
                "SELECT request_id FROM audit_entry WHERE request_id = ANY(%s)", (answered,)
            )
        }
    missing = set(answered) - recorded
    assert not missing, f"{len(missing)} answered requests have no audit entry"
    result = CliRunner().invoke(
        main,
        ["audit", "verify"],
        env={
            "CITYGRID_DATABASE_URL": world.settings.database_url,
            "CITYGRID_DATA_DIR": str(world.settings.data_dir),
        },
    )
    assert result.exit_code == 0, result.output


def test_signed_pki_revocation(world: World, server: Server) -> None:
    from cryptography import x509

    cert, key = _signing(world, "gw-admin")
    bob = x509.load_pem_x509_certificates(world.files["gw-bob"][0].read_bytes())[0]
    serial = format(bob.serial_number, "x")
    assert world.get(server.port, "/auth/whoami", "gw-bob").status == 200
    env = _envelope(
        world,
        server,
        "gw-admin",
        cert,
        key,
        "pki.revoke",
        f"certificate {serial}",
        {"reason": "affiliation_changed"},
    )
    wrong_resource = _post(world, server, "gw-admin", "/admin/certificates/abc/revoke", env)
    assert wrong_resource.status == 400
    env = _envelope(
        world,
        server,
        "gw-admin",
        cert,
        key,
        "pki.revoke",
        f"certificate {serial}",
        {"reason": "affiliation_changed"},
    )
    reply = _post(world, server, "gw-admin", f"/admin/certificates/{serial}/revoke", env)
    assert reply.status == 200 and reply.json()["status"] == "revoked"
    with pytest.raises(REFUSED):
        world.get(server.port, "/auth/whoami", "gw-bob")


def test_bad_input_never_500(world: World, server: Server) -> None:
    """Malformed requests to every kind of endpoint get a 4xx JSON answer."""
    huge = "9" * 30
    cases = [
        ("GET", "/map/identify", "gw-alice"),
        ("GET", "/map/identify?map=topo2000&level=6&x=a&y=1&col=1&row=1", "gw-alice"),
        ("GET", f"/map/identify?map=topo2000&level=6&x={huge}&y=1&col=1&row=1", "gw-alice"),
        ("GET", "/map/identify?map=topo2000&level=6&x=1&y=1&col=999&row=1", "gw-alice"),
        ("GET", f"/auth/actions/{huge}/bundle", "gw-officer"),
        ("GET", "/auth/actions/abc/bundle", "gw-officer"),
        ("GET", f"/audit/proof/inclusion?entry={huge}", "gw-officer"),
        ("GET", "/audit/proof/consistency?from=5&to=2", "gw-officer"),
        ("GET", "/audit/proof/consistency?from=x", "gw-officer"),
        ("GET", "/audit/entries?from=yesterday", "gw-officer"),
        ("GET", "/audit/entries?before=-1", "gw-officer"),
        ("GET", "/audit/export?format=xml", "gw-officer"),
        ("POST", "/auth/signing/enrol", "gw-alice"),
        ("POST", "/admin/accounts/nobody/disable", "gw-admin"),
        ("POST", "/admin/certificates/zz/revoke", "gw-admin"),
        ("DELETE", "/tiles/topo2000", "gw-alice"),
        ("GET", "/tiles/topo2000/%ff%fe/1/1.png", "gw-alice"),
    ]
    for method, path, who in cases:
        reply = world.get(
            server.port,
            path,
            who,
            method=method,
            body=b"{not json" if method == "POST" else None,
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= reply.status < 500, (method, path, reply.status, reply.body[:200])
        assert reply.headers.get("Content-Type", "").startswith("application/json"), path
