"""`citygrid import`: any file GDAL reads → the install's CRS → the map tables.

GDAL's ogr2ogr reads and reprojects the file and streams it as CSV with WKT geometry into
a temporary staging table; the rows are checked there (geometry type, required fields,
values, codes) and copied into the target table in the same transaction. Any problem
rolls everything back and is reported in one line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import psycopg

from mapserver import codes, db
from mapserver.codes import COMPONENT_STATES
from mapserver.errors import CityGridError, InvalidInput
from mapserver.import_kinds import KINDS, POINT, Kind, family_of, kind_for
from mapserver.settings import Settings

csv.field_size_limit(1 << 30)  # WKT of a large polygon is one CSV field
DATA_SOURCES = ("surveyed", "topographic_map", "field_annotated", "other")
ROAD_KINDS = ("arterial", "secondary", "branch", "lane")
_NUMBER = {"integer": r"^\s*-?\d+\s*$", "double precision": r"^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$"}


class ImportResult(NamedTuple):
    imported: int
    table: str


def parse_field_map(items: Iterable[str]) -> dict[str, str]:
    """TARGET=SOURCE pairs from --map-field."""
    out: dict[str, str] = {}
    for item in items:
        target, sep, source = item.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise InvalidInput(f"--map-field {item!r}: expected TARGET=SOURCE")
        out[target.strip()] = source.strip()
    return out


def _gdal_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise CityGridError(f"{name} not found: install GDAL (Debian package gdal-bin)")
    return found


def gdal_env() -> dict[str, str]:
    """The environment for GDAL's tools: without the data paths that importing mapnik sets
    for its own bundled PROJ and GDAL (they do not match the system's GDAL)."""
    env = dict(os.environ)
    for key in ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "ICU_DATA"):
        if "mapnik" in env.get(key, ""):
            del env[key]
    return env


def layers(path: Path) -> list[str]:
    """Layer names of a file, as ogrinfo lists them."""
    run = subprocess.run(
        [_gdal_tool("ogrinfo"), "-ro", "-so", "-q", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        env=gdal_env(),
    )
    if run.returncode != 0:
        raise InvalidInput(f"cannot read {path.name}: not a file GDAL can open")
    names = re.findall(r"^\d+: (.+?)(?: \([^()]*\))?$", run.stdout, re.MULTILINE)
    if not names:
        raise InvalidInput(f"{path.name} holds no vector layers")
    return names


def _gdal_error(text: str, path: Path) -> str:
    flat = " ".join(text.split())
    if "no coordinate system" in flat:
        return f"{path.name} declares no CRS: give it with --s-srs (e.g. --s-srs EPSG:4326)"
    if "Failed to process SRS definition" in flat:
        return "unknown CRS given with --s-srs"
    errors = re.findall(r"ERROR \d+: (.*?)(?= ERROR \d+:|$)", flat)
    reason = errors[0] if errors else "GDAL could not read it"
    return f"cannot import {path.name}: {reason[:200]}"


def _stage(
    conn: psycopg.Connection, path: Path, layer: str, srid: int, s_srs: str | None
) -> list[str]:
    """Stream the layer, reprojected, into the temporary table import_staging; returns the
    file's field names."""
    conn.execute(
        "CREATE TEMP TABLE import_staging (n integer, wkt text, attrs jsonb) ON COMMIT DROP"
    )
    cmd = [
        _gdal_tool("ogr2ogr"),
        "-f",
        "CSV",
        "/vsistdout/",
        str(path),
        layer,
        "-t_srs",
        f"EPSG:{srid}",
        "-dim",
        "XY",
        "-lco",
        "GEOMETRY=AS_WKT",
    ]
    if s_srs:
        cmd += ["-s_srs", s_srs]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=gdal_env())
        assert proc.stdout is not None
        reader = csv.reader(
            io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace", newline="")
        )
        header = next(reader, None) or []
        with (
            conn.cursor() as cur,
            cur.copy("COPY import_staging (n, wkt, attrs) FROM STDIN") as copy,
        ):
            for n, row in enumerate(reader, start=1):
                attrs = {
                    k: (v if v != "" else None) for k, v in zip(header[1:], row[1:], strict=False)
                }
                copy.write_row((n, row[0] if row else "", json.dumps(attrs, ensure_ascii=False)))
        code = proc.wait()
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace")
    if code != 0:
        raise InvalidInput(_gdal_error(message, path))
    if not header or header[0] != "WKT":
        raise InvalidInput(f"{path.name}: layer {layer!r} has no geometry")
    return header[1:]


def _sources(spec: Kind, fields: list[str], field_map: dict[str, str]) -> dict[str, str | None]:
    """Which file field feeds each target column (None: use the default)."""
    columns = {c.name for c in spec.columns}
    for target, source in field_map.items():
        if target not in columns:
            raise InvalidInput(
                f"--map-field {target}: not a column of {spec.table}; "
                f"columns: {', '.join(sorted(columns))}"
            )
        if source not in fields:
            raise InvalidInput(f"--map-field {target}={source}: the file has no field {source!r}")
    by_lower = {f.lower(): f for f in fields}
    out: dict[str, str | None] = {}
    for col in spec.columns:
        found = field_map.get(col.name) or by_lower.get(col.name.lower())
        if found is None and col.default is None:
            raise InvalidInput(
                f"missing field {col.name!r} (map one with --map-field "
                f"{col.name}=FIELD; the file has: {', '.join(fields) or 'none'})"
            )
        out[col.name] = found
    return out


