"""`citygrid demo`: a deterministic, realistic-looking district generated from nothing.

Generation (`district.generate`) is pure and fast; loading (`load.load`) replaces the
previous demo rows in one transaction. Same area and seed → the same data.
"""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mapserver import db, locales
from mapserver.demo import placement
from mapserver.demo.district import DemoDistrict, generate
from mapserver.demo.load import load, refuse_if_cases
from mapserver.errors import InvalidInput
from mapserver.settings import Settings

__all__ = ["DemoDistrict", "build_demo", "generate"]

PHASES = 13  # generation steps + loading steps, for the progress bar
# The progress bar's words per phase code, in the install's language (zh-CN as it always was).
PHASE_NAMES: dict[str, dict[str, str]] = {
    "zh-CN": {
        "start": "生成示范城区",
        "roads": "道路与街区",
        "grids": "单元网格",
        "buildings": "建筑与地物",
        "components": "部件",
        "addresses": "门牌地址",
        "generalise": "1:2000 综合",
        "clear": "清除旧数据",
        "divisions": "行政区划",
        "organisations": "机构",
        "basemap": "底图要素",
        "load_addresses": "门牌地址",
        "load_components": "部件",
        "done": "完成",
    },
    "en": {
        "start": "Generating the demo district",
        "roads": "Roads and blocks",
        "grids": "Unit grids",
        "buildings": "Buildings and features",
        "components": "Components",
        "addresses": "House numbers and addresses",
        "generalise": "1:2000 generalisation",
        "clear": "Clearing the old demo data",
        "divisions": "Districts, streets, communities",
        "organisations": "Organisations",
        "basemap": "Base map features",
        "load_addresses": "Loading addresses",
        "load_components": "Loading components",
        "done": "Done",
    },
}


def build_demo(
    settings: Settings,
    area_km2: float = 4.0,
    seed: int = 1,
    progress: bool = True,
    at: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Generate the demo district and replace the demo data in the database with it; its
    centre is `at` (install CRS metres) or inside the CRS's area of use (demo.placement)."""
    if not 0.25 <= area_km2 <= 400:
        raise InvalidInput("--area-km2 must be between 0.25 and 400")
    if settings.component_minor_digits != 2:
        raise InvalidInput("the demo district uses the 16-digit component codes (2-digit minor)")
    with db.connect(settings) as conn:
        refuse_if_cases(conn)  # before minutes of generating, not after
        if at is not None:
            centre = placement.checked(conn, settings.srid, at)
        else:
            centre = placement.centre(conn, settings.srid)
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        words = PHASE_NAMES[locales.get(settings.locale).code]
        task = bar.add_task(words["start"], total=PHASES)

        def step(phase: str) -> None:
            bar.update(task, description=words.get(phase, phase), advance=1)

        district = generate(
            area_km2,
            seed,
            settings.district_code,
            settings.grid_serial_digits,
            settings.component_minor_digits,
            step,
            centre,
        )
        with db.transaction(settings) as conn:
            counts = load(conn, district, settings.srid, settings.district_name, step)
        bar.update(task, description=words["done"], completed=PHASES)
    seconds = time.perf_counter() - started
    components = counts["component"]
    return {
        "area_km2": area_km2,
        "seed": seed,
        "streets": counts["street"],
        "communities": counts["community"],
        "grids": counts["unit_grid"],
        "buildings_500": counts["building_500"],
        "buildings_2000": counts["building_2000"],
        "roads": counts["road_line"],
        "addresses": counts["address"],
        "components": components,
        "components_per_km2": round(components / area_km2),
        "seconds": round(seconds, 2),
    }
