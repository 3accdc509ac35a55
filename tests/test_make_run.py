"""`make run`, as the README gives it: on an empty database and data directory it builds the
demo district, a CA and one demo account per role, and serves them over mutual TLS. Ctrl-C
(SIGINT to its process group) stops all of it, the CA signer too; run again, it reuses what
it made and serves the same certificates."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mapserver import db
from mapserver.settings import Settings

from .conftest import database_url
from .tls import REFUSED, free_port, request

ROOT = Path(__file__).parent.parent


def _make_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["make", "-s", "run"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, as a terminal gives it
        )


def _serving(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"make run did not serve in {timeout:.0f} s")


def _group(pgid: int) -> list[str]:
    """The live processes of group `pgid`, by name."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue  # gone meanwhile
        state, _, group = rest.split()[:3]
        if int(group) == pgid and state != "Z":
            alive.append(head.split("(", 1)[1])
    return alive


def _ctrl_c(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """What Ctrl-C does in a terminal: SIGINT to the whole foreground group."""
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while (left := _group(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after Ctrl-C: {left}"


def test_make_run_serves_the_demo_and_stops_and_starts_again(tmp_path: Path) -> None:
    data = tmp_path / "var"
    settings = dataclasses.replace(
        Settings(), database_url=database_url("citygrid_make_run"), data_dir=data
    )
    db.drop_database(settings)
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")
    } | {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(data),
        "BIND": f"127.0.0.1:{port}",
        "DEMO_AREA_KM2": "1",
    }  # fmt: skip
    log = tmp_path / "make-run.log"
    pki, demo = data / "pki", data / "pki" / "demo"
    proc = _make_run(env, log)
    try:
        _serving(proc, port, log, timeout=240)
        said = log.read_text()
        assert f"CityGrid is starting at https://127.0.0.1:{port}/" in said
        assert "streets 2, communities 4, unit grids 100" in said
        for role in ("viewer", "inspector", "dispatcher", "bureau-handler", "security-officer"):
            name = f"demo-{role}"
            who = request(port, "/auth/whoami", pki / "ca.crt", demo / f"{name}.crt",
                          demo / f"{name}.key")  # fmt: skip
            assert who.status == 200 and who.json()["account"] == name, (role, who.body[:200])
            assert (demo / f"{name}.p12").stat().st_size > 0  # for the browser
        maps = request(port, "/tiles", pki / "ca.crt", demo / "demo-viewer.crt",
                       demo / "demo-viewer.key")  # fmt: skip
        assert maps.status == 200 and "topo2000" in maps.json()["maps"]
        with pytest.raises(REFUSED):  # no certificate, no answer
            request(port, "/auth/whoami", pki / "ca.crt")
        _ctrl_c(proc)

        ca = (pki / "ca.crt").read_bytes()
        proc = _make_run(env, log)
        _serving(proc, port, log, timeout=120)
        again = log.read_text()[len(said) :]
        assert "CA created" not in again and "CityGrid is starting" in again
        assert (pki / "ca.crt").read_bytes() == ca
        who = request(port, "/auth/whoami", pki / "ca.crt", demo / "demo-leader.crt",
                      demo / "demo-leader.key")  # fmt: skip
        assert who.status == 200 and who.json()["roles"] == ["leader"]
        _ctrl_c(proc)
    finally:  # the whole group, also what outlived make itself
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        db.drop_database(settings)
