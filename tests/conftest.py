"""Fixtures: real PostgreSQL + PostGIS databases made for this test run, dropped after it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mapserver import db, migrate
from mapserver.settings import Settings

BASE_URL = os.environ.get(
    "CITYGRID_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _database(name: str, data_dir: Path) -> Settings:
    url = psycopg.conninfo.make_conninfo(BASE_URL, dbname=f"{name}_{os.getpid()}")
    settings = dataclasses.replace(Settings(), database_url=url, data_dir=data_dir)
    db.drop_database(settings)
    db.ensure_database(settings)
    with db.connect(settings) as conn:
        migrate.upgrade(conn, settings)
    return settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A migrated, empty database of its own for this test run."""
    s = _database("citygrid_test", tmp_path_factory.mktemp("var"))
    yield s
    db.drop_database(s)


@pytest.fixture(scope="session")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database holding a small demo district (1 km², seed 1), built once per run."""
    from mapserver.demo import build_demo

    s = _database("citygrid_demo", tmp_path_factory.mktemp("demo-var"))
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
