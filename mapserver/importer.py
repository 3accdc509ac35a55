"""`citygrid import`: any file GDAL reads → the install's CRS → the map tables.

GDAL's ogr2ogr reads and reprojects the file and streams it as CSV with WKT geometry into
a temporary staging table; the rows are checked there (geometry type, required fields,
values, codes) and copied into the target table in the same transaction. Any problem
rolls everything back and is reported in one line.
"""

from __future__ import annotations

import codecs
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

from mapserver import boundaries, codes, db, grid_cover, import_addresses, source_ids
from mapserver.codes import COMPONENT_STATES
from mapserver.errors import CityGridError, InvalidInput
from mapserver.import_kinds import BOUNDARY_KINDS, KINDS, POINT, Kind, family_of, kind_for
from mapserver.settings import Settings

csv.field_size_limit(1 << 30)  # WKT of a large polygon is one CSV field
DATA_SOURCES = ("surveyed", "topographic_map", "field_annotated", "other")
ROAD_KINDS = ("arterial", "secondary", "branch", "lane")
ROAD_WIDTHS = {"arterial": 30.0, "secondary": 20.0, "branch": 10.0, "lane": 4.0}  # metres
_NUMBER = {"integer": r"^\s*-?\d+\s*$", "double precision": r"^\s*-?\d+(\.\d+)?([eE][-+]?\d+)?\s*$"}


class ImportResult(NamedTuple):
    imported: int
    table: str
    skipped: tuple[str, ...] = ()  # "feature N: reason" of each invalid feature left out
    notes: tuple[str, ...] = ()  # repairs and warnings worth telling the user


class Options(NamedTuple):
    """The forgiving import's flags (`citygrid import --help`)."""

    where: str | None = None  # OGR attribute filter
    value_map: dict[str, dict[str, str]] = {}  # column -> {file value: stored value}
    skip_invalid: bool = False
    replace: bool = False
    tolerance_m: float = 1.0  # boundaries: differences narrower than this are repaired
    id_field: str | None = None  # the file's feature id: a re-import replaces those rows


def parse_field_map(items: Iterable[str]) -> dict[str, str]:
    """TARGET=SOURCE pairs from --map-field."""
    out: dict[str, str] = {}
    for item in items:
        target, sep, source = item.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise InvalidInput(f"--map-field {item!r}: expected TARGET=SOURCE")
        out[target.strip()] = source.strip()
    return out


