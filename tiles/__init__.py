"""CityGrid tiles: the tile grid, Mapnik rendering, metatiles, the cache and seeding.

`invalidate(settings, bbox)` is what data changes call: every cached tile of every
product that intersects the area is dropped, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapserver.settings import Settings
    from tiles.tile_grid import BBox


def invalidate(settings: Settings, bbox: BBox) -> int:
    """Drop the cached tiles of every product that intersect `bbox` (in the install CRS)."""
    from tiles.cache import DiskCache
    from tiles.lock import MetatileLocks
    from tiles.service import TileService, grid_from

    class _NoRender:
        def render_metatile(self, product: str, z: int, mx: int, my: int) -> dict:  # type: ignore[type-arg]
            raise RuntimeError("invalidation never renders")

    from pathlib import Path

    svc = TileService(
        grid_from(settings),
        DiskCache(settings.tile_dir),
        MetatileLocks(Path(settings.data_dir) / "locks"),
        _NoRender(),
        None,
        settings.tile_metatile,
    )
    return svc.invalidate(bbox)
