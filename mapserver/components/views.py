"""HTTP for component online update: a bureau's people list, read and change the
components of their departments. Every change is a signed action; the tiles around what
changed are dropped once it has committed, so the next picture shows it. The components are
kept with the map (mapserver.components.kept): in this process's database, or in the secure
zone's, asked of the renderer; the signed action, the cases and the audit stay here."""

from __future__ import annotations

import re
import uuid
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
from mapserver.components.kept import Signed
from mapserver.errors import InvalidInput
from mapserver.exchange import components as exchange
from mapserver.services import services

bp = Blueprint("components", __name__)
_CODE = re.compile(r"^[0-9]{16,17}\Z")
_FORMATS = {"text/csv": "csv", "application/geopackage+sqlite3": "gpkg"}


def _own(conn: Any) -> tuple[frozenset[str], str]:
    """The asker's departments and own organisation's name (refused without one)."""
    who = identity()
    own = store.departments(conn, who.account)
    org = reading.organisation_of(conn, who.account)
    if not own or org is None:
        raise InvalidInput("your account belongs to no bureau: ask an administrator")
    row = conn.execute("SELECT name FROM organisation WHERE code = %s", (org,)).fetchone()
    return own, str(row[0]) if row else org


def _signed(conn: Any, action: str, resource: str) -> Signed:
    """The request's signed action, verified and stored here (its nonce spent)."""
    envelope = request.get_json(silent=True)
    verified, action_id = actions.accept(
        conn, identity(), envelope, action, resource,
        CaStore(services().settings.pki_dir).certificate(),
    )  # fmt: skip
    note(action=action, resource=resource, signature_sha256=verified.signature_sha256)
    return Signed(verified.account, action_id, dict(verified.parameters), envelope)


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
        return jsonify(found.components().listing(conn, own, request.args, found.settings.locale))


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
        when = request.args.get("as_of")
        if when is not None:
            return jsonify(found.components().as_of(conn, code, own, store.as_of_time(when)))
        bureau = (
            reading.organisation_of(conn, who.account) if reading.only_own_bureau(who) else None
        )
        shown = found.components().detail(conn, code, own, found.settings.locale)
        shown["cases"] = store.cases_of(conn, code, bureau)
    response = jsonify(shown)
    response.headers["ETag"] = f'"v{shown["version"]}"'
    return response


@bp.post("/components")
@requires("component.edit")
def add() -> tuple[Response, int]:
    """A new component (signed `component.add` on `components`); its code is assigned."""
    found = services()
    kept = found.components()
    with found.pool.connection() as conn, conn.transaction():
        own, home = _own(conn)
        signed = _signed(conn, "component.add", "components")
        done = kept.add(conn, signed, signed.parameters, own, home, found.settings.locale)
        code = done.codes[0]
        shown = {**done.shown, "cases": store.cases_of(conn, code, None)}
        said = exchange.enqueue(conn, found.settings, done.items, signed.action_id)  # to the city
    kept.expire(done.points)
    note(resource=f"component {code}", signed_action=signed.action_id, exchange=said)
    return jsonify(shown), 201


@bp.post("/components/<code>/<op>")
@requires("component.edit")
def change(code: str, op: str) -> Response:
    """Edit attributes or state, move (to a pixel or grid) or retire: a signed action
    `component.OP` on `component CODE` whose parameters hold the version it was made from."""
    found = services()
    kept = found.components()
    if op not in store.OPS or not _CODE.match(code):
        raise InvalidInput(f"no operation {op!r} on {code!r}: edit, move or retire a code")
    with found.pool.connection() as conn, conn.transaction():
        own, _ = _own(conn)
        signed = _signed(conn, f"component.{op}", f"component {code}")
        done = kept.change(conn, signed, code, op, signed.parameters, own, found.settings.locale)
        shown = {**done.shown, "cases": store.cases_of(conn, code, None)}
        said = exchange.enqueue(conn, found.settings, done.items, signed.action_id)  # to the city
    kept.expire(done.points)
    note(
        resource=f"component {code}",
        op=op,
        version=shown["version"],
        signed_action=signed.action_id,
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
    import_id = str(uuid.uuid4())
    with found.pool.connection() as conn, conn.transaction():
        own, _ = _own(conn)
        shown = found.components().check_import(
            conn, who.account, import_id, data, fmt, filename, own
        )
    note(resource=f"component import {import_id}", sha256=shown["sha256"], ok=shown["ok"])
    return jsonify(shown), 201


@bp.get("/components/imports/<import_id>")
@requires("component.import")
def checked(import_id: str) -> Response:
    note(resource=f"component import {import_id}")
    found = services()
    with found.pool.connection() as conn:
        return jsonify(found.components().load_import(conn, import_id, identity().account))


@bp.post("/components/imports/<import_id>/apply")
@requires("component.import")
def apply(import_id: str) -> Response:
    """Apply a checked import: signed `component.import` on `component import ID` with the
    file's sha256; every row or none."""
    found = services()
    kept = found.components()
    with found.pool.connection() as conn, conn.transaction():
        own, home = _own(conn)
        held = kept.load_import(conn, import_id, identity().account)
        iid = held["id"]
        signed = _signed(conn, "component.import", f"component import {iid}")
        if signed.parameters.get("sha256") != held["sha256"]:
            raise InvalidInput("the signed sha256 is not the checked file's")
        done = kept.apply_import(conn, signed, iid, own, home)
        said = exchange.enqueue(conn, found.settings, done.items, signed.action_id)  # to the city
    kept.expire(done.points)
    note(
        resource=f"component import {iid}",
        applied=len(done.codes),
        signed_action=signed.action_id,
        exchange=said,
    )
    return jsonify(done.shown)