def _family(conn: psycopg.Connection, path: Path) -> str:
    try:
        rows = conn.execute(
            "SELECT min(n), GeometryType(ST_GeomFromText(nullif(wkt, '')))"
            " FROM import_staging GROUP BY 2"
        ).fetchall()
    except psycopg.Error:
        raise InvalidInput(f"{path.name}: a feature has an unreadable geometry") from None
    if not rows:
        raise InvalidInput(f"{path.name}: the layer has no features")
    found = {}
    for n, gtype in rows:
        if gtype is None:
            raise InvalidInput(f"{path.name}: feature {n} has no geometry")
        family = family_of(gtype)
        if family is None or family == "multipoint":
            raise InvalidInput(f"{path.name}: feature {n} is a {gtype}, which cannot be imported")
        found[family] = n
    if len(found) > 1:
        raise InvalidInput(f"{path.name}: mixes {' and '.join(sorted(found))} geometries")
    return next(iter(found))


def _value(source: str | None, default: str | None, sql_type: str) -> psycopg.sql.Composable:
    from psycopg import sql

    if source is None:
        return sql.SQL(f"{default}::{sql_type}")
    fallback = default if default is not None else "NULL"
    return sql.SQL(
        "coalesce(trim(attrs ->> {})::" + sql_type + ", " + fallback + "::" + sql_type + ")"
    ).format(sql.Literal(source))


def _check_values(
    conn: psycopg.Connection, spec: Kind, sources: dict[str, str | None], path: Path
) -> None:
    for col in spec.columns:
        source = sources[col.name]
        if source is None:
            continue
        if col.default is None:
            row = conn.execute(
                "SELECT n FROM import_staging WHERE coalesce(trim(attrs ->> %s), '') = ''"
                " ORDER BY n LIMIT 1",
                (source,),
            ).fetchone()
            if row:
                raise InvalidInput(
                    f"{path.name}: feature {row[0]} has no {col.name} (field {source})"
                )
        pattern = _NUMBER.get(col.sql_type)
        if pattern:
            row = conn.execute(
                "SELECT n, attrs ->> %s FROM import_staging WHERE attrs ->> %s IS NOT NULL"
                " AND attrs ->> %s !~ %s ORDER BY n LIMIT 1",
                (source, source, source, pattern),
            ).fetchone()
            if row:
                raise InvalidInput(
                    f"{path.name}: feature {row[0]}: {col.name} {row[1]!r} is not a number"
                )
    allowed = {"state": COMPONENT_STATES, "data_source": DATA_SOURCES}
    if spec.table == "road_line":
        allowed["kind"] = ROAD_KINDS
    for name, values in allowed.items():
        source = sources.get(name)
        if source:
            row = conn.execute(
                "SELECT n, attrs ->> %s FROM import_staging WHERE attrs ->> %s IS NOT NULL"
                " AND NOT (trim(attrs ->> %s) = ANY(%s)) ORDER BY n LIMIT 1",
                (source, source, source, list(values)),
            ).fetchone()
            if row:
                raise InvalidInput(
                    f"{path.name}: feature {row[0]}: {name} {row[1]!r} is not one of "
                    f"{', '.join(values)}"
                )


def _check_codes(
    conn: psycopg.Connection, spec: Kind, source: str, settings: Settings, path: Path
) -> None:
    districts = {c for (c,) in conn.execute("SELECT code FROM district").fetchall()} or {
        settings.district_code
    }
    classes = {
        codes.ClassCode(a, b) for a, b in conn.execute("SELECT major, minor FROM component_class")
    }
    for n, code in conn.execute(
        "SELECT n, trim(attrs ->> %s) FROM import_staging ORDER BY n", (source,)
    ):
        try:
            if spec.table == "component":
                codes.parse_component_code(
                    code, settings.component_minor_digits, districts, classes
                )
            else:
                codes.parse_grid_code(code, settings.grid_serial_digits, districts)
        except InvalidInput as exc:
            raise InvalidInput(f"{path.name}: feature {n}: {exc.message}") from None