def parse_value_map(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """COLUMN:FROM=TO,FROM=TO pairs from --map-value."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        column, sep, pairs = item.partition(":")
        mapping = out.setdefault(column.strip(), {})
        for pair in pairs.split(",") if sep else [""]:
            old, eq, new = pair.partition("=")
            if not column.strip() or not eq or not old.strip():
                raise InvalidInput(f"--map-value {item!r}: expected COLUMN:FROM=TO[,FROM=TO]")
            mapping[old.strip()] = new.strip()
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
    return [name for name, _ in layer_types(path)]


def layer_types(path: Path) -> list[tuple[str, str]]:
    """(layer name, geometry type) of each layer of a file, as ogrinfo lists them."""
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
    found = re.findall(r"^\d+: (.+?)(?: \(([^()]*)\))?$", run.stdout, re.MULTILINE)
    if not found:
        raise InvalidInput(f"{path.name} holds no vector layers")
    return [(name, gtype or "no geometry") for name, gtype in found]


def choose_layer(path: Path, layer: str | None) -> str:
    """The layer to import: the one named, or the only one. A file of several layers needs
    --layer, and the refusal names them with their geometry types."""
    found = layer_types(path)
    names = [name for name, _ in found]
    listed = ", ".join(f"{name} ({gtype})" for name, gtype in found)
    if layer is None:
        if len(found) > 1:
            raise InvalidInput(
                f"{path.name} has {len(found)} layers: {listed}; choose one with --layer"
            )
        return names[0]
    if layer not in names:
        raise InvalidInput(f"{path.name} has no layer {layer!r}; layers: {listed}")
    return layer


def _gdal_error(text: str, path: Path) -> str:
    flat = " ".join(text.split())
    if "no coordinate system" in flat:
        return f"{path.name} declares no CRS: give it with --s-srs (e.g. --s-srs EPSG:4326)"
    if "Failed to process SRS definition" in flat:
        return "unknown CRS given with --s-srs"
    errors = re.findall(r"ERROR \d+: (.*?)(?= ERROR \d+:|$)", flat)
    reason = errors[0] if errors else "GDAL could not read it"
    if "where" in flat.lower() or "SQL Expression" in flat:
        return f"--where: GDAL cannot use it: {reason[:160]}"
    if reason.startswith("PROJ:"):  # e.g. metres in a GeoJSON, whose CRS is degrees
        return (
            f"cannot import {path.name}: its coordinates do not fit its CRS ({reason[:120]});"
            " give the CRS they are in with --s-srs"
        )
    return f"cannot import {path.name}: {reason[:200]}"


def _stage(
    conn: psycopg.Connection,
    path: Path,
    layer: str,
    srid: int,
    s_srs: str | None,
    where: str | None = None,
    encoding: str | None = None,
) -> list[str]:
    """Stream the layer, reprojected, into the temporary table import_staging; returns the
    file's field names. Text must be UTF-8, or in `encoding` (GDAL then passes a .dbf's
    bytes through as they are): a feature whose text is neither is refused by number,
    never stored with replacement characters."""
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
    if where:
        cmd += ["-where", where]
    if encoding:  # a shapefile's .dbf: its bytes as they are (other drivers ignore it)
        cmd += ["-oo", "ENCODING="]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=gdal_env())
        assert proc.stdout is not None
        try:
            reader = csv.reader(
                io.TextIOWrapper(
                    proc.stdout,
                    encoding=encoding or "utf-8",
                    errors="surrogateescape",  # undecodable bytes: found per feature below
                    newline="",
                )
            )
            header = next(reader, None) or []
            _check_text(header, 0, path, encoding)
            with (
                conn.cursor() as cur,
                cur.copy("COPY import_staging (n, wkt, attrs) FROM STDIN") as copy,
            ):
                for n, row in enumerate(reader, start=1):
                    _check_text(row, n, path, encoding)
                    attrs = {
                        k: (v if v != "" else None)
                        for k, v in zip(header[1:], row[1:], strict=False)
                    }
                    for key, value in osm_tags(attrs.get(OSM_TAGS)).items():
                        attrs.setdefault(key, value)
                    copy.write_row(
                        (n, row[0] if row else "", json.dumps(attrs, ensure_ascii=False))
                    )
        except BaseException:
            proc.kill()  # refused mid-stream: GDAL need not write the rest
            proc.wait()
            raise
        code = proc.wait()
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace")
    if code != 0:
        raise InvalidInput(_gdal_error(message, path))
    if not header or header[0] != "WKT":
        raise InvalidInput(f"{path.name}: layer {layer!r} has no geometry")
    fields = header[1:]
    if OSM_TAGS in fields:  # the tags GDAL's OSM driver keeps in one hstore field
        fields += [
            k
            for (k,) in conn.execute(
                "SELECT DISTINCT jsonb_object_keys(attrs) FROM import_staging ORDER BY 1"
            )
            if k not in fields
        ]
    return fields


def _check_text(row: list[str], n: int, path: Path, encoding: str | None) -> None:
    """Refuse a feature (n = 0: the field names) holding bytes its encoding cannot decode."""
    for value in row:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            what = f"feature {n}" if n else "the field names"
            if encoding:
                raise InvalidInput(f"{path.name}: {what}: not {encoding} text") from None
            raise InvalidInput(
                f"{path.name}: {what}: text that is not UTF-8; give the file's encoding"
                " with --encoding (e.g. --encoding GBK)"
            ) from None


def check_encoding(encoding: str | None) -> str | None:
    """The codec's canonical name, or a one-line refusal of a name Python does not know."""
    if encoding is None:
        return None
    try:
        return codecs.lookup(encoding).name
    except (LookupError, ValueError):
        raise InvalidInput(
            f"--encoding {encoding!r}: not a text encoding (e.g. GBK, GB18030, Big5, latin-1)"
        ) from None


OSM_TAGS = "other_tags"
_HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')


def osm_tags(text: str | None) -> dict[str, str]:
    """GDAL's OSM `other_tags` ('"addr:street"=>"Tikankatu","addr:housenumber"=>"11"') as a
    dict, so that --map-field house_number=addr:housenumber finds them."""
    if not text:
        return {}
    return {_unescape(k): _unescape(v) for k, v in _HSTORE.findall(text)}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


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


