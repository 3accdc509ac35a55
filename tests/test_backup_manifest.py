"""`citygrid backup verify|prune` on manifests as nobody but an intruder or a fault writes
them: one line and a non-zero exit naming the manifest, never a traceback; and one directory
that cannot be read never stops the nightly prune of the others."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mapserver.backup import DATA, DUMP, MANIFEST
from mapserver.cli import main


def _fake(backup: Path, created_at: str = "2026-01-01T00:00:00+00:00", **fields: Any) -> Path:
    """A backup of format 1 (unsigned) whose files hash to its manifest."""
    backup.mkdir(parents=True)
    files = {}
    for name in (DUMP, DATA):
        (backup / name).write_bytes(name.encode())
        files[name] = hashlib.sha256(name.encode()).hexdigest()
    doc = {
        "format": 1,
        "created_at": created_at,
        "database": "citygrid",
        "migration": "0048_attachment_on_several_cases",
        "checkpoint": {"size": 3, "root": "AAAA"},
        "files": files,
        **fields,
    }
    (backup / MANIFEST).write_text(json.dumps(doc), "utf-8")
    return backup


def _one_line_error(result: Any) -> str:
    assert isinstance(result.exception, SystemExit) and result.exit_code != 0, (
        result.exception,
        result.output,
    )
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_well_formed_manifest_verifies(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["backup", "verify", str(_fake(tmp_path / "b"))])
    assert result.exit_code == 0 and "intact" in result.output, result.output


@pytest.mark.parametrize(
    "fields",
    [
        {"checkpoint": "x"},
        {"checkpoint": [1]},
        {"checkpoint": {"size": "3", "root": "AAAA"}},
        {"database": None},
        {"migration": []},
        {"format": True},  # `true` is no format 1
    ],
)
def test_a_manifest_with_a_field_of_another_kind_is_one_line(
    tmp_path: Path, fields: dict[str, Any]
) -> None:
    backup = _fake(tmp_path / "b", **fields)
    said = _one_line_error(CliRunner().invoke(main, ["backup", "verify", str(backup)]))
    assert said.startswith("citygrid: error: ") and MANIFEST in said, said


def test_an_unreadable_directory_never_stops_the_prune(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    old = _fake(root / "20260101T000000Z", "2026-01-01T00:00:00+00:00")
    new = _fake(root / "20260102T000000Z", "2026-01-02T00:00:00+00:00")
    odd = root / "20260103T000000Z"
    (odd / MANIFEST).mkdir(parents=True)  # cannot be read as a file
    result = CliRunner().invoke(main, ["backup", "prune", str(root), "--keep", "1"])
    assert result.exit_code == 0, result.output
    assert not old.exists() and new.exists() and odd.exists()
    assert f"removed {old}" in result.output
    assert f"left {odd}: {MANIFEST}: Is a directory" in result.output
