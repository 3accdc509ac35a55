"""The renderer's answers for component online update (two zones): a bureau's components,
their points and history are map data and stay in the map database; the gateway asks here
(mapserver.components.remote) for what its component routes answer.

- `POST /components/list` `{"own", "args", "locale"}`: the departments' components;
- `POST /components/detail` `{"own", "code", "locale"}` or with `"as_of"`: one component
  with its history, or as it stood then;
- `POST /components/add` and `/components/change` `{"own", "home", "code", "op", "locale",
  "action_id", "envelope"}`: a signed change, applied here;
- `POST /components/imports?id=&format=&filename=` (the file's bytes, the departments in
  `X-CityGrid-Departments`): a bulk file checked and kept here, its report answered;
- `POST /components/imports/show` `{"id"}` and `/components/imports/apply` `{"own", "home",
  "id", "action_id", "envelope"}`.

The grant must name the `components` map at the finest level; its account is the asker.
The departments (`own`) are the gateway's word: its accounts say who belongs where. A change
is not: the person's signed envelope is checked again here (auth.actions.accept_relayed:
CityGrid's CA, this zone's CRL, the grant's account, the action and resource of this
change), kept in the map database under the gateway's number, and only its signed
parameters are applied. The work is done as `citygrid_component` (migration 0036), apart
from the read-only map role; the tiles around a change are dropped here once it committed.
Answers hold codes, names, states and pixels, never a point.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from psycopg_pool import ConnectionPool

from auth import actions
from mapserver.components import bulk, kept, store
from mapserver.components.kept import Done
from mapserver.errors import InvalidInput
from tiles import grant as grants
from tiles.renderer_work import Refused, json_body

bp = Blueprint("renderer_components", __name__)
COMPONENTS = "components"
POOL_WAIT = 10.0  # seconds a request waits for a connection before its 503
OWN_MOST = 200  # departments named in one request
TEXT_MOST = 200
_CODE = re.compile(r"^[0-9]{16,17}\Z")
_FORMATS = ("csv", "gpkg")
_lock = threading.Lock()


def _renderer() -> Any:
    return current_app.extensions["citygrid-renderer"]


def _pool() -> ConnectionPool:
    """Connections as the component editor role, opened at the first component request."""
    ext = current_app.extensions
    pool: ConnectionPool | None = ext.get("citygrid-components")
    if pool is None:
        with _lock:
            pool = ext.get("citygrid-components")
            if pool is None:
                settings = _renderer().settings
                pool = ConnectionPool(
                    settings.component_editor_database_url, min_size=0, max_size=4, open=True,
                    timeout=POOL_WAIT,
                )  # fmt: skip
                ext["citygrid-components"] = pool
    return pool


def _account() -> str:
    """The asker named by a grant for the components map at the finest level."""
    grant: grants.Grant = g.grant
    finest = len(_renderer().service.grid.scales) - 1
    if not grants.covers(grant, [COMPONENTS], finest):
        raise Refused("the grant does not name the components map at the finest level")
    return grant.account


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) > TEXT_MOST:
        raise InvalidInput(f"{name} is text")
    return value


def _own(given: Any) -> frozenset[str]:
    if (
        not isinstance(given, list)
        or not 0 < len(given) <= OWN_MOST
        or not all(isinstance(d, str) and 0 < len(d) <= TEXT_MOST for d in given)
    ):
        raise InvalidInput("own is the asker's departments, a list of names and codes")
    return frozenset(given)


def _answer(done: Done) -> Response:
    return jsonify(shown=done.shown, codes=done.codes, items=done.items)


def _relayed(conn: Any, account: str, doc: Mapping[str, Any], action: str, resource: str) -> int:
    """The person's signed action checked again and kept here; its parameters in `g`."""
    action_id = doc.get("action_id")
    if isinstance(action_id, bool) or not isinstance(action_id, int) or action_id <= 0:
        raise InvalidInput("action_id is the gateway's number of the signed action")
    renderer = _renderer()
    verified = actions.accept_relayed(
        conn, account, doc.get("envelope"), action, resource, renderer.ca,
        renderer.crl.revoked, action_id,
    )  # fmt: skip
    g.signed_parameters = dict(verified.parameters)
    return action_id