_PARSE = """
CREATE FUNCTION pg_temp.citygrid_parse(wkt text, OUT g geometry, OUT gtype text, OUT bad text)
AS $$
BEGIN
    g := ST_GeomFromText(nullif(wkt, ''));
    gtype := GeometryType(g);
    IF g IS NOT NULL AND NOT ST_IsValid(g) THEN
        bad := ST_IsValidReason(g);
        g := ST_MakeValid(g);
    END IF;
EXCEPTION WHEN others THEN
    g := NULL;
    bad := SQLERRM;
END $$ LANGUAGE plpgsql
"""
_DIMENSION = {"point": 1, "line": 2, "polygon": 3}
# Whether a number the pattern accepted also fits its column (as _value casts it): 1e300
# floors or 1e999 metres are refused by feature, not by a failed INSERT.
_FITS = """
CREATE FUNCTION pg_temp.citygrid_fits(v text, sql_type text) RETURNS boolean AS $$
BEGIN
    IF sql_type = 'integer' THEN
        PERFORM round(v::numeric)::integer;
    ELSE
        PERFORM v::double precision;
    END IF;
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$ LANGUAGE plpgsql
"""


def _parse(conn: psycopg.Connection) -> None:
    """Each staged feature's geometry, parsed one by one: an unreadable or invalid one is
    marked (`bad`) instead of failing the whole file; invalid ones are repaired."""
    conn.execute(_PARSE)
    conn.execute(_FITS)
    conn.execute(
        "ALTER TABLE import_staging ADD COLUMN geom geometry, ADD COLUMN gtype text,"
        " ADD COLUMN bad text"
    )
    conn.execute(
        "UPDATE import_staging SET (geom, gtype, bad) ="
        " (SELECT g, gtype, bad FROM pg_temp.citygrid_parse(wkt))"
    )


def _repaired(
    conn: psycopg.Connection, family: str, path: Path, skip_invalid: bool
) -> tuple[tuple[str, ...], int]:
    """Keep the repaired geometries of the file's family; skip (or refuse) the rest.
    Returns the skipped features and how many were repaired."""
    conn.execute(
        "UPDATE import_staging SET geom = ST_CollectionExtract(geom, %s)"
        " WHERE bad IS NOT NULL AND geom IS NOT NULL",
        (_DIMENSION[family],),
    )
    rows = conn.execute(
        "SELECT n, coalesce(bad, 'no geometry') FROM import_staging"
        " WHERE geom IS NULL OR ST_IsEmpty(geom) ORDER BY n"
    ).fetchall()
    if rows and not skip_invalid:
        n, reason = rows[0]
        raise InvalidInput(
            f"{path.name}: feature {n}: geometry cannot be repaired ({reason[:120]});"
            f" {len(rows)} such feature(s), --skip-invalid leaves them out"
        )
    conn.execute("DELETE FROM import_staging WHERE geom IS NULL OR ST_IsEmpty(geom)")
    repaired = conn.execute("SELECT count(*) FROM import_staging WHERE bad IS NOT NULL").fetchone()
    if not conn.execute("SELECT 1 FROM import_staging LIMIT 1").fetchone():
        raise InvalidInput(f"{path.name}: no feature is left to import")
    return tuple(f"feature {n}: {reason[:120]}" for n, reason in rows), int(
        repaired[0] if repaired else 0
    )


def _family(conn: psycopg.Connection, path: Path) -> str:
    rows = conn.execute(
        "SELECT min(n), gtype FROM import_staging WHERE gtype IS NOT NULL GROUP BY 2"
    ).fetchall()
    if not rows:
        if conn.execute("SELECT 1 FROM import_staging LIMIT 1").fetchone():
            raise InvalidInput(f"{path.name}: no feature has a readable geometry")
        raise InvalidInput(f"{path.name}: the layer has no features")
    found = {}
    for n, gtype in rows:
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
    if sql_type == "integer":  # 3.5 floors: rounded (and warned about by _check_values)
        return sql.SQL(
            "coalesce(round(trim(attrs ->> {})::numeric)::integer, " + fallback + "::integer)"
        ).format(sql.Literal(source))
    return sql.SQL(
        "coalesce(trim(attrs ->> {})::" + sql_type + ", " + fallback + "::" + sql_type + ")"
    ).format(sql.Literal(source))


def _map_values(
    conn: psycopg.Connection,
    spec: Kind,
    sources: dict[str, str | None],
    value_map: dict[str, dict[str, str]],
) -> None:
    """--map-value: rewrite the file's values of a column before they are checked."""
    columns = {c.name for c in spec.columns}
    for column, mapping in value_map.items():
        if column not in columns:
            raise InvalidInput(
                f"--map-value {column}: not a column of {spec.table}; "
                f"columns: {', '.join(sorted(columns))}"
            )
        source = sources.get(column)
        if source is None:
            raise InvalidInput(f"--map-value {column}: the file has no field for it")
        conn.execute(
            "UPDATE import_staging SET attrs = jsonb_set(attrs, ARRAY[%s],"
            " to_jsonb(%s::jsonb ->> trim(attrs ->> %s))) WHERE %s::jsonb ? trim(attrs ->> %s)",
            (source, json.dumps(mapping), source, json.dumps(mapping), source),
        )


