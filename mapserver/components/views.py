"""HTTP for component online update: a bureau's people list, read and change the
components of their departments. Every change is a signed action; the tiles around what
changed are dropped once it has committed, so the next picture shows it."""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from audit.notes import note
from auth import actions
from auth.access import requires
from auth.ca_store import CaStore
from auth.gateway import identity
from mapserver import class_text, codes
from mapserver.cases import reading
from mapserver.components import bulk, store
from mapserver.errors import InvalidInput
from mapserver.exchange import components as exchange
from mapserver.services import services

log = logging.getLogger("citygrid.components")

bp = Blueprint("components", __name__)
# Products that draw components, and how far (pixels of each level) around a component's
# point a change reaches: half the largest marker (11 px, a missing component) and rounding.
PRODUCTS = ("topo500", "components")
EXPIRE_PX = 8
_CODE = re.compile(r"^\d{16,17}$")
_FORMATS = {"text/csv": "csv", "application/geopackage+sqlite3": "gpkg"}


def expire(points: Iterable[store.Point]) -> int:
    """Drop the cached tiles of the component products around each point (after commit)."""
    tiles = services().tiles()
    dropped = 0
    try:
        for p in points:
            for product in PRODUCTS:
                dropped += tiles.invalidate_point(product, p.x, p.y, EXPIRE_PX)
    except OSError as exc:  # committed already: a stale tile is better than a lost change
        log.warning("component tiles not dropped: %s", exc.strerror or type(exc).__name__)
    return dropped


def _own(conn: Any) -> tuple[frozenset[str], str]:
    """The asker's departments and own organisation's name (refused without one)."""
    who = identity()
    own = store.departments(conn, who.account)
    org = reading.organisation_of(conn, who.account)
    if not own or org is None:
        raise InvalidInput("your account belongs to no bureau: ask an administrator")
    row = conn.execute("SELECT name FROM organisation WHERE code = %s", (org,)).fetchone()
    return own, str(row[0]) if row else org


def _signed(conn: Any, action: str, resource: str, body: Any = None) -> tuple[dict[str, Any], int]:
    verified, action_id = actions.accept(
        conn,
        identity(),
        request.get_json(silent=True) if body is None else body,
        action,
        resource,
        CaStore(services().settings.pki_dir).certificate(),
    )
    note(action=action, resource=resource, signature_sha256=verified.signature_sha256)
    return dict(verified.parameters), action_id


@bp.get("/bureau/components")
@requires("component.read")
def page() -> Response:
    """The bureau's component page (zh-CN)."""
    ca = CaStore(services().settings.pki_dir).cert_path.read_text("ascii")
    response = current_app.make_response(render_template("components.html", ca_pem=ca))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/components")
@requires("component.read")
def listing() -> Response:
    found = services()
    note(resource="components", query=request.query_string.decode("utf-8", "replace")[:256])
    with found.pool.connection() as conn:
        own, _ = _own(conn)
        return jsonify(
            store.listing(conn, found.tiles().grid, own, request.args, found.settings.locale)
        )


@bp.get("/components/forms")
@requires("component.read")
def forms() -> Response:
    """What the page's forms offer: classes, states, data sources, the bureau's departments."""
    found = services()
    with found.pool.connection() as conn:
        own, home = _own(conn)
        classes = conn.execute(
            "SELECT major, minor, major_name, name"  # noqa: S608 (a locale code, not input)
            f" FROM {class_text.relation(found.settings.locale)}"
            " WHERE kind = 'component' ORDER BY major, minor"
        ).fetchall()
    return jsonify(
        classes=[{"major": a, "minor": b, "major_name": c, "name": d} for a, b, c, d in classes],
        states=codes.STATE_NAMES,
        data_sources=list(store.DATA_SOURCES),
        departments=sorted(own),
        home=home,
    )


@bp.get("/components/<code>")
@requires("component.read")
def detail(code: str) -> Response:
    """One component with its history and cases; `?as_of=ISO time` for how it stood then."""
    found = services()
    who = identity()
    note(resource=f"component {code}")
    with found.pool.connection() as conn:
        own, _ = _own(conn)
        grid = found.tiles().grid
        when = request.args.get("as_of")
        if when is not None:
            return jsonify(store.as_of(conn, grid, code, own, _time(when)))
        bureau = (
            reading.organisation_of(conn, who.account) if reading.only_own_bureau(who) else None
        )
        shown = store.detail(conn, grid, code, own, bureau, found.settings.locale)
    response = jsonify(shown)
    response.headers["ETag"] = f'"v{shown["version"]}"'
    return response