@bp.post("/components/list")
def listing() -> Response:
    _account()
    doc = json_body()
    args = doc.get("args", {})
    if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
        raise InvalidInput("args are the listing's query: text values")
    renderer = _renderer()
    with _pool().connection() as conn:
        found = store.listing(
            conn, renderer.service.grid, _own(doc.get("own")), args, _text(doc, "locale")
        )
    return jsonify(found)


@bp.post("/components/detail")
def detail() -> Response:
    _account()
    doc = json_body()
    own, code, grid = _own(doc.get("own")), _text(doc, "code"), _renderer().service.grid
    with _pool().connection() as conn:
        if "as_of" in doc:
            when = store.as_of_time(_text(doc, "as_of"))
            return jsonify(store.as_of(conn, grid, code, own, when))
        return jsonify(store.detail(conn, grid, code, own, _text(doc, "locale")))


@bp.post("/components/add")
def add() -> Response:
    account = _account()
    doc = json_body()
    own, home, locale = _own(doc.get("own")), _text(doc, "home"), _text(doc, "locale")
    renderer = _renderer()
    with _pool().connection() as conn, conn.transaction():
        action_id = _relayed(conn, account, doc, "component.add", "components")
        done = kept.add(
            conn, renderer.settings, renderer.service, account, action_id,
            g.signed_parameters, own, home, locale,
        )  # fmt: skip
    kept.expire(renderer.service, done.points)
    return _answer(done)


@bp.post("/components/change")
def change() -> Response:
    account = _account()
    doc = json_body()
    own, code, op = _own(doc.get("own")), _text(doc, "code"), _text(doc, "op")
    if op not in store.OPS or not _CODE.match(code):
        raise InvalidInput(f"no operation {op!r} on {code!r}: edit, move or retire a code")
    renderer = _renderer()
    with _pool().connection() as conn, conn.transaction():
        action_id = _relayed(conn, account, doc, f"component.{op}", f"component {code}")
        done = kept.change(
            conn, renderer.settings, renderer.service, account, action_id, code, op,
            g.signed_parameters, own, _text(doc, "locale"),
        )  # fmt: skip
    kept.expire(renderer.service, done.points)
    return _answer(done)


@bp.post("/components/imports")
def upload() -> Response:
    account = _account()
    fmt, import_id = request.args.get("format", ""), request.args.get("id", "")
    if fmt not in _FORMATS:
        raise InvalidInput("format is csv or gpkg")
    try:
        import_id = str(uuid.UUID(import_id))
    except ValueError:
        raise InvalidInput("id is the import's UUID, drawn by the gateway") from None
    try:
        own = _own(json.loads(request.headers.get("X-CityGrid-Departments", "")))
    except ValueError:
        raise InvalidInput("X-CityGrid-Departments is a JSON list") from None
    request.max_content_length = bulk.MAX_BYTES  # this route only
    data = request.get_data(cache=False)
    renderer = _renderer()
    with _pool().connection() as conn, conn.transaction():
        shown = kept.check_import(
            conn, renderer.settings, renderer.service, account, import_id, data, fmt,
            request.args.get("filename", f"components.{fmt}")[:TEXT_MOST], own,
        )  # fmt: skip
    return jsonify(shown)


@bp.post("/components/imports/show")
def show_import() -> Response:
    account = _account()
    import_id = _text(json_body(), "id")
    with _pool().connection() as conn:
        return jsonify(kept.shown_import(conn, import_id, account))


@bp.post("/components/imports/apply")
def apply_import() -> Response:
    account = _account()
    doc = json_body()
    own, home = _own(doc.get("own")), _text(doc, "home")
    renderer = _renderer()
    with _pool().connection() as conn, conn.transaction():
        iid, sha = kept.import_sha(conn, _text(doc, "id"), account)
        action_id = _relayed(conn, account, doc, "component.import", f"component import {iid}")
        if g.signed_parameters.get("sha256") != sha:
            raise InvalidInput("the signed sha256 is not the checked file's")
        done = kept.apply_import(
            conn, renderer.settings, renderer.service, account, action_id, iid, own, home
        )
    kept.expire(renderer.service, done.points)
    return _answer(done)