def _check_values(
    conn: psycopg.Connection, spec: Kind, sources: dict[str, str | None], path: Path
) -> list[str]:
    """Refuses the first bad value; returns warnings (values changed on the way in)."""
    warnings: list[str] = []
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
        pattern = _NUMBER["double precision"] if col.sql_type in _NUMBER else None
        if col.sql_type == "integer":
            rounded = conn.execute(
                "SELECT count(*), min(n) FROM import_staging WHERE attrs ->> %s ~ %s"
                " AND attrs ->> %s !~ %s",
                (source, pattern, source, _NUMBER["integer"]),
            ).fetchone()
            if rounded and rounded[0]:
                warnings.append(
                    f"{col.name}: {rounded[0]} value(s) not whole numbers were rounded"
                    f" (first: feature {rounded[1]})"
                )
        if pattern:
            row = conn.execute(
                "SELECT n, attrs ->> %s FROM import_staging WHERE attrs ->> %s IS NOT NULL"
                " AND attrs ->> %s !~ %s ORDER BY n LIMIT 1",
                (source, source, source, pattern),
            ).fetchone()
            if row:
                raise InvalidInput(
                    f"{path.name}: feature {row[0]}: {col.name} {row[1][:40]!r} is not a number"
                )
            row = conn.execute(
                "SELECT n, attrs ->> %s FROM import_staging WHERE attrs ->> %s IS NOT NULL"
                " AND NOT pg_temp.citygrid_fits(trim(attrs ->> %s), %s) ORDER BY n LIMIT 1",
                (source, source, source, col.sql_type),
            ).fetchone()
            if row:
                raise InvalidInput(
                    f"{path.name}: feature {row[0]}: {col.name} {row[1][:40]!r} is out of range"
                    f" for {'a whole number' if col.sql_type == 'integer' else 'a number'}"
                )
            if col.positive:  # as stored: 0.4 floors would round to 0
                value = "trim(attrs ->> %s)::double precision"
                if col.sql_type == "integer":
                    value = f"round({value})"
                row = conn.execute(
                    "SELECT n, attrs ->> %s FROM import_staging WHERE attrs ->> %s IS NOT NULL"
                    f" AND {value} <= 0 ORDER BY n LIMIT 1",
                    (source, source, source),
                ).fetchone()
                if row:
                    raise InvalidInput(
                        f"{path.name}: feature {row[0]}: {col.name} {row[1][:40]!r} must be above 0"
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
                    f"{', '.join(values)} (--map-value {name}:{row[1]}=VALUE maps it)"
                )
    return warnings


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
    options: Options | None = None,
    encoding: str | None = None,
) -> ImportResult:
    """Import one layer of `path` as `kind`; everything or nothing. `encoding`: the file's
    text where it does not say (a .dbf without its .cpg, a CSV); else UTF-8."""
    options = options or Options()
    encoding = check_encoding(encoding)
    if kind not in KINDS:
        raise InvalidInput(f"unknown import kind {kind!r}; kinds: {', '.join(KINDS)}")
    if scale not in (500, 2000):
        raise InvalidInput("--scale must be 500 or 2000")
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"no such file: {path}")
    layer = choose_layer(path, layer)
    field_map = field_map or {}
    try:
        return _import(settings, path, kind, scale, layer, field_map, source_srs, options, encoding)
    except psycopg.errors.DataError as exc:  # a value no check above foresaw: still one line
        raise InvalidInput(f"{path.name}: {exc.diag.message_primary or 'a bad value'}") from None


