"""CityGrid tiles: the tile grid, Mapnik rendering, metatiles, the cache and seeding.

`invalidate(settings, bbox)` is what data changes call: every cached tile of every
product that intersects the area is dropped, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapserver.settings import Settings
    from tiles.tile_grid import BBox


def invalidate(settings: Settings, bbox: BBox, served: BBox | None = None) -> int:
    """Drop the cached tiles of every product that intersect `bbox` (in the install CRS);
    `served`: only those served there (TileService.invalidate)."""
    from tiles.origin import NoTileMatrix
    from tiles.service import TileService

    try:
        service = TileService.for_cache(settings)
    except NoTileMatrix:  # no district yet, so no tile has ever been cached
        return 0
    return service.invalidate(bbox, served)
