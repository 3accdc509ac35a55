"""A throwaway PostgreSQL cluster (`initdb`, then `postgres`) on a free local port and a
directory of its own: a new machine's server, where no CityGrid role exists yet, for the
tests of a restore there.

It is of the major version of the test server (`BASE_URL`), whose dumps it must restore, from
that version's binaries (Debian's /usr/lib/postgresql/N/bin, or CITYGRID_TEST_PG_BIN). Run as
root, as the tests are here, it runs as the `postgres` OS user: initdb refuses root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

OS_USER = "postgres"  # whom the cluster runs as when the tests run as root
SUPERUSER = "postgres"  # its bootstrap role, as on a Debian install


class Unavailable(Exception):
    """No cluster can be made here (no binaries, no user to run them as): a reason to skip."""


class Cluster(NamedTuple):
    url: str  # postgresql://postgres@127.0.0.1:PORT/postgres (trust)
    root: Path  # its data directory (root/data), socket and log
    pid: int

    def url_of(self, dbname: str) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{dbname}"


def binaries(server_url: str) -> Path:
    """The directory of the binaries of `server_url`'s major version."""
    given = os.environ.get("CITYGRID_TEST_PG_BIN")
    if given:
        return Path(given)
    with psycopg.connect(server_url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    return Path(f"/usr/lib/postgresql/{int(row[0]) // 10000}/bin")


def _as_owner() -> tuple[dict[str, Any], int, int]:
    """subprocess arguments that run a tool as the cluster's owner, and its uid and gid."""
    if os.geteuid() != 0:
        return {}, os.getuid(), os.getgid()
    try:
        user = pwd.getpwnam(OS_USER)
    except KeyError:
        raise Unavailable(f"the tests run as root and there is no {OS_USER!r} OS user") from None
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}, user.pw_uid, user.pw_gid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])


def _accepting(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> bool:
    """Poll until the server accepts a connection (True) or exits (False: a port taken
    meanwhile, say); it failing to answer in `timeout` seconds fails."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the throwaway cluster did not answer: {_tail(log)}"
                ) from None
            time.sleep(0.02)  # the poll's interval
    return False


@contextlib.contextmanager
def throwaway_cluster(bindir: Path, timeout: float = 60.0) -> Iterator[Cluster]:
    """A new cluster listening on 127.0.0.1 only (its socket in its own directory), trust
    authentication, until the block ends: then stopped (`pg_ctl stop -m immediate`) and
    removed, whatever happened in it."""
    for tool in ("initdb", "postgres", "pg_ctl"):
        if not (bindir / tool).is_file():
            raise Unavailable(f"no {bindir / tool} (set CITYGRID_TEST_PG_BIN)")
    owner, uid, gid = _as_owner()
    # Not under pytest's tmp_path: that is root's, mode 0700, where the owner cannot reach.
    root = Path(tempfile.mkdtemp(prefix="citygrid-cluster-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        os.chown(root, uid, gid)
        data, log = root / "data", root / "postgres.log"

        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                  "--no-locale", "--encoding=UTF8", "--no-sync"]  # fmt: skip
        try:
            with log.open("ab") as out:
                made = subprocess.run(initdb, stdout=out, stderr=out, cwd=root, **owner)
        except PermissionError as exc:  # no CAP_SETUID in this container
            raise Unavailable(f"cannot run initdb as {OS_USER}: {exc}") from None
        if made.returncode != 0:
            raise AssertionError(f"initdb failed: {_tail(log)}")
        for _ in range(3):  # a port taken between choosing it and binding it: another
            port = _free_port()
            url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                     "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
                     "-c", "fsync=off", "-c", "full_page_writes=off",
                     "-c", "synchronous_commit=off", "-c", "shared_buffers=32MB"],
                    stdout=out, stderr=out, cwd=root, **owner,
                )  # fmt: skip
            if _accepting(url, proc, log, timeout):
                break
            proc.wait()
        else:
            raise AssertionError(f"the throwaway cluster did not start: {_tail(log)}")
        yield Cluster(url, root, proc.pid)
    finally:
        try:
            if proc is not None:
                _stop(bindir, root / "data", proc, owner)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _stop(bindir: Path, data: Path, proc: subprocess.Popen[bytes], owner: dict[str, Any]) -> None:
    """`pg_ctl stop -m immediate` (no checkpoint: the cluster is removed next); the postmaster
    killed should that not end it."""
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                capture_output=True, cwd=data.parent, check=False, timeout=30, **owner,
            )  # fmt: skip
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
