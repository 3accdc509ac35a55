"""Bulk component files and `citygrid components` refusing bad input the way the README
promises: a row the apply would refuse is a problem in the check's report, a refused file
from the command line leaves its audit entry, a file of any size costs at most the limit in
memory, and a component code that is no code is one short line."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import db
from mapserver.cli import main
from mapserver.components import bulk, store
from mapserver.errors import InvalidInput
from mapserver.settings import Settings
from tiles.service import grid_from

from .app_client import Install
from .conftest import demo_database

BUREAU = "cb-bureau"


class Bureau:
    """A demo district and one bureau's person with a signing key on disk."""

    def __init__(self, install: Install):
        self.install = install
        self.settings: Settings = install.settings
        with psycopg.connect(self.settings.database_url) as conn:
            org, dept = conn.execute(
                """SELECT o.code, o.name FROM organisation o
                   JOIN component c ON c.owner_dept = o.name
                   WHERE o.kind = 'bureau' GROUP BY 1, 2 ORDER BY count(*) DESC, 1 LIMIT 1"""
            ).fetchone() or ("", "")
            self.codes = [
                r[0]
                for r in conn.execute(
                    "SELECT code FROM component WHERE owner_dept = %s AND in_use ORDER BY code"
                    " LIMIT 20",
                    (dept,),
                )
            ]
        install.account(BUREAU, ["bureau_handler"], org)
        install.signing(BUREAU)
        out = install.out
        self.signer = ["--as", BUREAU, "--key", str(out / f"{BUREAU}.signing.key")]
        self.signer += ["--cert", str(out / f"{BUREAU}.signing.crt")]
        self.env = {
            "CITYGRID_DATABASE_URL": self.settings.database_url,
            "CITYGRID_DATA_DIR": str(self.settings.data_dir),
        }

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.database_url) as conn:
            return conn.execute(query, args).fetchall()

    def check(self, text: str) -> list[dict[str, Any]]:
        """The report of a CSV checked as the bureau's person (nothing kept)."""
        rows = bulk.read(text.encode(), "csv", self.settings.srid)
        with db.connect(self.settings) as conn:
            own = store.departments(conn, BUREAU)
            with conn.transaction(force_rollback=True):
                _, report = bulk.check(conn, self.settings, grid_from(self.settings), rows, own)
        return report


@pytest.fixture(scope="module")
def bureau(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bureau]:
    settings = demo_database("citygrid_component_bulk", tmp_path_factory.mktemp("cb-var"))
    install = Install(settings, tmp_path_factory.mktemp("cb-certs"))
    try:
        yield Bureau(install)
    finally:
        install.close()
        db.drop_database(settings)


@pytest.mark.parametrize("reason", ["r" * 201, "cut\x01down"])
def test_a_reason_the_apply_would_refuse_is_a_problem_of_its_row(
    bureau: Bureau, reason: str
) -> None:
    """The check said "ok" and the signed apply then failed the whole file with a 400
    naming no row; now the row is named when the file is checked."""
    code = bureau.codes[0]
    report = bureau.check(f'op,code,reason\nretire,{code},"{reason}"\n')
    assert report[0]["problems"], report
    assert "reason" in report[0]["problems"][0]
    assert bureau.check(f"op,code,reason\nretire,{code},worn out\n")[0]["problems"] == []


def test_a_refused_file_from_the_command_line_is_audited(bureau: Bureau, tmp_path: Path) -> None:
    """The refusal's audit entry (and the kept report) were rolled back with the error."""
    code = bureau.codes[1]
    before = bureau.sql("SELECT version, state FROM component WHERE code = %s", code)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"op,code,state\nedit,{code},broken\n", "utf-8")
    refused = CliRunner().invoke(
        main, ["components", "import", *bureau.signer, str(bad)], env=bureau.env
    )
    assert refused.exit_code == 1, refused.output
    assert "citygrid: error: 1 row(s) with problems: nothing applied" in refused.output
    assert bureau.sql("SELECT version, state FROM component WHERE code = %s", code) == before
    audited = bureau.sql(
        "SELECT resource FROM audit_entry WHERE action = 'component.import'"
        " AND outcome = 'refused' AND method = 'CLI'"
    )
    kept = bureau.sql("SELECT 'component import ' || id::text FROM component_import WHERE NOT ok")
    assert len(audited) == 1 and audited == kept


def test_check_only_changes_no_component(bureau: Bureau, tmp_path: Path) -> None:
    code = bureau.codes[2]
    before = bureau.sql("SELECT code, version, state FROM component ORDER BY code")
    good = tmp_path / "good.csv"
    good.write_text(f"op,code,state\nedit,{code},occupied\n", "utf-8")
    checked = CliRunner().invoke(
        main, ["components", "import", *bureau.signer, str(good), "--check"], env=bureau.env
    )
    assert checked.exit_code == 0, checked.output
    assert "nothing applied (--check)" in checked.output
    assert bureau.sql("SELECT code, version, state FROM component ORDER BY code") == before


def _limit_memory() -> None:
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_a_huge_file_is_refused_in_one_line(bureau: Bureau, tmp_path: Path) -> None:
    """A 16 GiB (sparse) file was read whole before its size was checked: a MemoryError
    traceback under a memory limit, or the machine's memory without one."""
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as f:
        f.truncate(16 << 30)
    run = subprocess.run(
        [sys.executable, "-m", "mapserver.cli", "components", "import", *bureau.signer,
         str(huge)],
        env={**os.environ, **bureau.env},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory,  # noqa: PLW1509 - only sets a limit, no threads involved
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip() == "citygrid: error: the file is larger than 16 MiB", run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("code", ["x" * 100_000, "", "1101", "110108040100000１"])
def test_history_of_no_code_is_one_short_line(bureau: Bureau, code: str) -> None:
    shown = CliRunner().invoke(main, ["components", "history", code], env=bureau.env)
    assert shown.exit_code == 1
    assert shown.output == "citygrid: error: a component code is 16 or 17 digits\n"


def test_history_names_every_version_and_its_signer(bureau: Bureau, tmp_path: Path) -> None:
    code = bureau.codes[3]
    good = tmp_path / "good.csv"
    good.write_text(f"op,code,state\nedit,{code},damaged\n", "utf-8")
    applied = CliRunner().invoke(
        main, ["components", "import", *bureau.signer, str(good)], env=bureau.env
    )
    assert applied.exit_code == 0, applied.output
    shown = CliRunner().invoke(main, ["components", "history", code], env=bureau.env)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert [line.split()[0] for line in lines] == ["v1", "v2"]
    assert f"by {BUREAU} (signed action" in lines[1] and "[damaged]" in lines[1]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("op,code,state,state\nedit,11010801010000001,damaged,intact\n", "named twice"),
        ("op,code,state\nedit,11010801010000001,damaged,intact\n", "row 1: more fields"),
    ],
)
def test_a_csv_whose_fields_do_not_match_its_header_is_refused(text: str, said: str) -> None:
    """A column named twice kept the later value, and fields past the header were dropped:
    both silently, so a file could say other than what was applied."""
    with pytest.raises(InvalidInput, match=said):
        bulk.read(text.encode(), "csv", 4547)