def _time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text[:40])
    except ValueError:
        raise InvalidInput("as_of must be an ISO 8601 date or time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@bp.post("/components")
@requires("component.edit")
def add() -> tuple[Response, int]:
    """A new component (signed `component.add` on `components`); its code is assigned."""
    found = services()
    who = identity()
    grid = found.tiles().grid
    with found.pool.connection() as conn, conn.transaction():
        own, home = _own(conn)
        params, action_id = _signed(conn, "component.add", "components")
        code, at = store.add(
            conn, found.settings, grid, params=params, own=own, home=home,
            account=who.account, signed_action=action_id,
        )  # fmt: skip
        shown = store.detail(conn, grid, code, own, None, found.settings.locale)
        said = exchange.enqueue(conn, found.settings, [code], action_id)  # to the city
    expire([at])
    note(resource=f"component {code}", signed_action=action_id, exchange=said)
    return jsonify(shown), 201


@bp.post("/components/<code>/<op>")
@requires("component.edit")
def change(code: str, op: str) -> Response:
    """Edit attributes or state, move (to a pixel or grid) or retire: a signed action
    `component.OP` on `component CODE` whose parameters hold the version it was made from."""
    found = services()
    who = identity()
    grid = found.tiles().grid
    if op not in store.OPS or not _CODE.match(code):
        raise InvalidInput(f"no operation {op!r} on {code!r}: edit, move or retire a code")
    with found.pool.connection() as conn, conn.transaction():
        own, _ = _own(conn)
        params, action_id = _signed(conn, f"component.{op}", f"component {code}")
        points = store.change(
            conn, found.settings, grid, code=code, op=op, params=params, own=own,
            account=who.account, signed_action=action_id,
        )  # fmt: skip
        shown = store.detail(conn, grid, code, own, None, found.settings.locale)
        said = exchange.enqueue(conn, found.settings, [code], action_id)  # to the city
    expire(points)
    note(
        resource=f"component {code}",
        op=op,
        version=shown["version"],
        signed_action=action_id,
        exchange=said,
    )
    response = jsonify(shown)
    response.headers["ETag"] = f'"v{shown["version"]}"'
    return response


@bp.post("/components/imports")
@requires("component.import")
def upload() -> tuple[Response, int]:
    """A bulk file, checked and kept (nothing applied): the raw bytes, `Content-Type`
    text/csv or application/geopackage+sqlite3, `?filename=`. Answers the report."""
    found = services()
    who = identity()
    fmt = _FORMATS.get((request.mimetype or "").lower())
    if fmt is None:
        raise InvalidInput("send text/csv or application/geopackage+sqlite3")
    request.max_content_length = bulk.MAX_BYTES  # this route only; elsewhere 1 MiB
    data = request.get_data(cache=False)
    filename = request.args.get("filename", f"components.{fmt}")[:200]
    rows = bulk.read(data, fmt, found.settings.srid)
    import_id = str(uuid.uuid4())
    with found.pool.connection() as conn, conn.transaction():
        own, _ = _own(conn)
        with conn.transaction(force_rollback=True):  # checking changes nothing
            changes, report = bulk.check(conn, found.settings, found.tiles().grid, rows, own)
        shown = bulk.save(
            conn, import_id=import_id, account=who.account, data=data, filename=filename,
            fmt=fmt, changes=changes, report=report,
        )  # fmt: skip
    note(resource=f"component import {import_id}", sha256=shown["sha256"], ok=shown["ok"])
    return jsonify(shown), 201


@bp.get("/components/imports/<import_id>")
@requires("component.import")
def checked(import_id: str) -> Response:
    note(resource=f"component import {import_id}")
    with services().pool.connection() as conn:
        iid, sha, filename, ok, report, applied, _ = bulk.load(conn, import_id, identity().account)
    return jsonify(bulk.shown(iid, sha, filename, ok, report, applied))


@bp.post("/components/imports/<import_id>/apply")
@requires("component.import")
def apply(import_id: str) -> Response:
    """Apply a checked import: signed `component.import` on `component import ID` with the
    file's sha256; every row or none."""
    found = services()
    who = identity()
    grid = found.tiles().grid
    with found.pool.connection() as conn, conn.transaction():
        own, home = _own(conn)
        iid, sha, *_ = bulk.load(conn, import_id, who.account)
        params, action_id = _signed(conn, "component.import", f"component import {iid}")
        if params.get("sha256") != sha:
            raise InvalidInput("the signed sha256 is not the checked file's")
        done, points = bulk.apply(
            conn, found.settings, grid, import_id=iid, account=who.account, own=own,
            home=home, signed_action=action_id,
        )  # fmt: skip
        said = exchange.enqueue(conn, found.settings, done, action_id)  # to the city
    expire(points)
    note(
        resource=f"component import {iid}",
        applied=len(done),
        signed_action=action_id,
        exchange=said,
    )
    return jsonify(id=iid, applied=len(done), codes=done)
