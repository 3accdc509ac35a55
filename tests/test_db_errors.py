"""Database errors that reach a person or a client name no server path and no password."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest

from mapserver import db
from mapserver.errors import DatabaseUnavailable
from mapserver.settings import Settings


def test_unreachable_socket_names_no_path_or_password(tmp_path: Path) -> None:
    sockets = tmp_path / "no-such-socket-dir"
    url = f"postgresql://someone:hunter2-secret@/citygrid?host={sockets}&connect_timeout=2"
    settings = dataclasses.replace(Settings(), database_url=url)
    with pytest.raises(DatabaseUnavailable) as caught:
        db.connect(settings)
    text = caught.value.message
    assert str(tmp_path) not in text and "no-such-socket-dir" not in text, text
    assert "hunter2" not in text and ".s.PGSQL" not in text
    assert text.startswith("database ") and "unavailable" in text


def test_path_and_password_in_a_driver_message_are_hidden() -> None:
    cause = psycopg.OperationalError(
        'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: '
        'could not open file "/home/ops/.pgpass" password=s3cret'
    )
    text = DatabaseUnavailable("127.0.0.1:5432/citygrid", cause).message
    assert "/run/" not in text and "/home/" not in text and "s3cret" not in text
    assert "127.0.0.1:5432/citygrid" in text
