"""The nginx front for tests: gateways (`citygrid serve --behind-nginx` on Unix sockets) and
one nginx rendered from deploy/nginx's template in front of them, all real processes."""

from __future__ import annotations

import grp
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .output import Output
from .tls import Reply

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_MISSING = not Path(NGINX).exists()
REPO = Path(__file__).resolve().parent.parent
GROUP = "nogroup"  # nginx's workers run as nobody:nogroup here


class App:
    """`citygrid serve --behind-nginx` on a Unix socket, in its own process group."""

    def __init__(self, env: Mapping[str, str], sock: Path, workers: int = 2):
        self.sock = sock
        command = [sys.executable, "-m", "mapserver.cli", "serve", "--behind-nginx"]
        command += ["--bind", f"unix:{sock}", "--socket-group", GROUP, "--workers", str(workers)]
        command += ["--threads", "4"]
        self.output = Output()
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=self.output.file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.output.text())
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.sock))
                if self.sock.stat().st_gid == grp.getgrnam(GROUP).gr_gid:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("app did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)


def render(listen: str, name: str, pki_dir: Path, sockets: Sequence[Path], tile_dir: Path) -> str:
    """deploy/nginx/render.sh's server block for these gateways."""
    return subprocess.run(
        [
            str(REPO / "deploy/nginx/render.sh"),
            listen,
            name,
            str(pki_dir),
            ",".join(str(s) for s in sockets),
            str(tile_dir),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


class Nginx:
    """nginx in the foreground with `server_block` in its http block, files under `tmp`;
    `access_log` replaces the http block's `access_log off` (a test's log of the requests)."""

    def __init__(
        self, tmp: Path, server_block: str, port: int, access_log: str = "access_log off;"
    ):
        self.port = port
        # Bodies past nginx's buffer go to files its workers (user nobody) write: under a
        # directory they can reach (pytest's are 0700), as /var/lib/nginx is in a deployment.
        self.spool = Path(tempfile.mkdtemp(prefix="citygrid-ng-body-"))
        self.spool.chmod(0o711)
        (tmp / "citygrid.conf").write_text(server_block)
        (tmp / "nginx.conf").write_text(
            f"""user nobody {GROUP};
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{}}
http {{
    {access_log}
    client_body_temp_path {self.spool}/body;
    proxy_temp_path {self.spool}/proxy;
    fastcgi_temp_path {self.spool}/fastcgi;
    uwsgi_temp_path {self.spool}/uwsgi;
    scgi_temp_path {self.spool}/scgi;
    include {tmp}/citygrid.conf;
}}
"""
        )
        self.output = Output()
        self.proc = subprocess.Popen(
            [NGINX, "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"], stderr=self.output.file
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output.text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("nginx did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.spool, ignore_errors=True)


def tls_get(
    port: int,
    path: str,
    ca: Path,
    cert: Path | None,
    key: Path | None,
    source: str = "127.0.0.1",
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
) -> Reply:
    """An HTTPS request to nginx with a client certificate, from a chosen loopback source."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ctx, timeout=20, source_address=(source, 0)
    )
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()
