"""Helpers shared by the benchmarks: the benchmark database and local ports."""

from __future__ import annotations

import dataclasses
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from mapserver import db, migrate
from mapserver.demo import build_demo
from mapserver.settings import Settings, load


def _named(settings: Settings, database: str) -> Settings:
    url = urlunsplit(urlsplit(settings.database_url)._replace(path=f"/{database}"))
    return dataclasses.replace(settings, database_url=url)


def bench_settings(
    area_km2: float, database: str = "citygrid_bench", fresh: bool = True
) -> Settings:
    """A benchmark database of its own holding a demo district of `area_km2` (kept between
    runs), with a fresh data directory. The run gets a copy of it (`DATABASE_run`, made anew
    from it as a template; `fresh=False`: the kept one): the audit log, cases and whatever
    else a run writes then start alike in every run, rather than from every earlier run's
    (millions of audit entries after a day of runs, which doubled the database's CPU a tile
    in bench/gateway.py)."""
    settings = dataclasses.replace(_named(load(), database), data_dir=Path(tempfile.mkdtemp()))
    db.ensure_database(settings)
    with db.connect(settings) as conn:
        migrate.upgrade(conn, settings)
        row = conn.execute("SELECT ST_Area(geom) / 1e6 FROM district").fetchone()
    if row is None or abs(row[0] - area_km2) > 0.5:
        print(f"building the {area_km2:g} km² demo district …")
        build_demo(settings, area_km2=area_km2, seed=1, progress=False)
    # Each run queues and prunes tens of thousands of audit entries. Where the server runs
    # without autovacuum (as on the project's test machines), the dead rows would pile up
    # from run to run and each run's database work grow with them: vacuumed first, so that
    # runs start alike.
    with db.connect(settings) as conn:
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE) audit_queue, audit_entry, audit_spool, audit_tree")
    return fresh_copy(settings) if fresh else settings


def fresh_copy(settings: Settings) -> Settings:
    """A copy of the kept benchmark database for one run (`DATABASE_run`, made anew from it
    as a template). A bench that fills the kept one first (cases, evaluation) takes
    `bench_settings(..., fresh=False)`, fills it once, then runs on this."""
    kept = urlsplit(settings.database_url).path.lstrip("/")
    run = _named(settings, f"{kept}_run")
    db.drop_database(run)
    with psycopg.connect(db.admin_conninfo(settings), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(f"{kept}_run"), sql.Identifier(kept)
            )
        )
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


class PeerSocket:
    """What a view sees of gunicorn's TLS socket: the peer's verified certificate."""

    def __init__(self, der: bytes):
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self.der


def admin_client(settings: Settings):  # type: ignore[no-untyped-def]
    """The production app, asked in-process by an administrator with a real certificate
    (the TLS handshake itself is measured by bench/gateway.py)."""
    import uuid

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from auth import accounts, certs, pki
    from auth.ca_store import CaStore
    from mapserver import create_app

    secret = b"tile benchmark passphrase"
    store = CaStore(settings.pki_dir)
    if not store.exists():
        store.init(secret)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with db.transaction(settings) as conn:
        accounts.add(conn, name, ["admin"])
        certs.issue(conn, store, secret, name, pki.Kind.PERSON, settings.data_dir)
        certs.publish_crl(conn, store, secret)
    cert = x509.load_pem_x509_certificate((settings.data_dir / f"{name}.crt").read_bytes())
    settings = dataclasses.replace(settings, rate_limit_tiles="*=10000000/hour")
    client = create_app(settings).test_client()
    client.environ_base.update(
        {"REMOTE_ADDR": "127.0.0.1", "gunicorn.socket": PeerSocket(cert.public_bytes(Encoding.DER))}
    )
    return client
