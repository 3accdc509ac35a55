"""The services one app instance uses, wired once in `create_app` and reached through
`services()`: a typed accessor instead of string keys in `app.extensions`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Flask, current_app

from mapserver.settings import Settings

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from audit.writer import AuditWriter
    from auth.access import Declarations
    from auth.gateway import Gateway
    from mapserver.cases.calendar import WorkCalendar
    from mapserver.components.kept import Components
    from tiles.service import TileService
    from tiles.source import Tiles
    from tiles.street_scope import StreetIndex

KEY = "citygrid"
STREETS_TTL = 300.0  # street polygons change rarely; re-read them this often
CALENDAR_TTL = 5.0  # how soon another process sees a changed calendar override


@dataclass
class Services:
    settings: Settings
    pool: ConnectionPool
    audit: AuditWriter
    gateway: Gateway
    declarations: Declarations
    _tiles: TileService | None = None
    _source: Tiles | None = None
    _components: Components | None = None
    _streets: tuple[float, StreetIndex] | None = None
    _calendar: tuple[float, int, WorkCalendar] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def tiles(self) -> TileService:
        """The tile service, built on first use (it opens Mapnik styles). A gateway of two
        zones (`renderer_url` set) has none: it may not touch the map database."""
        if self.settings.renderer_url:
            from mapserver.errors import ElsewhereInZones

            raise ElsewhereInZones("not available on this gateway: the map is in the renderer zone")
        if self._tiles is None:
            from tiles.service import TileService

            with self._lock:
                if self._tiles is None:
                    self._tiles = TileService.from_settings(self.settings)
        return self._tiles

    def tile_source(self) -> Tiles:
        """The tile interface the tile routes call (tiles.source): the tile service in this
        process, or the renderer service of the secure zone when `renderer_url` is set."""
        if self._source is None:
            with self._lock:
                if self._source is None:
                    if self.settings.renderer_url:
                        from mapserver.cases import on_map
                        from tiles.remote import RemoteTiles

                        remote = RemoteTiles.from_settings(self.settings)
                        # The cases overlay is drawn there from the cases here.
                        remote.marks = lambda z, x, y: on_map.marks_near(self, z, x, y)
                        self._source = remote
                    else:
                        from tiles.source import LocalTiles

                        tiles = self.tiles()
                        self._source = LocalTiles(
                            tiles, self.pool.connection, self.settings.srid, self.settings,
                            self._map_connection,
                        )  # fmt: skip
        return self._source

    def components(self) -> Components:
        """Where the district's components are kept (mapserver.components.kept): this
        process's database, or the secure zone's, asked of the renderer, in two zones."""
        if self._components is None:
            with self._lock:
                if self._components is None:
                    if self.settings.renderer_url:
                        from mapserver.components.remote import RemoteComponents
                        from tiles.remote import RemoteTiles

                        source = self.tile_source()
                        assert isinstance(source, RemoteTiles)
                        self._components = RemoteComponents(source)
                    else:
                        from mapserver.components.kept import LocalComponents

                        self._components = LocalComponents(self.settings, self.tiles())
        return self._components

    def _map_connection(self) -> psycopg.Connection:
        """A connection as the read-only map role, apart from the pool (tiles.source)."""
        import psycopg

        return psycopg.connect(self.settings.map_reader_database_url, autocommit=True)

    def calendar(self) -> WorkCalendar:
        """The work calendar case deadlines are counted on: the settings' with the
        overrides administrators keep in the database (mapserver.maintenance), re-read when
        their version changes (checked at most every CALENDAR_TTL seconds)."""
        held = self._calendar
        if held is not None and held[0] > time.monotonic():
            return held[2]
        from mapserver.cases.calendar import WorkCalendar
        from mapserver.maintenance import calendar_overrides

        with self._lock, self.pool.connection() as conn:
            version = calendar_overrides.version(conn)
            if held is None or held[1] != version:
                base = WorkCalendar.from_settings(self.settings)
                held = (0.0, version, calendar_overrides.apply(base, conn))
            self._calendar = (time.monotonic() + CALENDAR_TTL, version, held[2])
        return held[2]

    def calendar_changed(self) -> None:
        """Re-read the calendar at its next use (after a change in this process)."""
        self._calendar = None

    def streets(self) -> StreetIndex:
        """Which tiles touch which street, read at most every STREETS_TTL seconds."""
        held = self._streets
        if held is not None and held[0] > time.monotonic():
            return held[1]
        from tiles import street_scope

        remote = self.tile_source().street_index()
        if remote is not None:  # two zones: the renderer's, re-read on its own schedule
            return remote
        with self._lock:
            held = self._streets
            if held is None or held[0] <= time.monotonic():
                with self.pool.connection() as conn:
                    index = street_scope.load(conn, self.tiles().grid, self.settings.srid)
                held = (time.monotonic() + STREETS_TTL, index)
                self._streets = held
        return held[1]

    # -- the ScopeContext of auth.access: what route scopes may consult (no I/O per call)

    def scale_of(self, z: int) -> int | None:
        return self.tile_source().scale_of(z)

    def streets_of_tile(self, z: int, x: int, y: int) -> frozenset[str]:
        return self.streets().streets_of_tile(z, x, y)


def attach(app: Flask, found: Services) -> None:
    app.extensions[KEY] = found


def services(app: Flask | None = None) -> Services:
    return (app or current_app).extensions[KEY]  # type: ignore[no-any-return]
