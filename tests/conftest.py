"""Fixtures: real PostgreSQL + PostGIS databases made for this test run, dropped after it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.keys import signer
from mapserver import db, migrate
from mapserver.settings import Settings
from tiles.tile_grid import BBox

BASE_URL = os.environ.get(
    "CITYGRID_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    """BASE_URL with its database replaced by `name`, suffixed with this run's pid."""
    parts = urlsplit(BASE_URL)
    return urlunsplit(parts._replace(path=f"/{name}_{os.getpid()}"))


def empty_database(name: str, data_dir: Path) -> Settings:
    """A migrated, empty database of its own (dropped first if a run left it behind)."""
    url = database_url(name)
    settings = dataclasses.replace(Settings(), database_url=url, data_dir=data_dir)
    db.drop_database(settings)
    db.ensure_database(settings)
    with db.connect(settings) as conn:
        migrate.upgrade(conn, settings)
    return settings


def audit_log_fixtures(name: str) -> tuple[Any, Any]:
    """A module's `log` (an empty database of its own, dropped when the module ends) and
    `key` (that install's checkpoint key, as `citygrid audit verify` expects):
    `log, key = audit_log_fixtures("citygrid_spool")` at a test module's top."""

    @pytest.fixture(scope="module")
    def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
        settings = empty_database(name, tmp_path_factory.mktemp(f"{name}-var"))
        yield settings
        db.drop_database(settings)

    @pytest.fixture(scope="module")
    def key(log: Settings) -> Ed25519PrivateKey:
        return signer(log.pki_dir)

    return log, key


def first_street_box(database_url: str) -> BBox:
    """The bounding box of the district's first street (by code): a few dozen metatiles over
    levels 7-8 of the demo, for tests that render a part of the map."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM street"
            " ORDER BY code LIMIT 1"
        ).fetchone()
    assert row is not None
    return BBox(*row)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A migrated, empty database of its own for this test run."""
    s = empty_database("citygrid_test", tmp_path_factory.mktemp("var"))
    yield s
    db.drop_database(s)


def demo_database(name: str, data_dir: Path) -> Settings:
    """A database of its own holding the 1 km² demo district: for tests whose install
    (CA, audit key) must not share its audit log with another test's."""
    from mapserver.demo import build_demo

    s = empty_database(name, data_dir)
    build_demo(s, area_km2=1.0, seed=1, progress=False)
    return s


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database holding a small demo district (1 km², seed 1), built once per run."""
    from mapserver.demo import build_demo

    s = empty_database("citygrid_demo", tmp_path_factory.mktemp("demo-var"))
    build_demo(s, area_km2=1.0, seed=1, progress=False)
    yield s
    db.drop_database(s)


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the empty database whose work is rolled back after the test."""
    with db.connect(settings) as c:
        yield c
        c.rollback()


@pytest.fixture
def demo_conn(demo_settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection to the demo database whose work is rolled back after the test."""
    with db.connect(demo_settings) as c:
        yield c
        c.rollback()


Closing = Callable[[Any], Any]


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Audit writers handed to it (`writer = closing(SpoolWriter(...))`) are closed when the
    test ends: their shipper, writer and sequencer threads do not outlive its database."""
    held: list[Any] = []

    def hold(writer: Any) -> Any:
        held.append(writer)
        return writer

    yield hold
    for writer in held:
        writer.close()