def _import(
    settings: Settings,
    path: Path,
    kind: str,
    scale: int,
    layer: str,
    field_map: dict[str, str],
    source_srs: str | None,
    options: Options,
    encoding: str | None,
) -> ImportResult:
    origin = f"import:{path.name}"
    with db.transaction(settings) as conn:
        _check_srid(conn, settings.srid)
        fields = _stage(conn, path, layer, settings.srid, source_srs, options.where, encoding)
        _parse(conn)
        family = _family(conn, path)
        spec = kind_for(kind, family)
        skipped, repaired = _repaired(conn, family, path, options.skip_invalid)
        notes = [f"{repaired} invalid geometries repaired (MakeValid)"] if repaired else []
        sources = _sources(spec, fields, field_map)
        _map_values(conn, spec, sources, options.value_map)
        if kind in BOUNDARY_KINDS:
            checked = boundaries.import_boundaries(
                conn,
                kind,
                sources,
                settings.srid,
                settings.district_code,
                origin,
                options.tolerance_m,
            )
            return ImportResult(len(checked.areas), spec.table, skipped, (*notes, *checked.repairs))
        notes += _check_values(conn, spec, sources, path)
        if spec.table in ("component", "unit_grid"):
            _check_codes(conn, spec, str(sources["code"]), settings, path)
        if spec.table == "unit_grid":
            covered = grid_cover.import_grids(conn, sources, settings, origin, options.tolerance_m)
            return ImportResult(covered.imported, spec.table, skipped, (*notes, *covered.notes))
        keyed = source_ids.prepare(conn, spec, options.id_field, fields, path)
        if keyed:
            notes += source_ids.replace(
                conn, spec, scale, origin=origin, path=path, unkeyed=options.replace
            )
        else:
            _replace(conn, spec, origin, scale, options.replace, path)
        if spec.table == "address":
            count, more = import_addresses.insert(conn, sources, settings, origin, path, keyed)
            return ImportResult(count, spec.table, skipped, (*notes, *more))
        try:
            count = _insert(conn, spec, sources, settings.srid, scale, origin, path, keyed)
        except psycopg.errors.UniqueViolation as exc:
            raise InvalidInput(
                f"{path.name}: {exc.diag.message_detail or 'duplicate code'}"
            ) from None
        except psycopg.errors.IntegrityError as exc:
            raise InvalidInput(
                f"{path.name}: rejected by {exc.diag.constraint_name or 'a constraint'}"
            ) from None
    return ImportResult(count, spec.table, skipped, tuple(notes))


def _check_srid(conn: psycopg.Connection, srid: int) -> None:
    row = conn.execute("SELECT value FROM install_info WHERE key = 'srid'").fetchone()
    if row is not None and int(row[0]) != srid:
        raise InvalidInput(
            f"the database holds EPSG:{row[0]} but the settings say srid = {srid}:"
            " fix CITYGRID_SRID (or the settings file) to match the database"
        )


def _replace(
    conn: psycopg.Connection, spec: Kind, origin: str, scale: int, replace: bool, path: Path
) -> None:
    """Re-importing a file replaces what it brought last time, never doubles it."""
    where = "origin = %s" + (" AND scale = %s" if spec.scaled else "")
    params: tuple[object, ...] = (origin, scale) if spec.scaled else (origin,)
    row = conn.execute(f"SELECT count(*) FROM {spec.table} WHERE {where}", params).fetchone()
    count = int(row[0]) if row else 0
    if not count:
        return
    at = f" at 1:{scale}" if spec.scaled else ""
    if not replace:
        raise InvalidInput(
            f"an import of {path.name}{at} already exists ({count} {spec.table} rows):"
            " --replace replaces it"
        )
    try:
        with conn.transaction():
            conn.execute(f"DELETE FROM {spec.table} WHERE {where}", params)
    except psycopg.errors.ForeignKeyViolation:
        raise InvalidInput(
            f"--replace: rows of the earlier import of {path.name} are still referenced"
            " (cases or components keep them)"
        ) from None


def _insert(
    conn: psycopg.Connection,
    spec: Kind,
    sources: dict[str, str | None],
    srid: int,
    scale: int,
    origin: str,
    path: Path,
    keyed: bool = False,
) -> int:
    from psycopg import sql

    geom = sql.SQL("ST_SetSRID(geom, {})").format(sql.Literal(srid))
    if POINT not in spec.families:
        geom = sql.SQL("ST_Multi({})").format(geom)
    names = [sql.Identifier(c.name) for c in spec.columns]
    values = [_value(sources[c.name], c.default, c.sql_type) for c in spec.columns]
    if spec.table == "road_line":  # no width in the file: the road class's usual width
        kind_value = values[[c.name for c in spec.columns].index("kind")]
        at = [c.name for c in spec.columns].index("width_m")
        values[at] = sql.SQL("coalesce({}, {})").format(
            values[at],
            sql.SQL(
                "CASE "
                + " ".join(f"WHEN {{k}} = '{k}' THEN {w}" for k, w in ROAD_WIDTHS.items())
                + " ELSE 7 END"
            ).format(k=kind_value),
        )
    if spec.table == "component":
        return _insert_components(conn, [c.name for c in spec.columns], values, geom, origin, path)
    if spec.scaled:
        names.insert(0, sql.Identifier("scale"))
        values.insert(0, sql.Literal(scale))
    if keyed:
        names.append(sql.Identifier("source_id"))
        values.append(sql.SQL("source_id"))
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
