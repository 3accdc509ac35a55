"""The second deployment shape: nginx verifies the client certificate and forwards it over
a Unix socket only nginx's group may open; the app believes the forwarded header there and
nowhere else, refuses what nginx refused with a JSON error and an audit entry, and follows
the register (disable, revoke) from the next request on."""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.serve import prepare_tls
from mapserver.settings import Settings

from .admin_key import admin_env
from .nginx_front import GROUP, NGINX_MISSING, App, Nginx, render
from .nginx_front import tls_get as nginx_get
from .sequenced import sequenced
from .tls import Reply, Server, free_port, request

IN_CI = os.environ.get("CI", "").lower() == "true"
SECRET = "nginx test passphrase"

# In CI a missing nginx is a failure (the fixture says so), never a silent skip.
pytestmark = pytest.mark.skipif(NGINX_MISSING and not IN_CI, reason="nginx is not installed")


def tls_get(
    port: int,
    path: str,
    front: dict[str, Any],
    who: str | None,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> Reply:
    """An HTTPS request to nginx with `who`'s certificate, from a chosen loopback source."""
    out = front["out"]
    cert, key = (out / f"{who}.crt", out / f"{who}.key") if who else (None, None)
    return nginx_get(port, path, front["ca"], cert, key, source, headers)


def _write_key(out: Path, name: str, cert: Any, key: Any) -> None:
    (out / f"{name}.crt").write_bytes(pki.pem(cert))
    (out / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _people(settings: Settings, store: CaStore, out: Path) -> dict[str, str]:
    """Accounts and certificates for every case; returns serials by name."""
    serials = {}
    secret = SECRET.encode()
    with db.transaction(settings) as conn:
        for name, role in [
            ("ng-viewer", "viewer"),
            ("ng-admin", "admin"),
            ("ng-revoked", "viewer"),
            ("ng-late", "viewer"),
            ("ng-dave", "viewer"),
            ("ng-expired", "viewer"),
            ("ng-server", "viewer"),
        ]:
            accounts.add(conn, name, [role], "street-001" if role == "viewer" else None)
            if name in ("ng-expired", "ng-server"):
                key = pki.new_key()
                ca_key, ca_cert = store.key(secret), store.certificate()
                if name == "ng-expired":
                    long_ago = pki.now() - dt.timedelta(days=400)
                    cert = pki.issue(
                        ca_key, ca_cert, key.public_key(), pki.Kind.PERSON, name, 30, long_ago
                    )
                    kind = pki.Kind.PERSON
                else:
                    cert = pki.issue(ca_key, ca_cert, key.public_key(), pki.Kind.SERVER, name)
                    kind = pki.Kind.SERVER
                certs.register(conn, cert, kind, accounts.get(conn, name).id)
                _write_key(out, name, cert, key)
                serials[name] = format(cert.serial_number, "x")
            else:
                issued = certs.issue(conn, store, secret, name, pki.Kind.PERSON, out)
                serials[name] = issued.serial
        certs.revoke(conn, serials["ng-revoked"], "key_compromise")
        certs.publish_crl(conn, store, secret)
    return serials


@pytest.fixture(scope="module")
def front(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[type-arg]
    if NGINX_MISSING:
        pytest.fail("nginx is not installed; CI requires the nginx tests to run")
    tmp = tmp_path_factory.mktemp("nginx")
    # nginx's workers send cached tiles from the data directory: it must be traversable by
    # them (pytest's is 0700); the files in it keep their own modes (keys 0600).
    data_dir = Path(tempfile.mkdtemp(prefix="citygrid-ng-var-"))
    data_dir.chmod(0o711)
    settings = dataclasses.replace(demo_settings, data_dir=data_dir)
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    out = tmp / "certs"
    out.mkdir()
    serials = _people(settings, store, out)
    os.environ["CITYGRID_CA_PASSPHRASE"] = SECRET
    try:
        prepare_tls(settings, "127.0.0.1")
    finally:
        del os.environ["CITYGRID_CA_PASSPHRASE"]
    # The socket's directory must be traversable by nginx's workers (pytest's is 0700).
    sock_dir = Path(tempfile.mkdtemp(prefix="citygrid-ng-"))
    sock_dir.chmod(0o711)
    sock = sock_dir / "app.sock"
    tls_port = free_port()
    conf = render(f"127.0.0.1:{tls_port}", "127.0.0.1", settings.pki_dir, [sock], settings.tile_dir)
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
    }
    app = App(env, sock)
    nginx = Nginx(tmp, conf, tls_port)
    try:
        app.wait_ready()
        nginx.wait_ready()
        yield {
            "tls_port": tls_port,
            "sock": sock,
            "ca": store.cert_path,
            "out": out,
            "serials": serials,
            "settings": settings,
            "env": env,
        }
    finally:
        app.stop()
        nginx.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def _last_entry(front: dict) -> int:  # type: ignore[type-arg]
    sequenced(front["settings"].database_url)
    with psycopg.connect(front["settings"].database_url) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM audit_entry").fetchone()[0])  # type: ignore[index]


def _entries(front: dict, after: int) -> list[dict]:  # type: ignore[type-arg]
    sequenced(front["settings"].database_url)
    with psycopg.connect(front["settings"].database_url) as conn:
        rows = conn.execute(
            "SELECT action, outcome, client_addr, account, detail FROM audit_entry"
            " WHERE id > %s ORDER BY id",
            (after,),
        ).fetchall()
    names = ("action", "outcome", "client_addr", "account", "detail")
    return [dict(zip(names, r, strict=True)) for r in rows]


def test_certificate_forwarded_by_nginx_and_real_client_address(front: dict) -> None:  # type: ignore[type-arg]
    since = _last_entry(front)
    reply = tls_get(
        front["tls_port"],
        "/auth/whoami",
        front,
        "ng-viewer",
        source="127.0.0.2",
        headers={"X-Real-IP": "10.9.9.9", "X-SSL-Client-Verify": "SUCCESS"},
    )
    assert reply.status == 200 and reply.json()["account"] == "ng-viewer"
    entries = [e for e in _entries(front, since) if e["account"] == "ng-viewer"]
    # The audit names the real client (nginx's X-Real-IP), not the socket nor a client's claim.
    assert [e["client_addr"] for e in entries] == ["127.0.0.2"]


def test_the_socket_is_for_nginx_only(front: dict) -> None:  # type: ignore[type-arg]
    """Only the app's user and nginx's group may open the socket: another local user who
    holds the admin's public certificate cannot even connect, let alone send it."""
    st = front["sock"].stat()
    assert st.st_mode & 0o777 == 0o660 and st.st_gid == grp.getgrnam(GROUP).gr_gid
    admin_pem = quote((front["out"] / "ng-admin.crt").read_text())
    forged = (
        f"GET /auth/whoami HTTP/1.0\r\nX-SSL-Client-Cert: {admin_pem}\r\n"
        "X-SSL-Client-Verify: SUCCESS\r\nX-Real-IP: 127.0.0.1\r\n\r\n"
    ).encode()
    daemon = pwd.getpwnam("daemon")
    assert _connect_as(daemon.pw_uid, daemon.pw_gid, [], front["sock"], forged) == 13
    # Put in nginx's group, the same user gets through: the refusal above is the socket's.
    nginx_gid = grp.getgrnam(GROUP).gr_gid
    assert _connect_as(daemon.pw_uid, daemon.pw_gid, [nginx_gid], front["sock"], forged) == 0


def test_what_the_apps_workers_refuse_themselves_is_json_and_audited(front: dict) -> None:  # type: ignore[type-arg]
    """Behind nginx the app runs gunicorn's sync worker (auth/sync_worker.py): a request
    gunicorn refuses before the app (here a request line past its limit, as a local process
    in nginx's group might send) gets the app's JSON problem, its security headers and no
    Server header, and an `http.refused` entry committed before the answer."""
    since = _last_entry(front)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(front["sock"]))
        conn.sendall(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert lines[0].startswith("HTTP/1.1 414"), lines[0]
    assert headers["Content-Type"] == "application/json" and "Server" not in headers
    assert headers["X-Frame-Options"] == "DENY"
    assert json.loads(body)["error"] == "uri_too_long" and b"aaaa" not in body
    refusals = [e for e in _entries(front, since) if e["action"] == "http.refused"]
    assert [e["detail"]["reason"] for e in refusals] == ["uri_too_long"]


def _connect_as(uid: int, gid: int, groups: list[int], sock: Path, payload: bytes) -> int:
    """Exit status of a forked child that drops to uid/gid and sends `payload` to `sock`:
    13 if the socket refused it, 0 if it was sent."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                s.sendall(payload)
                s.recv(100)
            code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_direct_tls_never_believes_the_header(front: dict) -> None:  # type: ignore[type-arg]
    """Without nginx the forwarded header is refused, even from loopback and even from a
    client with a valid certificate of its own."""
    settings = front["settings"]
    srv = Server(front["env"], workers=1)
    try:
        srv.wait_ready()
        admin_pem = quote((front["out"] / "ng-admin.crt").read_text())
        out = front["out"]
        reply = request(
            srv.port,
            "/auth/whoami",
            settings.pki_dir / "ca.crt",
            out / "ng-viewer.crt",
            out / "ng-viewer.key",
            headers={"X-SSL-Client-Cert": admin_pem, "X-SSL-Client-Verify": "SUCCESS"},
        )
        assert reply.status == 403 and reply.json()["error"] == "forbidden"
        plain = request(
            srv.port,
            "/auth/whoami",
            settings.pki_dir / "ca.crt",
            out / "ng-viewer.crt",
            out / "ng-viewer.key",
        )
        assert plain.status == 200 and plain.json()["account"] == "ng-viewer"
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        (None, "no_certificate"),
        ("ng-expired", "expired"),
        ("ng-revoked", "revoked"),
        ("ng-server", "not_client_certificate"),
    ],
)
def test_what_nginx_refuses_the_app_refuses_as_json_and_audits(
    front: dict,  # type: ignore[type-arg]
    who: str | None,
    reason: str,
) -> None:
    since = _last_entry(front)
    reply = tls_get(front["tls_port"], "/auth/whoami", front, who)
    assert reply.status == 401, reply.body[:200]
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"] == "unauthenticated"
    refusals = [e for e in _entries(front, since) if e["action"] == "auth.refused"]
    assert [e["detail"]["reason"] for e in refusals] == [reason]
    detail = refusals[0]["detail"]
    if who:  # who was refused: the certificate's subject, serial and thumbprint
        assert detail["cert_serial"] == front["serials"][who]
        assert who in detail["cert_subject"] and len(detail["cert_sha256"]) == 64


def _cli(front: dict, *args: str) -> None:  # type: ignore[type-arg]
    env = {**os.environ, **front["env"], "CITYGRID_CA_PASSPHRASE": SECRET}
    env = admin_env(env, "ng-root")  # account and certificate acts are signed
    subprocess.run(
        [sys.executable, "-m", "mapserver.cli", *args], env=env, check=True, capture_output=True
    )


def test_disable_and_revoke_refused_from_the_next_request(front: dict) -> None:  # type: ignore[type-arg]
    """No request is accepted after `account disable` / `pki revoke` return, although
    nginx still has the old CRL and the app's identity cache had the answer."""
    for who in ("ng-dave", "ng-late"):
        for _ in range(2):  # the second answer comes from the identity cache
            assert tls_get(front["tls_port"], "/auth/whoami", front, who).status == 200
    _cli(front, "account", "disable", "ng-dave")
    reply = tls_get(front["tls_port"], "/auth/whoami", front, "ng-dave")
    assert reply.status == 401 and "account_disabled" in reply.json()["message"]
    _cli(front, "pki", "revoke", front["serials"]["ng-late"])
    reply = tls_get(front["tls_port"], "/auth/whoami", front, "ng-late")
    assert reply.status == 401 and "revoked" in reply.json()["message"]


def test_refused_token_names_the_failed_check(front: dict) -> None:  # type: ignore[type-arg]
    since = _last_entry(front)
    reply = tls_get(
        front["tls_port"],
        "/auth/whoami",
        front,
        "ng-viewer",
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert reply.status == 401
    [entry] = [e for e in _entries(front, since) if e["action"] == "auth.refused"]
    assert entry["detail"]["reason"] == "bad_token" and entry["detail"]["check"] == "malformed"
    assert entry["detail"]["cert_serial"] == front["serials"]["ng-viewer"]


def test_behind_nginx_refuses_a_tcp_bind(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    for bind in ("0.0.0.0:8000", "127.0.0.1:8000", "unix:relative.sock"):
        result = CliRunner().invoke(
            main,
            ["serve", "--behind-nginx", "--bind", bind],
            env={"CITYGRID_DATA_DIR": str(tmp_path)},
        )
        assert result.exit_code == 1 and "Unix socket" in result.output, result.output


def test_tiles_are_sent_by_nginx_after_the_app_authorised_and_audited(front: dict) -> None:  # type: ignore[type-arg]
    """The app answers X-Accel-Redirect to nginx's internal location: nginx sends the cached
    file, with the app's ETag and security headers; the internal location is not reachable
    from outside, a refused request gets no bytes, and every answer is audited."""
    from tiles.cache import ETAG_XATTR

    desc = tls_get(front["tls_port"], "/tiles/topo2000", front, "ng-viewer").json()
    level = desc["levels"][-1]
    t = level["tiles"]
    rel = f"topo2000/{level['level']}/{t['x_min']}/{t['y_min']}.png"
    since = _last_entry(front)
    first = tls_get(front["tls_port"], f"/tiles/{rel}", front, "ng-viewer")
    assert first.status == 200 and first.headers["Content-Type"] == "image/png"
    stored = front["settings"].tile_dir / rel
    assert first.body == stored.read_bytes()  # sent by nginx from the cache file
    etag = os.getxattr(stored, ETAG_XATTR).decode()
    assert first.headers["ETag"] == f'"{etag}"'
    assert "X-Accel-Redirect" not in first.headers
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    assert first.headers["Cache-Control"].startswith("private")
    assert len(first.headers["X-Request-Id"]) == 32
    same = {"If-None-Match": f'"{etag}"'}
    again = tls_get(front["tls_port"], f"/tiles/{rel}", front, "ng-viewer", headers=same)
    assert again.status == 304 and again.body == b""
    inside = tls_get(front["tls_port"], f"/_citygrid_tiles/{rel}", front, "ng-admin")
    assert inside.status == 404 and inside.body != stored.read_bytes()
    refused = tls_get(front["tls_port"], f"/tiles/{rel}", front, "ng-revoked")
    assert refused.status in (400, 401, 403) and refused.headers["Content-Type"] != "image/png"
    entries = _entries(front, since)
    served = [e for e in entries if e["action"] == "tiles.read"]
    assert [e["outcome"] for e in served] == ["ok", "ok"]
    with psycopg.connect(front["settings"].database_url) as conn:
        sizes = conn.execute(
            "SELECT status, bytes FROM audit_entry WHERE id > %s AND action = 'tiles.read'",
            (since,),
        ).fetchall()
    # Each worker ships its own spool: entries of two workers reach the tree in either order.
    assert sorted(sizes) == [(200, len(first.body)), (304, 0)]


@pytest.mark.parametrize(
    ("method", "path", "mib", "status"),
    [
        ("POST", "/cases/record", 2, 413),  # past nginx's 1 MiB for every route but those below
        ("POST", "/cases/attachments", 9, 413),  # past its 8 MiB
        ("POST", "/cases/attachments", 7, 403),  # within it: the app's answer (a viewer)
        ("POST", "/components/imports", 12, 403),  # within its 16 MiB: the app's answer
        ("POST", "/exchange/receive", 6, 403),  # within its 8 MiB
        ("PUT", "/exchange/files/" + "0" * 64, 7, 403),  # within its 8 MiB
        ("PUT", "/exchange/files/" + "0" * 64, 9, 413),
    ],
)
def test_a_body_past_the_fronts_limit_is_refused_as_json(
    front: dict,  # type: ignore[type-arg]
    method: str,
    path: str,
    mib: int,
    status: int,
) -> None:
    """A bureau's bulk import and the exchange peer's bundles take more than the 1 MiB nginx
    allows elsewhere (they were refused by nginx, as HTML); what nginx refuses as too large
    is JSON."""
    out = front["out"]
    reply = request(
        front["tls_port"], path, front["ca"], out / "ng-viewer.crt", out / "ng-viewer.key",
        method=method, headers={"Content-Type": "application/octet-stream"},
        body=b"x" * (mib << 20),
    )  # fmt: skip
    assert reply.status == status, reply.body[:200]
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"] == ("too_large" if status == 413 else "forbidden")
