"""Two zones as separate processes, for tests and benches: the renderer service inside
(`citygrid renderer serve`) and the gateway outside (`citygrid serve` with renderer_url),
each under real gunicorn TLS with its own data directory, settings and database."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.settings import Settings
from tiles import grant as grants

from .conftest import demo_database, empty_database
from .output import Output
from .tls import REFUSED, Server, _stop, free_port, request

SECRET = b"two zones test passphrase"


class Zones(NamedTuple):
    map_db: Settings  # the renderer's
    gateway_db: Settings
    renderer_port: int
    gateway_port: int
    tile_port: int  # the renderer's tile channel (0: none)
    ca: Path
    person: tuple[Path, Path]  # an operator's browser certificate (every street, 1:500)
    service: tuple[Path, Path]  # the gateway's service certificate
    grant_key: Path  # the gateway's grant signing key
    sequencers: tuple[int, ...] = ()  # pids of the sequencer services (renderer's, gateway's)


def _wait_answering(
    proc: subprocess.Popen[bytes],
    output: Output,
    port: int,
    ca: Path,
    cert: tuple[Path, Path],
    timeout: float = 90,
) -> None:
    """Until the renderer answers over TLS (any status: its workers have booted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(output.text() or "renderer died")
        try:
            request(port, "/", ca, *cert)
            return
        except REFUSED:
            time.sleep(0.2)
    raise TimeoutError("renderer did not start")


def _admit_map_role_only(url: str) -> None:
    """The map database admits the map role, the audit writer role (the renderer's own
    audit), the component editor role (a bureau's changes, applied there) and its owner
    only: no other role connects."""
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'REVOKE CONNECT ON DATABASE "{dbname}" FROM PUBLIC')
        granted = conn.execute(
            "SELECT DISTINCT r.rolname FROM pg_database d, aclexplode(d.datacl) a"
            " JOIN pg_roles r ON r.oid = a.grantee"
            " WHERE d.datname = %s AND a.grantee <> d.datdba",
            (dbname,),
        ).fetchall()
        for (role,) in granted:
            conn.execute(f'REVOKE ALL ON DATABASE "{dbname}" FROM "{role}"')
        conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO citygrid_map')
        conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO citygrid_audit')
        conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO citygrid_component')


