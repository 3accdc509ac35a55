"""The second deployment shape: nginx verifies the client certificate and forwards it; the
app trusts the forwarded header only from the configured proxy address."""

from __future__ import annotations

import dataclasses
import http.client
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.serve import prepare_tls
from mapserver.settings import Settings

from .tls import REFUSED, Server, free_port, request

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SECRET = "nginx test passphrase"
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")


def plain_get(port: int, path: str, source: str, headers: dict[str, str]) -> int:
    """A plain-HTTP request to the app from a chosen loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def front(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("nginx")
    settings = dataclasses.replace(demo_settings, data_dir=tmp / "var")
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    out = tmp / "certs"
    with db.transaction(settings) as conn:
        accounts.add(conn, "ng-viewer", ["viewer"], "street-001")
        certs.issue(conn, store, SECRET.encode(), "ng-viewer", pki.Kind.PERSON, out)
    import os

    os.environ["CITYGRID_CA_PASSPHRASE"] = SECRET
    try:
        prepare_tls(settings, "127.0.0.1")
    finally:
        del os.environ["CITYGRID_CA_PASSPHRASE"]
    app_port, tls_port = free_port(), free_port()
    conf = subprocess.run(
        [
            str(REPO / "deploy/nginx/render.sh"),
            f"127.0.0.1:{tls_port}",
            "127.0.0.1",
            str(settings.pki_dir),
            f"127.0.0.1:{app_port}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tmp / "citygrid.conf").write_text(conf)
    (tmp / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/citygrid.conf;
}}
"""
    )
    nginx = subprocess.Popen(
        [NGINX, "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"], stderr=subprocess.PIPE
    )
    app = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_TRUSTED_PROXIES": "127.0.0.1/32",
        },
        extra_args=["--behind-nginx"],
        port=app_port,
    )
    try:
        app.wait_ready()
        time.sleep(0.5)
        assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else ""
        yield {
            "tls_port": tls_port,
            "app_port": app_port,
            "ca": store.cert_path,
            "cert": out / "ng-viewer.crt",
            "key": out / "ng-viewer.key",
        }
    finally:
        app.stop()
        nginx.terminate()
        nginx.wait(10)


def test_certificate_forwarded_by_nginx(front: dict) -> None:  # type: ignore[type-arg]
    reply = request(front["tls_port"], "/auth/whoami", front["ca"], front["cert"], front["key"])
    assert reply.status == 200 and reply.json()["account"] == "ng-viewer"
    # nginx answers a request without a certificate itself (400); it never reaches the app.
    try:
        status = request(front["tls_port"], "/auth/whoami", front["ca"]).status
    except REFUSED:
        status = 0
    assert status in (0, 400)


def test_forged_header_from_a_non_proxy_address_is_refused(front: dict) -> None:  # type: ignore[type-arg]
    forged = {"X-SSL-Client-Cert": quote(Path(front["cert"]).read_text())}
    assert plain_get(front["app_port"], "/auth/whoami", "127.0.0.2", forged) == 403
    assert plain_get(front["app_port"], "/auth/whoami", "127.0.0.2", {}) == 401
    # The same header from the proxy's address is believed (that is what nginx sends).
    assert plain_get(front["app_port"], "/auth/whoami", "127.0.0.1", forged) == 200
    garbage = {"X-SSL-Client-Cert": "not%20a%20certificate"}
    assert plain_get(front["app_port"], "/auth/whoami", "127.0.0.1", garbage) == 401


def test_behind_nginx_refuses_public_bind(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    result = CliRunner().invoke(
        main,
        ["serve", "--behind-nginx", "--bind", "0.0.0.0:8000"],
        env={"CITYGRID_TRUSTED_PROXIES": "127.0.0.1", "CITYGRID_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1 and "loopback" in result.output
    result = CliRunner().invoke(
        main,
        ["serve", "--behind-nginx", "--bind", "127.0.0.1:8000"],
        env={"CITYGRID_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1 and "CITYGRID_TRUSTED_PROXIES" in result.output
