"""Mapnik XML for a product: the template in styles/, with the shared palette and the
install's CRS filled in, and the PostGIS datasources of its layers.

Templates use `${name}` for palette entries, `${include:NAME}` for a shared snippet
(styles/NAME.inc.xml) and `${layer:ID|STYLE|SQL}` for a PostGIS layer; each layer's query
is wrapped with the `!bbox!` filter so PostGIS uses its spatial index.

The XML holds no connection details at all: the renderer attaches each layer's datasource
(`Style.datasources`) in memory, so a database password is never written into a Map
document, a file or a log; without one in the URL, libpq takes it from PGPASSFILE.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

from psycopg import conninfo

STYLES_DIR = Path(__file__).resolve().parent.parent / "styles"
FONT_DIRS = ("/usr/share/fonts/opentype/noto", "/usr/share/fonts/truetype/wqy")
_INCLUDE = re.compile(r"\$\{include:([a-z0-9_]+)\}")
_LAYER = re.compile(r"\$\{layer:([a-z0-9_]+)\|([a-z0-9-]+)\|([^}]*)\}")


@lru_cache(maxsize=1)
def palette() -> dict[str, str]:
    with open(STYLES_DIR / "palette.toml", "rb") as fh:
        data = tomllib.load(fh)
    out: dict[str, str] = {}
    for section in data.values():
        out.update({k: str(v) for k, v in section.items()})
    return out


class Style(NamedTuple):
    """A product's Map XML (no connection details) and its layers' PostGIS queries, in
    document order."""

    xml: str
    tables: tuple[str, ...]

    def datasources(self, database_url: str, srid: int, extent: str) -> list[dict[str, str]]:
        """Each layer's datasource parameters, password included: for memory only."""
        return [datasource_parameters(database_url, srid, extent, t) for t in self.tables]


def datasource_parameters(database_url: str, srid: int, extent: str, table: str) -> dict[str, str]:
    params = conninfo.conninfo_to_dict(database_url)
    out = {"type": "postgis"}
    for name, default in (("host", "127.0.0.1"), ("port", "5432"), ("dbname", ""), ("user", "")):
        value = str(params.get(name) or default)
        if value:
            out[name] = value
    if params.get("password"):
        out["password"] = str(params["password"])
    out.update(
        table=table,
        geometry_field="geom",
        srid=str(int(srid)),
        extent=extent,
        persist_connection="true",
        max_size="4",
        estimate_extent="false",
    )
    return out


def _layer(match: re.Match[str], srs: str, tables: list[str]) -> str:
    layer_id, style, query = match.groups()
    tables.append(f"(SELECT * FROM ({query}) AS src WHERE src.geom && !bbox!) AS q")
    return (
        f"<Layer name={quoteattr(layer_id)} srs={quoteattr(srs)}>\n"
        f"    <StyleName>{escape(style)}</StyleName>\n"
        f"  </Layer>"
    )


def render_style(style_file: str, srs: str, locale: str = "zh-CN") -> Style:
    """The complete Mapnik XML for one product, less its datasources; labels written the
    way the install's locale writes them (`${house_number_label}`: 52号 or 52)."""
    from mapserver import locales

    text = (STYLES_DIR / style_file).read_text("utf-8")
    text = _INCLUDE.sub(lambda m: (STYLES_DIR / f"{m[1]}.inc.xml").read_text("utf-8"), text)
    tables: list[str] = []
    text = _LAYER.sub(lambda m: _layer(m, srs, tables), text)
    values = {k: escape(v, {'"': "&quot;"}) for k, v in palette().items()}
    values["srs"] = escape(srs, {'"': "&quot;"})
    values["house_number_label"] = escape(locales.get(locale).house_number_mapnik)
    return Style(Template(text).substitute(values), tuple(tables))
