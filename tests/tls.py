"""Helpers for tests that talk to a real `citygrid serve` (gunicorn, TLS, client certs)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tests.output import Output

REFUSED = (ssl.SSLError, OSError, http.client.HTTPException)


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    port: int,
    path: str,
    ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, {k: v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def signer_socket(env: Mapping[str, str]) -> Path:
    if env.get("CITYGRID_SIGNER_SOCKET"):
        return Path(env["CITYGRID_SIGNER_SOCKET"])
    return Path(env.get("CITYGRID_DATA_DIR", "./var")) / "run" / "signer.sock"


class Signer:
    """`citygrid signer` in its own process group (optionally under a clock-moving prefix)."""

    def __init__(
        self, env: Mapping[str, str], prefix: list[str] | None = None, args: list[str] | None = None
    ):
        self.env = {**os.environ, **env}
        self.socket = signer_socket(self.env)
        command = [*(prefix or []), sys.executable, "-m", "mapserver.cli", "signer", *(args or [])]
        self.output = Output()
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.output.file,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        from auth.signer import running

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.output.text())
            if running(self.socket):
                return
            time.sleep(0.1)
        raise TimeoutError("signer did not start")

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Server:
    """`citygrid serve` in its own process group, with the CA signer beside it when the
    environment has the CA passphrase (gunicorn itself never gets it) and no signer of the
    same install is running yet. `prefix` runs both under e.g. `faketime +25h`."""

    def __init__(
        self,
        env: Mapping[str, str],
        workers: int = 2,
        extra_args: list[str] | None = None,
        port: int | None = None,
        prefix: list[str] | None = None,
        signer_args: list[str] | None = None,
    ):
        from auth.signer import running

        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.signer: Signer | None = None
        has_secret = env.get("CITYGRID_CA_PASSPHRASE") or env.get("CITYGRID_CA_PASSPHRASE_FILE")
        if has_secret and not running(signer_socket(self.env)):
            self.signer = Signer(env, prefix, signer_args)
            try:
                self.signer.wait_ready()
            except BaseException:
                self.signer.stop()
                raise
        command = [*(prefix or []), sys.executable, "-m", "mapserver.cli", "serve"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        command += ["--threads", "4", *(extra_args or [])]
        self.output = Output()
        self.proc = subprocess.Popen(
            command,
            env=self.env,
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
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        _stop(self.proc)
        if self.signer is not None:
            self.signer.stop()
