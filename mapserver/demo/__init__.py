"""`citygrid demo`: a deterministic, realistic-looking district generated from nothing.

Generation (`district.generate`) is pure and fast; loading (`load.load`) replaces the
previous demo rows in one transaction. Same area and seed → the same data.
"""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mapserver import db
from mapserver.demo import placement
from mapserver.demo.district import DemoDistrict, generate
from mapserver.demo.load import load, refuse_if_cases
from mapserver.errors import InvalidInput
from mapserver.settings import Settings

__all__ = ["DemoDistrict", "build_demo", "generate"]

PHASES = 13  # generation steps + loading steps, for the progress bar


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
        centre = at if at is not None else placement.centre(conn, settings.srid)
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task("生成示范城区", total=PHASES)

        def step(name: str) -> None:
            bar.update(task, description=name, advance=1)

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
        bar.update(task, description="完成", completed=PHASES)
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
