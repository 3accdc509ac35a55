"""Re-import keyed by the file's own feature ids (`citygrid import --id-field FIELD`).

Each row remembers the id its source gave the feature (`source_id`, migration 0022). A
second import of the same ids replaces exactly those rows, whatever the file is called, so
re-running an import never doubles a row; features with new ids are added, rows whose ids
the file does not carry are left alone.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from mapserver.errors import InvalidInput
from mapserver.import_kinds import Kind

KEYED_TABLES = (
    "building",
    "road_line",
    "road_surface",
    "water",
    "green",
    "annotation",
    "address",
)


def prepare(
    conn: psycopg.Connection, spec: Kind, id_field: str | None, fields: list[str], path: Path
) -> bool:
    """Stage each feature's id (`import_staging.source_id`); False when not keyed. Refuses a
    missing field, a feature without an id and an id given twice."""
    if id_field is None:
        return False
    if spec.table not in KEYED_TABLES:
        raise InvalidInput(
            f"--id-field: {spec.table} rows are keyed by their code already; leave it out"
        )
    names = [f.strip() for f in id_field.split(",") if f.strip()]
    missing = [f for f in names if f not in fields]
    if not names or missing:
        raise InvalidInput(
            f"--id-field {id_field}: the file has no field {(missing or [''])[0]!r};"
            f" it has: {', '.join(fields)}"
        )
    conn.execute("ALTER TABLE import_staging ADD COLUMN source_id text")
    # several fields (OSM's osm_id,osm_way_id): the first one set, named so that ids of
    # different fields never collide
    parts = [
        f"'{i}:' || nullif(trim(attrs ->> %s), '')"
        if len(names) > 1
        else "nullif(trim(attrs ->> %s), '')"
        for i, _ in enumerate(names)
    ]
    conn.execute(
        f"UPDATE import_staging SET source_id = coalesce({', '.join(parts)})",
        tuple(names),
    )
    row = conn.execute(
        "SELECT n FROM import_staging WHERE source_id IS NULL ORDER BY n LIMIT 1"
    ).fetchone()
    if row:
        raise InvalidInput(f"{path.name}: feature {row[0]} has no {' or '.join(names)}")
    row = conn.execute(
        "SELECT source_id, min(n), max(n) FROM import_staging GROUP BY source_id"
        " HAVING count(*) > 1 ORDER BY min(n) LIMIT 1"
    ).fetchone()
    if row:
        raise InvalidInput(
            f"{path.name}: {id_field} {row[0]!r} is given to features {row[1]} and {row[2]}"
        )
    return True


def replace(
    conn: psycopg.Connection,
    spec: Kind,
    scale: int,
    *,
    origin: str,
    path: Path,
    unkeyed: bool = False,
) -> list[str]:
    """Drop the rows the staged ids replace; a note says how many. Rows an earlier import of
    the same file brought without ids cannot be matched: they would stay beside the keyed
    ones, doubled, so they are refused, or dropped too with `unkeyed` (`--replace`)."""
    scaled = " AND scale = %s" if spec.scaled else ""
    params: tuple[object, ...] = (scale,) if spec.scaled else ()
    notes = []
    row = conn.execute(
        f"SELECT count(*) FROM {spec.table} WHERE origin = %s AND source_id IS NULL{scaled}",
        (origin, *params),
    ).fetchone()
    without = int(row[0]) if row else 0
    if without:
        at = f" at 1:{scale}" if spec.scaled else ""
        if not unkeyed:
            raise InvalidInput(
                f"{path.name}{at} was imported before without --id-field ({without}"
                f" {spec.table} rows with no id to match): --replace replaces them"
            )
        try:
            with conn.transaction():
                conn.execute(
                    f"DELETE FROM {spec.table} WHERE origin = %s AND source_id IS NULL{scaled}",
                    (origin, *params),
                )
        except psycopg.errors.ForeignKeyViolation:
            raise InvalidInput(
                f"--replace: rows of the earlier import of {path.name} are still referenced"
                " (cases or components keep them)"
            ) from None
        notes.append(f"{without} {spec.table} row(s) of the import without ids replaced")
    gone = conn.execute(
        f"DELETE FROM {spec.table} t WHERE t.source_id IN"
        f" (SELECT source_id FROM import_staging){scaled}",
        params,
    ).rowcount
    if gone:
        notes.append(f"{gone} {spec.table} row(s) with the same ids replaced")
    return notes
