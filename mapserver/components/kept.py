"""Where a district's components are kept, as the component routes call it: in this
process's database (`LocalComponents`), or in the map database of the secure zone, asked of
the renderer service (mapserver.components.remote) when the gateway runs in two zones. The
routes do the same either way: who asks, which departments are theirs, the signed action
and the audit entry stay with the gateway; the components, their points and history stay
with the map.

A change is one `Done`: what the person sees, the codes it changed (for the city platform:
`items`, their fields without a point) and the points whose pictures changed (dropped from
the tile cache once committed: `expire`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import psycopg

from mapserver.components import bulk, store
from mapserver.exchange import components as exchange
from mapserver.settings import Settings

if TYPE_CHECKING:
    from tiles.service import TileService  # Mapnik's: only where the map is

log = logging.getLogger("citygrid.components")

# Products that draw components, and how far (pixels of each level) around a component's
# point a change reaches: half the largest marker (11 px, a missing component) and rounding.
PRODUCTS = ("topo500", "components")
EXPIRE_PX = 8


class Signed(NamedTuple):
    """A verified signed action: its signer, its number where it was stored, what it signed
    for, and the envelope as the person sent it (the renderer checks the signature again)."""

    account: str
    action_id: int
    parameters: dict[str, Any]
    envelope: Any


class Done(NamedTuple):
    shown: dict[str, Any]  # the component as the person sees it (no cases), or an import's result
    codes: list[str]
    items: list[dict[str, Any]]  # the changed components for the city platform (no point)
    points: list[store.Point]  # empty where the map's own zone dropped its tiles already


class Components(Protocol):
    def listing(
        self, conn: psycopg.Connection, own: frozenset[str], args: Mapping[str, str], locale: str
    ) -> dict[str, Any]: ...

    def detail(
        self, conn: psycopg.Connection, code: str, own: frozenset[str], locale: str
    ) -> dict[str, Any]: ...

    def as_of(
        self, conn: psycopg.Connection, code: str, own: frozenset[str], when: dt.datetime
    ) -> dict[str, Any]: ...

    def add(
        self, conn: psycopg.Connection, signed: Signed, params: Mapping[str, Any],
        own: frozenset[str], home: str, locale: str,
    ) -> Done: ...  # fmt: skip

    def change(
        self, conn: psycopg.Connection, signed: Signed, code: str, op: str,
        params: Mapping[str, Any], own: frozenset[str], locale: str,
    ) -> Done: ...  # fmt: skip

    def check_import(
        self, conn: psycopg.Connection, account: str, import_id: str, data: bytes, fmt: str,
        filename: str, own: frozenset[str],
    ) -> dict[str, Any]: ...  # fmt: skip

    def load_import(
        self, conn: psycopg.Connection, import_id: str, account: str
    ) -> dict[str, Any]: ...

    def apply_import(
        self, conn: psycopg.Connection, signed: Signed, import_id: str, own: frozenset[str],
        home: str,
    ) -> Done: ...  # fmt: skip

    def expire(self, points: Iterable[store.Point]) -> int: ...


def expire(tiles: TileService, points: Iterable[store.Point]) -> int:
    """Drop the cached tiles of the component products around each point (after commit)."""
    dropped = 0
    try:
        for p in points:
            for product in PRODUCTS:
                dropped += tiles.invalidate_point(product, p.x, p.y, EXPIRE_PX)
    except OSError as exc:  # committed already: a stale tile is better than a lost change
        log.warning("component tiles not dropped: %s", exc.strerror or type(exc).__name__)
    return dropped


# -- the work itself, in the caller's transaction on the map's database (either zone)


def shown_import(conn: psycopg.Connection, import_id: str, account: str) -> dict[str, Any]:
    iid, sha, filename, ok, report, applied, _ = bulk.load(conn, import_id, account)
    return bulk.shown(iid, sha, filename, ok, report, applied)


def add(
    conn: psycopg.Connection, settings: Settings, tiles: TileService, account: str,
    action_id: int, params: Mapping[str, Any], own: frozenset[str], home: str, locale: str,
) -> Done:  # fmt: skip
    code, at = store.add(
        conn, settings, tiles.grid, params=params, own=own, home=home,
        account=account, signed_action=action_id,
    )  # fmt: skip
    shown = store.detail(conn, tiles.grid, code, own, locale)
    return Done(shown, [code], exchange.items(conn, [code]), [at])


def change(
    conn: psycopg.Connection, settings: Settings, tiles: TileService, account: str,
    action_id: int, code: str, op: str, params: Mapping[str, Any], own: frozenset[str],
    locale: str,
) -> Done:  # fmt: skip
    points = store.change(
        conn, settings, tiles.grid, code=code, op=op, params=params, own=own,
        account=account, signed_action=action_id,
    )  # fmt: skip
    shown = store.detail(conn, tiles.grid, code, own, locale)
    return Done(shown, [code], exchange.items(conn, [code]), points)


def check_import(
    conn: psycopg.Connection, settings: Settings, tiles: TileService, account: str,
    import_id: str, data: bytes, fmt: str, filename: str, own: frozenset[str],
) -> dict[str, Any]:  # fmt: skip
    """A bulk file read, checked (changing nothing) and kept; its report."""
    rows = bulk.read(data, fmt, settings.srid)
    with conn.transaction(force_rollback=True):  # checking changes nothing
        changes, report = bulk.check(conn, settings, tiles.grid, rows, own)
    return bulk.save(
        conn, import_id=import_id, account=account, data=data, filename=filename,
        fmt=fmt, changes=changes, report=report,
    )  # fmt: skip


def import_sha(conn: psycopg.Connection, import_id: str, account: str) -> tuple[str, str]:
    """(the import's id as stored, the sha256 of its file)."""
    iid, sha, *_ = bulk.load(conn, import_id, account)
    return str(iid), str(sha)


def apply_import(
    conn: psycopg.Connection, settings: Settings, tiles: TileService, account: str,
    action_id: int, import_id: str, own: frozenset[str], home: str,
) -> Done:  # fmt: skip
    done, points = bulk.apply(
        conn, settings, tiles.grid, import_id=import_id, account=account, own=own,
        home=home, signed_action=action_id,
    )  # fmt: skip
    shown = {"id": import_id, "applied": len(done), "codes": done}
    return Done(shown, done, exchange.items(conn, done), points)


class LocalComponents:
    """Components in this process's own database (one zone): the caller's transaction holds
    the change, its signed action and its audit entry together."""

    def __init__(self, settings: Settings, tiles: TileService):
        self.settings = settings
        self.tiles = tiles

    def listing(
        self, conn: psycopg.Connection, own: frozenset[str], args: Mapping[str, str], locale: str
    ) -> dict[str, Any]:
        return store.listing(conn, self.tiles.grid, own, args, locale)

    def detail(
        self, conn: psycopg.Connection, code: str, own: frozenset[str], locale: str
    ) -> dict[str, Any]:
        return store.detail(conn, self.tiles.grid, code, own, locale)

    def as_of(
        self, conn: psycopg.Connection, code: str, own: frozenset[str], when: dt.datetime
    ) -> dict[str, Any]:
        return store.as_of(conn, self.tiles.grid, code, own, when)

    def add(
        self, conn: psycopg.Connection, signed: Signed, params: Mapping[str, Any],
        own: frozenset[str], home: str, locale: str,
    ) -> Done:  # fmt: skip
        return add(
            conn, self.settings, self.tiles, signed.account, signed.action_id, params, own,
            home, locale,
        )  # fmt: skip

    def change(
        self, conn: psycopg.Connection, signed: Signed, code: str, op: str,
        params: Mapping[str, Any], own: frozenset[str], locale: str,
    ) -> Done:  # fmt: skip
        return change(
            conn, self.settings, self.tiles, signed.account, signed.action_id, code, op,
            params, own, locale,
        )  # fmt: skip

    def check_import(
        self, conn: psycopg.Connection, account: str, import_id: str, data: bytes, fmt: str,
        filename: str, own: frozenset[str],
    ) -> dict[str, Any]:  # fmt: skip
        return check_import(
            conn, self.settings, self.tiles, account, import_id, data, fmt, filename, own
        )

    def load_import(self, conn: psycopg.Connection, import_id: str, account: str) -> dict[str, Any]:
        return shown_import(conn, import_id, account)

    def apply_import(
        self, conn: psycopg.Connection, signed: Signed, import_id: str, own: frozenset[str],
        home: str,
    ) -> Done:  # fmt: skip
        return apply_import(
            conn, self.settings, self.tiles, signed.account, signed.action_id, import_id,
            own, home,
        )  # fmt: skip

    def expire(self, points: Iterable[store.Point]) -> int:
        return expire(self.tiles, points)
