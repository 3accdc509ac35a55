"""What each kind of import accepts and where it goes: a pure table of specs."""

from __future__ import annotations

from dataclasses import dataclass, field

from mapserver.errors import InvalidInput

POLYGON, LINE, POINT = "polygon", "line", "point"
FAMILY_TYPES = {
    POLYGON: ("POLYGON", "MULTIPOLYGON"),
    LINE: ("LINESTRING", "MULTILINESTRING"),
    POINT: ("POINT",),
}


@dataclass(frozen=True)
class Column:
    """A target column: SQL type to cast to and the default when the file lacks it."""

    name: str
    sql_type: str = "text"
    default: str | None = "''"  # an SQL literal; None = required
    positive: bool = False  # a number above 0 (the table's CHECK), refused naming the feature


@dataclass(frozen=True)
class Kind:
    table: str
    families: tuple[str, ...]
    columns: tuple[Column, ...] = field(default_factory=tuple)
    scaled: bool = True  # has a scale column (basemap tables)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.default is None)


KINDS: dict[str, Kind] = {
    "buildings": Kind(
        "building",
        (POLYGON,),
        (
            Column("name"),
            Column("house_number"),
            Column("road_name"),
            Column("floors", "integer", "NULL", positive=True),
            Column("structure"),
        ),
    ),
    "roads": Kind(
        "road_line",
        (LINE, POLYGON),
        (
            Column("name"),
            Column("kind", "text", "'branch'"),
            Column("width_m", "double precision", "NULL", positive=True),  # NULL: by kind
        ),
    ),
    "water": Kind("water", (POLYGON,), (Column("name"), Column("kind", "text", "'water'"))),
    "green": Kind("green", (POLYGON,), (Column("name"), Column("kind", "text", "'green'"))),
    "annotations": Kind(
        "annotation",
        (POINT,),
        (
            Column("text", "text", None),
            Column("kind", "text", "'place'"),
            Column("angle", "double precision", "0"),
        ),
    ),
    "components": Kind(
        "component",
        (POINT,),
        (
            Column("code", "text", None),
            Column("name", "text", "NULL"),
            Column("state", "text", "'intact'"),
            Column("responsible_dept"),
            Column("owner_dept"),
            Column("maintainer_dept"),
            Column("data_source", "text", "'surveyed'"),
        ),
        scaled=False,
    ),
    "grids": Kind(
        "unit_grid",
        (POLYGON,),
        (
            Column("code", "text", None),
            Column("land_use"),
            Column("management_level"),
            Column("responsible"),
        ),
        scaled=False,
    ),
    # Addresses for the geocoder: road + house number, a landmark, or both.
    "addresses": Kind(
        "address",
        (POINT, POLYGON),
        (Column("road_name"), Column("house_number"), Column("landmark")),
        scaled=False,
    ),
    # The administrative hierarchy (mapserver.boundaries checks and stores these).
    "district": Kind(
        "district",
        (POLYGON,),
        (Column("code", "text", None), Column("name", "text", None)),
        scaled=False,
    ),
    "streets": Kind(
        "street",
        (POLYGON,),
        (Column("code", "text", None), Column("name", "text", None)),
        scaled=False,
    ),
    "communities": Kind(
        "community",
        (POLYGON,),
        (Column("code", "text", None), Column("name", "text", None)),
        scaled=False,
    ),
}
BOUNDARY_KINDS = ("district", "streets", "communities")

# Road files of polygons are road surfaces; their only attribute is the road kind.
ROAD_SURFACE = Kind("road_surface", (POLYGON,), (Column("kind", "text", "'road'"),))


def kind_for(name: str, family: str) -> Kind:
    spec = KINDS.get(name)
    if spec is None:
        raise InvalidInput(f"unknown import kind {name!r}; kinds: {', '.join(KINDS)}")
    if family not in spec.families:
        wanted = " or ".join(spec.families)
        raise InvalidInput(f"{name} need {wanted} geometries, the file has {family} geometries")
    if name == "roads" and family == POLYGON:
        return ROAD_SURFACE
    return spec


def family_of(geometry_type: str) -> str | None:
    upper = geometry_type.upper()
    for family, types in FAMILY_TYPES.items():
        if upper in types:
            return family
    if upper == "MULTIPOINT":
        return "multipoint"
    return None
