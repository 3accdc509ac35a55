"""`citygrid serve`: prepare the TLS files from CityGrid's CA, then run gunicorn."""

from __future__ import annotations

import grp
import os
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

from auth import ca_store, certs, pki, renewal, signer
from auth.ca_store import CaStore
from mapserver import db
from mapserver.errors import CityGridError
from mapserver.settings import Settings

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn" / "citygrid.conf.py"


class TlsFiles(NamedTuple):
    cert: Path
    key: Path
    ca: Path
    crl: Path


def split_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise CityGridError(f"--bind must be HOST:PORT, got {bind!r}")
    return host.strip("[]"), int(port)


def prepare_tls(settings: Settings, host: str) -> TlsFiles:
    """The server certificate for `host` (issued on first use) and a current CRL."""
    store = CaStore(settings.pki_dir)
    if not store.exists():
        raise CityGridError("no CA yet: run `citygrid pki init` first")
    server_dir = settings.pki_dir / "server"
    cert, key = server_dir / f"{host}.crt", server_dir / f"{host}.key"
    need_cert = not (cert.exists() and key.exists()) or _expiring(cert)
    need_crl = renewal.crl_due(store.crl(), pki.now())
    if (
        need_crl
        and not need_cert
        and not _has_passphrase()
        and signer.running(settings.signer_socket_path)
    ):
        signer.publish_crl(settings, "")  # a production install: the signer holds the key
        need_crl = False
    if need_cert or need_crl:
        secret = ca_store.passphrase()
        with db.transaction(settings) as conn:
            if need_cert:
                certs.issue(conn, store, secret, host, pki.Kind.SERVER, server_dir)
            if need_crl:
                certs.publish_crl(conn, store, secret)
    return TlsFiles(cert, key, store.cert_path, store.crl_path)


def _has_passphrase() -> bool:
    return bool(
        os.environ.get(ca_store.PASSPHRASE_ENV) or os.environ.get(ca_store.PASSPHRASE_FILE_ENV)
    )


def _expiring(cert_path: Path) -> bool:
    import datetime as dt

    from cryptography import x509

    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    return cert.not_valid_after_utc - pki.now() < dt.timedelta(days=7)


def run(
    settings: Settings,
    bind: str,
    workers: int,
    threads: int,
    behind_nginx: bool = False,
    socket_group: str = "www-data",
) -> None:
    """Replace this process with gunicorn serving CityGrid over mTLS (or, behind nginx,
    plain HTTP on a Unix socket that only nginx's group may open)."""
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    # gunicorn never gets the CA passphrase: only the signer process (and the CLI) use it.
    hidden = (ca_store.PASSPHRASE_ENV, ca_store.PASSPHRASE_FILE_ENV)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_TLS_") and k not in hidden
    }
    env.update(
        CITYGRID_TLS_BIND=bind,
        CITYGRID_TLS_WORKERS=str(workers),
        CITYGRID_TLS_THREADS=str(threads),
    )
    if behind_nginx:
        socket_path = unix_socket(bind)
        try:
            grp.getgrnam(socket_group)
        except KeyError:
            raise CityGridError(f"--socket-group: no group {socket_group!r} (nginx's)") from None
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        env.update(CITYGRID_TLS_BEHIND_NGINX="1", CITYGRID_TLS_SOCKET_GROUP=socket_group)
    else:
        host, _ = split_bind(bind)
        files = prepare_tls(settings, host)
        env.update(
            CITYGRID_TLS_CERT=str(files.cert),
            CITYGRID_TLS_KEY=str(files.key),
            CITYGRID_TLS_CA=str(files.ca),
            CITYGRID_TLS_CRL=str(files.crl),
        )
    os.execvpe(gunicorn, [gunicorn, "-c", str(GUNICORN_CONF), "mapserver:create_app()"], env)


def unix_socket(bind: str) -> Path:
    """Behind nginx the app listens on a Unix socket only: a TCP port, even on loopback,
    would let any local process claim any certificate in the forwarded header."""
    if not bind.startswith("unix:") or not bind[len("unix:") :].startswith("/"):
        raise CityGridError(
            "--behind-nginx listens on a Unix socket only: --bind unix:/ABSOLUTE/PATH.sock"
        )
    return Path(bind[len("unix:") :])
