"""Mapnik XML for a product: the template in styles/, with the shared palette, the
install's CRS and the database connection filled in.

Templates use `${name}` for palette entries, `${include:NAME}` for a shared snippet
(styles/NAME.inc.xml) and `${layer:ID|STYLE|SQL}` for a PostGIS layer; each layer's query
is wrapped with the `!bbox!` filter so PostGIS uses its spatial index.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from string import Template
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


def datasource_parameters(database_url: str, srid: int, extent: str) -> str:
    params = conninfo.conninfo_to_dict(database_url)
    mapping = {
        "host": params.get("host", "127.0.0.1"),
        "port": params.get("port", "5432"),
        "dbname": params.get("dbname", ""),
        "user": params.get("user", ""),
        "password": params.get("password", ""),
    }
    lines = ['<Parameter name="type">postgis</Parameter>']
    for name, value in mapping.items():
        if value:
            lines.append(f'<Parameter name="{name}">{escape(str(value))}</Parameter>')
    lines += [
        '<Parameter name="geometry_field">geom</Parameter>',
        f'<Parameter name="srid">{int(srid)}</Parameter>',
        f'<Parameter name="extent">{escape(extent)}</Parameter>',
        '<Parameter name="persist_connection">true</Parameter>',
        '<Parameter name="max_size">4</Parameter>',
        '<Parameter name="estimate_extent">false</Parameter>',
    ]
    return "\n      ".join(lines)


def _layer(match: re.Match[str], srs: str, datasource: str) -> str:
    layer_id, style, query = match.groups()
    table = f"(SELECT * FROM ({query}) AS src WHERE src.geom && !bbox!) AS q"
    return (
        f"<Layer name={quoteattr(layer_id)} srs={quoteattr(srs)}>\n"
        f"    <StyleName>{escape(style)}</StyleName>\n"
        f"    <Datasource>\n      {datasource}\n"
        f'      <Parameter name="table">{escape(table)}</Parameter>\n'
        f"    </Datasource>\n  </Layer>"
    )


def render_style(style_file: str, srs: str, database_url: str, srid: int, extent: str) -> str:
    """The complete Mapnik XML for one product."""
    text = (STYLES_DIR / style_file).read_text("utf-8")
    text = _INCLUDE.sub(lambda m: (STYLES_DIR / f"{m[1]}.inc.xml").read_text("utf-8"), text)
    datasource = datasource_parameters(database_url, srid, extent)
    text = _LAYER.sub(lambda m: _layer(m, srs, datasource), text)
    values = {k: escape(v, {'"': "&quot;"}) for k, v in palette().items()}
    values["srs"] = escape(srs, {'"': "&quot;"})
    return Template(text).substitute(values)