def import_file(
    settings: Settings,
    path: Path,
    kind: str,
    scale: int = 500,
    layer: str | None = None,
    field_map: dict[str, str] | None = None,
    source_srs: str | None = None,
) -> ImportResult:
    """Import one layer of `path` as `kind`; everything or nothing."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown import kind {kind!r}; kinds: {', '.join(KINDS)}")
    if scale not in (500, 2000):
        raise InvalidInput("--scale must be 500 or 2000")
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"no such file: {path}")
    names = layers(path)
    if layer is None:
        layer = names[0]
    elif layer not in names:
        raise InvalidInput(f"{path.name} has no layer {layer!r}; layers: {', '.join(names)}")
    field_map = field_map or {}
    with db.transaction(settings) as conn:
        fields = _stage(conn, path, layer, settings.srid, source_srs)
        spec = kind_for(kind, _family(conn, path))
        sources = _sources(spec, fields, field_map)
        _check_values(conn, spec, sources, path)
        if spec.table in ("component", "unit_grid"):
            _check_codes(conn, spec, str(sources["code"]), settings, path)
        try:
            count = _insert(conn, spec, sources, settings.srid, scale, f"import:{path.name}", path)
        except psycopg.errors.UniqueViolation as exc:
            raise InvalidInput(
                f"{path.name}: {exc.diag.message_detail or 'duplicate code'}"
            ) from None
        except psycopg.errors.IntegrityError as exc:
            raise InvalidInput(
                f"{path.name}: rejected by {exc.diag.constraint_name or 'a constraint'}"
            ) from None
    return ImportResult(count, spec.table)


def _insert(
    conn: psycopg.Connection,
    spec: Kind,
    sources: dict[str, str | None],
    srid: int,
    scale: int,
    origin: str,
    path: Path,
) -> int:
    from psycopg import sql

    geom = sql.SQL("ST_GeomFromText(wkt, {})").format(sql.Literal(srid))
    if POINT not in spec.families:
        geom = sql.SQL("ST_Multi({})").format(geom)
    names = [sql.Identifier(c.name) for c in spec.columns]
    values = [_value(sources[c.name], c.default, c.sql_type) for c in spec.columns]
    if spec.table == "component":
        return _insert_components(conn, [c.name for c in spec.columns], values, geom, origin, path)
    if spec.table == "unit_grid":
        names.append(sql.Identifier("community_code"))
        values.append(sql.SQL("left(trim(attrs ->> {}), 12)").format(sql.Literal(sources["code"])))
        names.append(sql.Identifier("area_m2"))
        values.append(sql.SQL("ST_Area({})").format(geom))
        missing = conn.execute(
            "SELECT n, left(trim(attrs ->> %s), 12) FROM import_staging s WHERE NOT EXISTS"
            " (SELECT 1 FROM community c WHERE c.code = left(trim(s.attrs ->> %s), 12))"
            " ORDER BY n LIMIT 1",
            (sources["code"], sources["code"]),
        ).fetchone()
        if missing:
            raise InvalidInput(f"{path.name}: feature {missing[0]}: no community {missing[1]}")
    if spec.scaled:
        names.insert(0, sql.Identifier("scale"))
        values.insert(0, sql.Literal(scale))
    query = sql.SQL(
        "INSERT INTO {} ({}, geom, origin) SELECT {}, {}, {} FROM import_staging ORDER BY n"
    ).format(
        sql.Identifier(spec.table),
        sql.SQL(", ").join(names),
        sql.SQL(", ").join(values),
        geom,
        sql.Literal(origin),
    )
    return conn.execute(query).rowcount


def _insert_components(conn, names, values, geom, origin: str, path: Path) -> int:  # type: ignore[no-untyped-def]
    """Components also get their grid (the one containing them) and, by default, the
    class name and department."""
    from psycopg import sql

    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE import_points ON COMMIT DROP AS"
            " SELECT n, {} AS geom FROM import_staging"
        ).format(geom)
    )
    outside = conn.execute(
        """SELECT p.n FROM import_points p WHERE NOT EXISTS
           (SELECT 1 FROM unit_grid g WHERE ST_Covers(g.geom, p.geom)) ORDER BY p.n LIMIT 1"""
    ).fetchone()
    if outside:
        raise InvalidInput(f"{path.name}: feature {outside[0]} lies in no unit grid")
    cols = dict(zip(names, values, strict=True))
    code = cols["code"]
    query = sql.SQL(
        """INSERT INTO component (code, name, state, responsible_dept, owner_dept, maintainer_dept,
                                  data_source, grid_code, geom, origin)
           SELECT c.code, coalesce(c.name, k.name), c.state,
                  coalesce(nullif(c.responsible_dept, ''), k.department),
                  coalesce(nullif(c.owner_dept, ''), k.department),
                  coalesce(nullif(c.maintainer_dept, ''), k.department),
                  c.data_source,
                  (SELECT g.code FROM unit_grid g WHERE ST_Covers(g.geom, p.geom)
                   ORDER BY g.code LIMIT 1),
                  p.geom, {origin}
           FROM (SELECT n, {code} AS code, {name} AS name, {state} AS state,
                        {rd} AS responsible_dept, {od} AS owner_dept, {md} AS maintainer_dept,
                        {ds} AS data_source
                 FROM import_staging) c
           JOIN import_points p USING (n)
           JOIN component_class k
             ON (k.major, k.minor) = (substr(c.code, 7, 2), substr(c.code, 9, length(c.code) - 14))
           ORDER BY c.n"""
    ).format(
        origin=sql.Literal(origin),
        code=code,
        name=cols["name"],
        state=cols["state"],
        rd=cols["responsible_dept"],
        od=cols["owner_dept"],
        md=cols["maintainer_dept"],
        ds=cols["data_source"],
    )
    return conn.execute(query).rowcount