def _sequencer(settings: dict[str, str], url: str, *args: str) -> subprocess.Popen[bytes]:
    """`citygrid audit sequencer` with a zone's `settings`, once it leads the log at `url`."""
    from .load import sequencer_leader

    service = subprocess.Popen(
        [sys.executable, "-m", "mapserver.cli", "audit", "sequencer", *args],
        env={"PATH": "/usr/bin:/bin", **settings},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        if sequencer_leader(url) != service.pid:
            raise RuntimeError(f"another process leads the audit sequencer of {url}")
    except BaseException:
        _stop(service)
        raise
    return service


@contextlib.contextmanager
def two_zones(
    tmp: Path,
    isolate: bool = True,
    gateway_env: dict[str, str] | None = None,
    renderer_env: dict[str, str] | None = None,
    tile_channel: bool = True,
    sequencers: bool = False,
) -> Iterator[Zones]:
    """The renderer (on a 1 km² demo map database) and the gateway (on an empty database of
    its own), each a real gunicorn TLS server with its own settings, started and stopped.
    `isolate`: the map database admits the map role and its owner only. `renderer_env` adds
    settings of the renderer's (a shared tile store, say). `sequencers`: each zone's audit
    sequencer runs as its own service, as deployed (citygrid-renderer-sequencer.service,
    citygrid-sequencer.service), leading before the servers start; else a serving process
    leads."""
    inside, outside = tmp / "renderer-zone", tmp / "gateway-zone"
    map_db = demo_database("citygrid_zone_map", inside / "var")
    gateway_db = empty_database("citygrid_zone_gw", outside / "var")
    renderer = gateway = None
    services: list[subprocess.Popen[bytes]] = []
    try:
        if isolate:
            _admit_map_role_only(map_db.database_url)
        # CityGrid's CA and its records live with the gateway (the CA key with its signer).
        store = CaStore(gateway_db.pki_dir)
        store.init(SECRET)
        people, service_dir = outside / "people", gateway_db.pki_dir / "service"
        people.mkdir(parents=True)
        with db.transaction(gateway_db) as conn:
            accounts.add(conn, "zone-operator", ["operator"], None)
            certs.issue(conn, store, SECRET, "zone-operator", pki.Kind.PERSON, people)
            certs.issue(conn, store, SECRET, "gateway", pki.Kind.SERVICE, service_dir)
            certs.issue(
                conn, store, SECRET, "127.0.0.1", pki.Kind.SERVER, gateway_db.pki_dir / "server"
            )
            certs.issue(conn, store, SECRET, "127.0.0.1", pki.Kind.SERVER, inside / "server")
            certs.publish_crl(conn, store, SECRET)
        grant_key, grant_pub = grants.make_keys(gateway_db.pki_dir / "grant")
        # What the renderer zone is given: the CA's certificate and CRL, its server
        # certificate, the grant's public key. No CA key, no passphrase.
        pki_in = map_db.pki_dir
        (pki_in / "server").mkdir(parents=True)
        (pki_in / "grant").mkdir()
        shutil.copy(store.cert_path, pki_in / store.cert_path.name)
        shutil.copy(store.crl_path, pki_in / store.crl_path.name)
        for suffix in ("crt", "key"):
            shutil.copy(inside / "server" / f"127.0.0.1.{suffix}", pki_in / "server")
        shutil.copy(grant_pub, pki_in / "grant" / "grant.pub")

        renderer_port, tile_port = free_port(), free_port() if tile_channel else 0
        tile_bind = f"127.0.0.1:{tile_port}" if tile_port else "off"
        renderer_settings = {
            "CITYGRID_DATABASE_URL": map_db.database_url,
            "CITYGRID_DATA_DIR": str(map_db.data_dir),
            **(renderer_env or {}),
        }
        gateway_settings = {
            "CITYGRID_DATABASE_URL": gateway_db.database_url,
            "CITYGRID_DATA_DIR": str(gateway_db.data_dir),
            "CITYGRID_RENDERER_URL": f"https://127.0.0.1:{renderer_port}",
            "CITYGRID_RENDERER_TILE_URL": f"https://127.0.0.1:{tile_port}" if tile_port else "",
            **(gateway_env or {}),
        }
        if sequencers:
            services.append(_sequencer(renderer_settings, map_db.database_url, "--renderer"))
            services.append(_sequencer(gateway_settings, gateway_db.database_url))
        renderer_output = Output()
        renderer = subprocess.Popen(
            [sys.executable, "-m", "mapserver.cli", "renderer", "serve",
             "--bind", f"127.0.0.1:{renderer_port}", "--tile-bind", tile_bind,
             "--workers", "1", "--threads", "4"],
            env={"PATH": "/usr/bin:/bin", **renderer_settings},
            stdout=subprocess.DEVNULL,
            stderr=renderer_output.file,
            start_new_session=True,
        )  # fmt: skip
        service = (service_dir / "gateway.crt", service_dir / "gateway.key")
        _wait_answering(renderer, renderer_output, renderer_port, store.cert_path, service)
        gateway = Server(gateway_settings, workers=1)
        gateway.wait_ready()
        yield Zones(
            map_db, gateway_db, renderer_port, gateway.port, tile_port, store.cert_path,
            (people / "zone-operator.crt", people / "zone-operator.key"),
            (service_dir / "gateway.crt", service_dir / "gateway.key"), grant_key,
            tuple(service.pid for service in services),
        )  # fmt: skip
    finally:
        if gateway is not None:
            gateway.stop()
        if renderer is not None:
            _stop(renderer)
        for service in services:
            _stop(service)
        db.drop_database(gateway_db)
        db.drop_database(map_db)


def thumbprint_of(cert: Path) -> str:
    """The SHA-256 of the certificate in the PEM file `cert` (what a grant is bound to)."""
    from cryptography import x509

    return pki.thumbprint(x509.load_pem_x509_certificates(cert.read_bytes())[0])


def sign_grant(z: Zones, grant: grants.Grant, cert: Path | None = None, **kw: object) -> str:
    """`grant` signed with the gateway's grant key, bound to `cert` (default: the gateway's
    service certificate); `kw`: tiles.grant.sign's lifetime and now."""
    key = grants.load_private(z.grant_key)
    return grants.sign(key, grant, thumbprint_of(cert or z.service[0]), **kw)  # type: ignore[arg-type]


def grant_refusals(
    z: Zones, level: int, other: Path
) -> list[tuple[str | None, tuple[Path, Path] | None, int, str]]:
    """What the renderer must refuse for a 1:500 tile of `level`, each as (grant, the
    certificate to present if not the gateway's, status, words of the reason): no grant,
    expired, signed with another key (a key pair is made in `other`), bound to another
    certificate, presented by a person, another level, another map, another street."""
    import time

    ok = grants.Grant("zone-operator", ("topo500",), level, None)
    other_key = grants.load_private(grants.make_keys(other)[0])
    return [
        (None, None, 401, "a grant is required"),
        (sign_grant(z, ok, lifetime=60, now=time.time() - 120), None, 401, "expired"),
        (grants.sign(other_key, ok, thumbprint_of(z.service[0])), None, 401, "bad_signature"),
        (sign_grant(z, ok, cert=z.person[0]), None, 401, "wrong_binding"),
        (sign_grant(z, ok, cert=z.person[0]), z.person, 403, "not a service"),
        (sign_grant(z, ok._replace(level=level - 1)), None, 403, "map and level"),
        (sign_grant(z, ok._replace(products=("topo2000",))), None, 403, "map and level"),
        (sign_grant(z, ok._replace(streets=frozenset({"999999999"}))), None, 403, "streets"),
    ]


def renderer_entries(z: Zones, since: int) -> list[dict[str, object]]:
    """The renderer's audit entries from leaf `since` on, once sequenced into its tree."""
    from .sequenced import sequenced

    sequenced(z.map_db.database_url)
    with psycopg.connect(z.map_db.database_url) as conn:
        rows = conn.execute(
            "SELECT action, outcome, status, account, cert_sha256, resource, detail, at"
            " FROM audit_entry WHERE leaf_index >= %s ORDER BY leaf_index",
            (since,),
        ).fetchall()
    keys = ("action", "outcome", "status", "account", "cert_sha256", "resource", "detail", "at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def tile_answers(
    entries: list[dict[str, object]], since: dt.datetime | None = None
) -> list[dict[str, object]]:
    """The tiles the renderer's run entries (tiles.tile_runs) record, one mapping per answer:
    the run entry's own fields with the answer's path as `resource` and its `status`; with
    `since`, only the answers given from then on (a run of an earlier test may be logged
    after a test has begun, and hold answers of both)."""
    from tiles import tile_runs

    found = []
    for e in entries:
        if e["action"] != tile_runs.ACTION:
            continue
        detail, at = e["detail"], e.get("at")
        assert isinstance(detail, dict)
        for answer in tile_runs.answers(detail):
            if since is not None:
                assert isinstance(at, dt.datetime)
                if at + dt.timedelta(microseconds=answer["after_us"]) < since:
                    continue
            found.append({**e, "resource": answer["path"], "status": answer["status"],
                          "answer": answer})  # fmt: skip
    return found


def renderer_log_size(z: Zones) -> int:
    """How many entries the renderer's tree holds, once what is queued is sequenced."""
    from .sequenced import sequenced

    sequenced(z.map_db.database_url)
    with psycopg.connect(z.map_db.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_entry").fetchone()
    return int(row[0]) if row else 0
