"""Helpers shared by the benchmarks: the benchmark database and local ports."""

from __future__ import annotations

import dataclasses
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mapserver import db, migrate
from mapserver.demo import build_demo
from mapserver.settings import Settings, load


def bench_settings(area_km2: float) -> Settings:
    base = load()
    url = urlunsplit(urlsplit(base.database_url)._replace(path="/citygrid_bench"))
    settings = dataclasses.replace(base, database_url=url, data_dir=Path(tempfile.mkdtemp()))
    db.ensure_database(settings)
    with db.connect(settings) as conn:
        migrate.upgrade(conn, settings)
        row = conn.execute("SELECT ST_Area(geom) / 1e6 FROM district").fetchone()
    if row is None or abs(row[0] - area_km2) > 0.5:
        print(f"building the {area_km2:g} km² demo district …")
        build_demo(settings, area_km2=area_km2, seed=1, progress=False)
    return settings


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
