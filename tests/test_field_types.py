"""Well-formed bodies with one field wrong, on every state-changing route that takes JSON (and
Open311's form): each field of a valid body in turn, and those of its nested objects, made
null, a boolean, 0, -1, 1e308, NaN, Infinity, 2**63, 2**53-1, a list, an object, empty text,
100,000 or 5,000 characters, text holding a NUL or other control characters, or text of the
wrong form; a text field's valid value with a control character added; each field dropped,
and an unknown one added. Signed parameters are signed again after each change (a fresh
nonce, the person's own key), so that the change reaches the view's own checks. Some targets
change only what other targets do not already (a pixel's fields once, one indicator of the
evaluation's, the text of one transition of each kind).

Never a 5xx: a refusal is JSON naming its error (Open311's: GeoReport v2's list of errors) and
stores nothing, and no text past its limit or holding a control character is accepted. A
change the route accepts makes a valid body: the next is sent to a fresh target (a new case
in the same state, the component's next version, ...). Bodies that are not JSON at all, or of
the wrong shape, are tests/test_routes.py's.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from audit import cosignature
from audit.keys import PUBLIC_FILE
from auth import accounts, actions, certs, enrol, pki, signer
from mapserver import db
from mapserver.cases import contact, flow, place
from mapserver.device import fix as fix_mod
from mapserver.evaluation import scoring
from mapserver.exchange import sender
from mapserver.services import services
from mapserver.settings import Settings

from .app_client import SECRET, Install
from .conftest import demo_database
from .evidence import checkpoint
from .test_device import Device

LONG = "x" * 100_000
VALUES: dict[str, Any] = {
    "null": None,
    "true": True,
    "0": 0,
    "-1": -1,
    "1e308": 1e308,
    "NaN": float("nan"),  # JSON as Python writes and reads it; never canonical (RFC 8785)
    "Infinity": float("inf"),
    "2**63": 2**63,
    "2**53-1": 2**53 - 1,  # the largest whole number a signed action can carry (RFC 8785)
    "list": ["x"],
    "object": {"x": 1},
    "empty": "",
    "100k": LONG,  # past the 64 KiB of a JSON body (but for exchange bundles)
    "5k": LONG[:5000],  # within it: past every text field's own limit
    "nul": "a\x00b",
    "control": "a\x01\x1b[2J\u2028\x7fb",
    "date": "2026-01-01",  # text of the wrong form: a date where a number or a code belongs
}
# Refused in a signed action's parameters before any view reads them, whichever field holds
# them (no canonical form, a NUL, a body past 64 KiB): sent in the first field only.
SIGNATURE_REFUSES = frozenset({"2**63", "NaN", "Infinity", "nul", "100k"})
# Values beyond the list every field is given, for the fields they can tell something of: the
# largest whole number a signature carries where one belongs, 5,000 characters where text does.
NOT_FOR: dict[type, frozenset[str]] = {
    str: frozenset({"2**53-1"}),
    int: frozenset({"5k"}),
    bool: frozenset({"5k", "2**53-1"}),
    dict: frozenset({"5k", "2**53-1"}),
    list: frozenset({"5k", "2**53-1"}),
}
FORM_VALUES = {k: v for k, v in VALUES.items() if isinstance(v, str)} | {
    "0": "0",
    "-1": "-1",
    "1e308": "1e308",
    "2**63": str(2**63),
}
# Every text a person or client sends is refused past its limit or holding a control character
# (README "Input limits"), whatever a route makes of other values.
OVER_LIMITS = frozenset({"=5k", "=nul", "=control", "+control"})
UNKNOWN = "zz_unknown"
# What a refusal must leave as it was: the newest row of each table a route adds to (a change
# of accounts, roles, certificates or organisations is in the change register).
STORED = "SELECT " + ", ".join(
    f"(SELECT max({key}) FROM {table})"
    for table, key in [
        ("signed_action", "id"), ("city_case", "id"), ("case_event", "id"),
        ("register_change", "id"), ("component_history", "id"), ("maintenance_change", "id"),
        ("eval_config", "version"), ("audit_cosignature", "id"), ("exchange_outbox", "seq"),
        ("exchange_inbox", "seq"),
    ]
)  # fmt: skip
PEOPLE = {  # ft-NAME: role, organisation ("BUREAU": the bureau the cases go to)
    "operator": ("operator", None),
    "inspector": ("inspector", "street-001"),
    "leader": ("shift_leader", None),
    "dispatcher": ("dispatcher", None),
    "bureau": ("bureau_handler", "BUREAU"),
    "supervisor": ("street_supervisor", "street-001"),
    "admin": ("admin", None),
    "officer": ("security_officer", None),
    "chief": ("leader", None),
    "partner": ("partner", None),
    "peer": ("exchange_peer", None),
    "viewer": ("viewer", "street-001"),
}
# How a case reaches each state: (the state before, who, transition, its fields). "postponing"
# is handling with a postponement asked for, "ordered" dispatched with an order to answer.
WALK: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "accepted": ("reported", "operator", "accept", {}),
    "filed": ("accepted", "leader", "file", {}),
    "dispatched": ("filed", "dispatcher", "dispatch", {"bureau": "BUREAU"}),
    "handling": ("dispatched", "bureau", "receive", {}),
    "handled": ("handling", "bureau", "handle", {"result": "已清运"}),
    "feedback": ("handled", "dispatcher", "forward", {}),
    "checking": ("feedback", "operator", "request_check", {}),
    "postponing": ("handling", "bureau", "request_postpone", {"working_hours": 8, "reason": "x"}),
    "ordered": ("dispatched", "supervisor", "order", {"message": "限期处置"}),
}
SEEN_AS = {"postponing": "handling", "ordered": "dispatched"}
PEER_ORG = "city-platform"  # on a district: the bureau that stands for the city platform

FieldPath = tuple[Any, ...]
Skip = Callable[[FieldPath], bool]
Edit = Callable[[Any], Any]


# ---------------------------------------------------------------- changed copies of a body


def _paths(doc: Any, at: FieldPath = ()) -> Iterator[FieldPath]:
    """Every key of the document's objects, all levels, and the first item of each list."""
    if isinstance(doc, dict):
        for key, inner in doc.items():
            yield (*at, key)
            yield from _paths(inner, (*at, key))
    elif isinstance(doc, list) and doc:
        yield (*at, 0)
        yield from _paths(doc[0], (*at, 0))


def _objects(doc: Any, at: FieldPath = ()) -> Iterator[FieldPath]:
    if isinstance(doc, dict):
        yield at
        for key, inner in doc.items():
            yield from _objects(inner, (*at, key))


def _at(doc: Any, path: FieldPath) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _changed(doc: Any, path: FieldPath, value: Any = None, drop: bool = False) -> Any:
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def edits(
    doc: dict[str, Any], values: dict[str, Any], skip: Skip, once: frozenset[str] = frozenset()
) -> Iterator[tuple[str, str, Edit]]:
    """(field, what is done to it, how) for each field of `doc` not skipped, the values named in
    `once` in its first field only; an edit applies to any document of the same shape."""
    first = True
    for path in _paths(doc):
        if skip(path):
            continue
        name = ".".join(map(str, path))
        was = _at(doc, path)
        for label, value in values.items():
            if (first or label not in once) and label not in NOT_FOR.get(type(was), ()):
                yield name, f"={label}", functools.partial(_changed, path=path, value=value)
        if isinstance(was, str):  # the valid text, but for a control character
            yield name, "+control", functools.partial(_changed, path=path, value=was + "\x01")
        yield name, " dropped", functools.partial(_changed, path=path, drop=True)
        first = False
    for path in _objects(doc):
        if not path or not skip(path):
            name = ".".join(map(str, (*path, UNKNOWN)))
            yield name, " added", functools.partial(_changed, path=(*path, UNKNOWN), value="x")


def _only(*fields: str, depth: int = 9) -> Skip:
    """A target's `skip`: all but these fields (the others are another target's), none deeper
    than `depth`."""
    return lambda path: path[0] not in fields or len(path) > depth


# ---------------------------------------------------------------- what is sent where


@dataclasses.dataclass
class Target:
    """A route and a valid body for it. `params`: the signed action's parameters (None: the
    route takes none); `body`: the fields beside the envelope, or the whole body (a form's
    fields with `form`). `skip`: paths left as they are, of params if there are any, else of the
    body; `district`: asked of the install as the district side of the exchange (it is the
    city side otherwise); `opaque`: texts that are parsed, not kept as text (a PEM, a signed
    note), where what lies around what is parsed is ignored, control characters too."""

    who: str
    path: str
    params: dict[str, Any] | None = None
    action: str = ""
    resource: str = ""
    body: dict[str, Any] = dataclasses.field(default_factory=dict)
    skip: Skip = lambda path: False
    device: bool = False
    form: bool = False
    district: bool = False
    opaque: frozenset[str] = frozenset()


Make = Callable[["Fields"], Target]


class Fields:
    """An install of its own (a demo district), its people, and what the targets need: cases
    in each state, components, an exchange with itself (its own CA and log key as the peer's)."""

    def __init__(self, install: Install, out: Path, witness: Ed25519PrivateKey):
        self.install = install
        self.settings = install.settings
        self.app = install.app
        self.witness = witness
        self.conn = psycopg.connect(self.settings.database_url, autocommit=True)
        self.bureau, self.dept = self.sql(
            """SELECT o.code, o.name FROM organisation o JOIN component c ON c.owner_dept = o.name
               WHERE o.kind = 'bureau' AND o.active GROUP BY 1, 2 ORDER BY count(*) DESC, 1
               LIMIT 1"""
        )[0]
        for name, (role, org) in PEOPLE.items():
            install.account(f"ft-{name}", [role], self.bureau if org == "BUREAU" else org)
        self.device = Device.of(install, "ft-inspector", out)
        self.grid = self.sql(
            "SELECT code FROM unit_grid WHERE code LIKE '110108001%' ORDER BY code LIMIT 1"
        )[0][0]
        (x, y, lon, lat), *_ = self.sql(
            "SELECT ST_X(p), ST_Y(p), ST_X(ST_Transform(p, 4326)), ST_Y(ST_Transform(p, 4326))"
            " FROM (SELECT ST_PointOnSurface(geom) AS p FROM unit_grid WHERE code = %s) g",
            self.grid,
        )
        self.gps = (lon, lat)
        self.pixel = place.pixel_of(services(self.app).tiles().grid, x, y)._asdict()
        self.address_id, self.address = self.sql(
            "SELECT id, full_text FROM address ORDER BY id LIMIT 1"
        )[0]
        self.components = iter(
            self.sql(
                "SELECT code FROM component WHERE owner_dept = %s AND in_use ORDER BY code",
                self.dept,
            )
        )
        self.numbers = itertools.count(1)
        self._nonces: dict[str, tuple[float, list[str]]] = {}

    def sql(self, query: str, *args: Any) -> list[Any]:
        cursor = self.conn.execute(query, args or None)
        return cursor.fetchall() if cursor.description else []

    def stored(self) -> tuple[Any, ...]:
        return tuple(self.sql(STORED)[0])

    def person(self, roles: list[str], active: bool = True) -> str:
        """A new account without certificates: the target of an account change."""
        name = f"ft-new-{next(self.numbers)}"
        with db.transaction(self.settings) as conn:
            accounts.add(conn, name, roles, "street-001" if "viewer" in roles else None)
            if not active:
                accounts.set_active(conn, name, False)
        return name

    def nonce(self, who: str) -> str:
        """A fresh nonce of `who`'s, made with others in one transaction (and made again
        after a minute: they live five)."""
        made, pool = self._nonces.get(who, (0.0, []))
        if not pool or time.monotonic() - made > 60:
            with db.transaction(self.settings) as conn:
                pool = [actions.new_nonce(conn, who)[0] for _ in range(50)]
            self._nonces[who] = (time.monotonic(), pool)
        return pool.pop()

    def envelope(self, who: str, action: str, resource: str, params: Any) -> dict[str, str]:
        """`params` signed by `who` (auth.signed_action.payload, but for parameters that
        have no canonical form, sent as JSON has them)."""
        cert, key = self.install.signing(who)
        doc = {
            "action": action,
            "resource": resource,
            "parameters": params,
            "nonce": self.nonce(who),
            "time": pki.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "signer": pki.thumbprint(cert),
        }
        try:
            data = rfc8785.dumps(doc)
        except rfc8785.CanonicalizationError:
            data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode(),
            "certificate": pki.pem(cert).decode(),
        }

    @contextlib.contextmanager
    def as_district(self) -> Iterator[None]:
        found = services(self.app)
        city = found.settings
        found.settings = dataclasses.replace(
            city, exchange_role="district", exchange_peer_org=PEER_ORG
        )
        try:
            yield
        finally:
            found.settings = city

    def send(self, t: Target, params: Any = None, body: Any = None) -> Any:
        params = t.params if params is None else params
        body = t.body if body is None else body
        if t.form:
            form = "application/x-www-form-urlencoded"
            return self.install.client(t.who).post(t.path, data=body, content_type=form)
        if t.params is not None:
            body = {**self.envelope(t.who, t.action, t.resource, params), **body}
        if t.device:
            key = {"Idempotency-Key": secrets.token_hex(8)}
            return self.device.client.post(t.path, json=body, headers=key)
        with self.as_district() if t.district else contextlib.nullcontext():
            return self.install.client(t.who).post(t.path, json=body)

    def accepted(self, t: Target) -> Any:
        reply = self.send(t)
        assert reply.status_code < 300, (t.path, reply.status_code, reply.get_json())
        return reply.get_json()

    def act(self, who: str, number: str, name: str, params: dict[str, Any]) -> None:
        resource = f"case {number}"
        self.accepted(
            Target(f"ft-{who}", f"/cases/{number}/{name}", params, f"case.{name}", resource)
        )

    def case(self, state: str) -> tuple[str, str]:
        """A new case in `state`: its number, and the state its people see."""
        if state == "reported":
            params = {
                "source": "phone",
                "kind": "event",
                "major": "01",
                "minor": "02",
                "description": "路边暴露垃圾",
                "place": {"grid": self.grid},
            }
            made = Target("ft-operator", "/cases/record", params, "case.record", "cases")
            return self.accepted(made)["number"], state
        before, who, name, fields = WALK[state]
        number, seen = self.case(before)
        self.act(who, number, name, {"from": seen, **self.own(fields)})
        return number, SEEN_AS.get(state, state)

    def own(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with its placeholders filled: BUREAU, and EARLIER (a case of its own)."""
        filled = {"BUREAU": lambda: self.bureau, "EARLIER": lambda: self.case("reported")[0]}
        return {
            k: filled[v]() if isinstance(v, str) and v in filled else v for k, v in params.items()
        }

    def component(self) -> str:
        return str(next(self.components)[0])

    def version(self, code: str) -> int:
        return int(self.sql("SELECT version FROM component WHERE code = %s", code)[0][0])


# ---------------------------------------------------------------- the targets, one per route


def _transition(
    name: str, state: str, who: str, fields: dict[str, Any], common: bool = False
) -> Make:
    """A transition on a new case in `state`: its own fields changed, and with `common` those
    every transition reads (from, to, attachments) too."""

    def make(f: Fields) -> Target:
        number, seen = f.case(state)
        params = {"from": seen, **f.own(fields)}
        if common:
            params |= {"to": flow.TRANSITIONS[name].target, "attachments": []}
        return Target(
            f"ft-{who}", f"/cases/{number}/{name}", params, f"case.{name}", f"case {number}",
            skip=lambda path: False if common else path[0] not in fields,
        )  # fmt: skip

    return make


def _record(f: Fields) -> Target:
    found, digest = contact.new("13800000000")
    params = {
        "source": "phone",
        "kind": "event",
        "major": "01",
        "minor": "02",
        "description": "路边暴露垃圾",
        "place": {"grid": f.grid},
        "contact_digest": digest,
        "attachments": [],
    }
    private = {"private": {"contact": found.text, "salt": found.salt}}
    return Target("ft-operator", "/cases/record", params, "case.record", "cases", private)


def _record_at(spec: Callable[[Fields], dict[str, Any]]) -> Make:
    """A complaint placed otherwise: its place changed."""

    def make(f: Fields) -> Target:
        params = {
            "source": "web",
            "kind": "event",
            "major": "01",
            "minor": "02",
            "description": "x",
            "place": spec(f),
        }
        return Target(
            "ft-operator", "/cases/record", params, "case.record", "cases", skip=_only("place")
        )

    return make


def _record_component(f: Fields) -> Target:
    params = {"source": "sms", "kind": "component", "component": f.component(), "description": "x"}
    return Target(
        "ft-operator", "/cases/record", params, "case.record", "cases",
        skip=_only("kind", "component"),
    )  # fmt: skip


def _report(f: Fields) -> Target:
    params = {
        "source": "inspector",
        "kind": "event",
        "major": "01",
        "minor": "02",
        "description": "x",
        "place": {"grid": f.grid},
    }
    return Target(
        "ft-inspector", "/cases/report", params, "case.report", "cases",
        skip=_only("source", "place"),
    )  # fmt: skip


def _device_report(f: Fields) -> Target:
    lon, lat = f.gps
    salt = secrets.token_hex(16)
    params = {
        "source": "inspector",
        "kind": "event",
        "major": "01",
        "minor": "02",
        "description": "x",
        "place": {"gps": fix_mod.digest(lon, lat, salt)},
        "client_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    return Target(
        "ft-inspector", "/device/v1/reports", params, "case.report", "cases",
        {"fix": {"lon": lon, "lat": lat, "salt": salt}},
        skip=_only("source", "place", "client_time"), device=True,  # the rest: as cases.record's
    )  # fmt: skip


def _device_act(name: str, state: str) -> Make:
    def make(f: Fields) -> Target:
        number, seen = f.case(state)
        now = dt.datetime.now(dt.UTC).isoformat()
        return Target(
            "ft-inspector", f"/device/v1/cases/{number}/{name}",
            {"from": seen, "note": "现场属实", "client_time": now}, f"case.{name}",
            f"case {number}", skip=_only("note", "client_time"), device=True,
        )  # fmt: skip

    return make


def _component_add(f: Fields) -> Target:
    code = f.component()
    params = {
        "major": code[6:8],
        "minor": code[8:10],
        "name": "新增井盖",
        "state": "intact",
        "owner_dept": f.dept,
        "data_source": "field_annotated",
        "place": {"pixel": f.pixel},
    }
    return Target(
        "ft-bureau", "/components", params, "component.add", "components",
        # the attributes as components.edit's, the pixel as cases.record.pixel's
        skip=_only("major", "minor", "name", "owner_dept", "place", depth=1),
    )  # fmt: skip


def _component_change(op: str, fields: Callable[[Fields], dict[str, Any]], keep: bool) -> Make:
    """An edit, move or retire of one of the bureau's components (`keep`: the same one, at its
    next version, after a success); a pixel's fields are cases.record.pixel's."""
    held: list[str] = []

    def make(f: Fields) -> Target:
        if not keep or not held:
            held[:] = [f.component()]
        code = held[0]
        return Target(
            "ft-bureau", f"/components/{code}/{op}", {"version": f.version(code), **fields(f)},
            f"component.{op}", f"component {code}", skip=lambda path: len(path) > 2,
        )  # fmt: skip

    return make


def _component_import(f: Fields) -> Target:
    csv = f"op,code,state\nedit,{f.component()},damaged\n".encode()
    checked = f.install.client("ft-bureau").post(
        "/components/imports", data=csv, content_type="text/csv"
    )
    assert checked.status_code == 201 and checked.get_json()["ok"], checked.get_json()
    iid, sha = checked.get_json()["id"], checked.get_json()["sha256"]
    return Target(
        "ft-bureau", f"/components/imports/{iid}/apply", {"sha256": sha}, "component.import",
        f"component import {iid}",
    )  # fmt: skip


def _eval_config(f: Fields) -> Target:
    version = f.sql("SELECT coalesce(max(version), 0) FROM eval_config")[0][0]
    first = next(iter(scoring.DEFAULT["indicators"]))
    return Target(
        "ft-chief", "/evaluation/config", {"based_on": version, "config": scoring.DEFAULT},
        "eval.configure", "evaluation config",
        # one grade and one indicator stand for all, their thresholds for total's
        skip=lambda path: (
            len(path) > 2 and path[1] in ("indicators", "points") and path[2] not in (first, "优")
        )
        or path[1:] == ("total", 0),
    )  # fmt: skip


def _admin(
    path: str, action: str, resource: str, params: dict[str, Any], skip: Skip | None = None
) -> Make:
    def make(f: Fields) -> Target:
        return Target(
            "ft-admin", path, dict(params), action, resource, skip=skip or (lambda p: False)
        )

    return make


def _organisation(f: Fields) -> Target:
    code = f"{f.bureau}.ft{next(f.numbers)}"
    params = {"name": "道路科", "kind": "department", "parent": f.bureau, "active": True}
    return Target(
        "ft-admin", f"/maintenance/organisations/{code}", params, "org.save", f"organisation {code}"
    )


def _street_office(f: Fields) -> Target:
    code = f"ft-street-{next(f.numbers)}"
    params = {"name": "街道", "kind": "street_office", "parent": "district", "street": "110108001"}
    return Target(
        "ft-admin", f"/maintenance/organisations/{code}", params, "org.save",
        f"organisation {code}", skip=_only("street"),
    )  # fmt: skip


def _account_change(op: str, action: str, roles: list[str], params: dict[str, Any]) -> Make:
    def make(f: Fields) -> Target:
        name = f.person(roles, active=op != "enable")
        path = f"/maintenance/accounts/{name}/{op}"
        return Target("ft-admin", path, dict(params), action, f"account {name}")

    return make


def _add_account(f: Fields) -> Target:
    name = f"ft-new-{next(f.numbers)}"
    params = {"name": name, "roles": ["viewer"], "org": "street-001", "display_name": "x"}
    return Target("ft-admin", "/admin/accounts", params, "account.add", "accounts")


def _disable(f: Fields) -> Target:
    name = f.person(["viewer"])
    path = f"/admin/accounts/{name}/disable"
    return Target("ft-admin", path, {}, "account.disable", f"account {name}")


def _revoke(f: Fields) -> Target:
    name = f.person(["viewer"])
    with db.transaction(f.settings) as conn:
        issued = certs.issue(conn, f.install.store, SECRET, name, pki.Kind.PERSON, f.install.out)
    return Target(
        "ft-admin", f"/admin/certificates/{issued.serial}/revoke", {"reason": "key_compromise"},
        "pki.revoke", f"certificate {issued.serial}",
    )  # fmt: skip


def _certificate(f: Fields) -> Target:
    name = f.person(["viewer"])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    sha = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Target(
        "ft-admin", f"/maintenance/accounts/{name}/certificates",
        {"csr_sha256": sha, "kind": "person", "days": 30}, "pki.issue", f"account {name}",
        {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()}, opaque=frozenset({"csr"}),
    )  # fmt: skip


def _enrol(f: Fields) -> Target:
    with db.transaction(f.settings) as conn:
        code = enrol.issue_code(conn, "ft-viewer")
    nonce = f.nonce("ft-viewer")
    key = ec.generate_private_key(ec.SECP256R1())
    spki = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    proof = key.sign(enrol.proof_bytes("ft-viewer", nonce, spki), ec.ECDSA(hashes.SHA256()))
    body = {
        "public_key": spki,
        "nonce": nonce,
        "proof": base64.b64encode(proof).decode(),
        "code": code,
    }
    return Target("ft-viewer", "/auth/signing/enrol", body=body)


def _cosignature(f: Fields) -> Target:
    note = f.sql("SELECT note FROM audit_checkpoint ORDER BY size DESC LIMIT 1")[0][0]
    when = int(dt.datetime.now(dt.UTC).timestamp())
    cosigned = cosignature.cosign(note, f.witness, "ft-witness", when)
    return Target("ft-officer", "/audit/cosignatures", body={"checkpoint": cosigned})


def _open311(f: Fields) -> Target:
    body = {
        "service_code": "event-01-02",
        "attribute[grid]": f.grid,
        "description": "路边暴露垃圾",
        "first_name": "张",
        "phone": "13800000000",
        "jurisdiction_id": f.settings.district_code,
    }
    return Target("ft-partner", "/open311/v2/requests.json", body=body, form=True)


def _open311_at(field: str, value: Callable[[Fields], str]) -> Make:
    def make(f: Fields) -> Target:
        body = {"service_code": "event-01-02", field: value(f)}
        return Target("ft-partner", "/open311/v2/requests.json", body=body, form=True)

    return make


def _open311_component(f: Fields) -> Target:
    code = f.component()
    body = {"service_code": f"component-{code[6:8]}-{code[8:10]}", "attribute[component]": code}
    return Target("ft-partner", "/open311/v2/requests.json", body=body, form=True)


def _exchange_forward(f: Fields) -> Target:
    params = {"kind": "event", "major": "01", "minor": "02", "grid": f.grid, "description": "x"}
    return Target(
        "ft-dispatcher", "/exchange/forward", params, "exchange.forward", "exchange cases"
    )


def _exchange_withdraw(f: Fields) -> Target:
    source = f.accepted(_exchange_forward(f))["exchange"]["source_id"]
    return Target(
        "ft-dispatcher", f"/exchange/messages/{source}/withdraw", {"reason": "发错"},
        "exchange.withdraw", f"exchange {source}",
    )  # fmt: skip


def _exchange_result(f: Fields) -> Target:
    """The answer to a case the district forwarded (its message put in as received)."""
    n = next(f.numbers)
    source = f"district-ft-{n}"
    number, _ = f.case("reported")
    f.sql(
        "INSERT INTO exchange_inbox (source_id, seq, kind, content, bundle, bundle_sha256, signer,"
        " case_number) VALUES (%s, %s, 'case.forward', %s, '{}', %s, 'ft-peer', %s)",
        source, 1_000_000 + n, json.dumps({"case": {"number": number}}), "0" * 64, number,
    )  # fmt: skip
    return Target(
        "ft-dispatcher", f"/exchange/messages/{source}/result",
        {"result": "已处置", "outcome": "handled"}, "exchange.result", f"exchange {source}",
    )  # fmt: skip


def _district_forward(f: Fields) -> Target:
    number, seen = f.case("filed")
    return Target(
        "ft-dispatcher", f"/exchange/cases/{number}/forward",
        {"from": seen, "bureau": PEER_ORG, "note": "请市级处置"}, "case.dispatch",
        f"case {number}", district=True,
    )  # fmt: skip


# What of a bundle is changed: its own fields, and of its action's evidence what no signature
# covers (the envelope's fields are those of every signed route; content and the entry are
# vouched for by the log, whatever their values).
_BUNDLE = {"actions.0.log"} | {
    f"actions.0.log.{k}" for k in ("leaf_index", "tree_size", "proof.0", "checkpoint")
}


def _receive(f: Fields) -> Target:
    """A case the city (this install) forwards, in its bundle, taken in by the district (this
    install too, its sequence set to expect it)."""
    said = f.accepted(_exchange_forward(f))["exchange"]
    checkpoint(f.settings)  # the act's entry under a signed checkpoint
    row = f.sql(
        "SELECT seq, source_id, kind, content, signed_action FROM exchange_outbox WHERE seq = %s",
        said["seq"],
    )[0]
    with db.connect(f.settings) as conn:
        bundle = sender.make(conn, f.install.settings, row)
    f.sql("UPDATE exchange_peer_state SET last_seq = %s", said["seq"] - 1)
    return Target(
        "ft-peer", "/exchange/receive", body=bundle, district=True,
        skip=lambda path: len(path) > 1 and ".".join(map(str, path)) not in _BUNDLE,
        opaque=frozenset({"actions.0.log.checkpoint"}),  # a note's unknown lines are ignored
    )  # fmt: skip


TARGETS: dict[str, Make] = {
    "admin.accounts": _add_account,
    "admin.disable": _disable,
    "admin.revoke": _revoke,
    "auth.enrol": _enrol,
    "audit.cosignatures": _cosignature,
    "cases.record": _record,
    "cases.record.pixel": _record_at(lambda f: {"pixel": dict(f.pixel)}),
    "cases.record.address": _record_at(lambda f: {"address": f.address}),
    "cases.record.address_id": _record_at(lambda f: {"address_id": f.address_id}),
    "cases.record.component": _record_component,
    "cases.report": _report,
    # Transitions: those with fields of their own; a text field stands for each of its kind.
    "cases.verify": _transition("verify", "reported", "inspector", {"note": "属实"}, common=True),
    "cases.reject": _transition("reject", "reported", "operator", {"reason": "invalid"}),
    "cases.cancel": _transition("cancel", "reported", "leader", {"duplicate_of": "EARLIER"}),
    "cases.dispatch": _transition("dispatch", "filed", "dispatcher", {"bureau": "BUREAU"}),
    "cases.suspend": _transition("suspend", "filed", "leader", {"reason": "x"}),
    "cases.order": _transition("order", "dispatched", "supervisor", {"message": "限期"}),
    "cases.answer": _transition("answer", "ordered", "bureau", {"reply": "已安排"}),
    "cases.request_postpone": _transition(
        "request_postpone", "handling", "bureau", {"working_hours": 8, "reason": "x"}
    ),
    "cases.decide_postpone": _transition(
        "decide_postpone", "postponing", "dispatcher", {"decision": "approve"}
    ),
    "cases.handle": _transition("handle", "handling", "bureau", {"result": "已清运"}),
    "device.reports": _device_report,
    "device.verify": _device_act("verify", "reported"),
    "device.check_fail": _device_act("check_fail", "checking"),
    "components.add": _component_add,
    "components.edit": _component_change(
        "edit", lambda f: {"set": {"state": "damaged", "name": "井盖", "owner_dept": f.dept}}, True
    ),
    "components.move": _component_change("move", lambda f: {"place": {"pixel": f.pixel}}, True),
    "components.retire": _component_change("retire", lambda f: {"reason": "拆除"}, False),
    "components.import": _component_import,
    "evaluation.config": _eval_config,
    "maintenance.organisation": _organisation,
    "maintenance.street_office": _street_office,
    "maintenance.class": _admin(
        "/maintenance/classes/event/01/03",
        "class.update",
        "class event/01/03",
        {"name": "乱堆物料", "filing_condition": "x", "time_limit": 2, "time_unit": "working_days"},
    ),  # fmt: skip
    "maintenance.limit": _admin(
        "/maintenance/limits/check",
        "limit.set",
        "limit check",
        {"amount": 2, "unit": "working_days"},
    ),  # fmt: skip
    "maintenance.limit.class": _admin(
        "/maintenance/limits/handle",
        "limit.set",
        "limit handle",
        {"kind": "event", "major": "01", "minor": "03", "amount": 3, "unit": "working_hours"},
        _only("kind", "major", "minor"),  # amount and unit: as maintenance.limit's
    ),  # fmt: skip
    "maintenance.calendar": _admin(
        "/maintenance/calendar/2031-10-09",
        "calendar.set",
        "calendar 2031-10-09",
        {"kind": "holiday", "note": "x"},
    ),  # fmt: skip
    "maintenance.enable": _account_change("enable", "account.enable", ["viewer"], {}),
    "maintenance.grant": _account_change(
        "grant", "account.grant", ["viewer"], {"role": "inspector"}
    ),
    "maintenance.revoke_role": _account_change(
        "revoke-role", "account.revoke_role", ["viewer", "inspector"], {"role": "viewer"}
    ),
    "maintenance.enrol_code": _account_change(
        "enrol-code", "pki.enrol_code", ["viewer"], {"hours": 2}
    ),
    "maintenance.certificates": _certificate,
    "exchange.forward": _exchange_forward,
    "exchange.result": _exchange_result,
    "exchange.withdraw": _exchange_withdraw,
    "exchange.district_forward": _district_forward,
    "exchange.receive": _receive,
    "open311.submit": _open311,
    "open311.submit.address": _open311_at("address_string", lambda f: f.address),
    "open311.submit.address_id": _open311_at("address_id", lambda f: str(f.address_id)),
    "open311.submit.component": _open311_component,
}


# ---------------------------------------------------------------- the fixture


class SignerThread:
    """The CA signer answering on the install's socket, in this process (what `citygrid
    signer` serves, without its signal handling): for enrolment, issuing and revocation."""

    def __init__(self, settings: Settings):
        path = settings.signer_socket_path
        sock, _ = signer.listening_socket(path)
        self.server = signer._Server(str(path), signer._Handler, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = sock
        self.server.signer = signer.Signer(settings, SECRET)  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fields]:
    """A demo district of its own: the targets add cases, components, accounts and versions."""
    settings = demo_database("citygrid_fields", tmp_path_factory.mktemp("fields-var"))
    witness = Ed25519PrivateKey.generate()
    install = Install(
        settings,
        tmp_path_factory.mktemp("fields-certs"),
        rate_limit_api="*=1000000/hour",
        audit_witnesses=cosignature.witness_of("ft-witness", witness).vkey(),
        # the city side of an exchange whose peer is itself
        exchange_role="city",
        exchange_peer_url="https://127.0.0.1:9",
        exchange_peer_ca=str(settings.pki_dir / "ca.crt"),
        exchange_peer_log_key=str(settings.pki_dir / PUBLIC_FILE),
    )
    running = SignerThread(install.settings)
    try:
        found = Fields(install, tmp_path_factory.mktemp("fields-devices"), witness)
        found.accepted(
            Target(
                "ft-admin",
                f"/maintenance/organisations/{PEER_ORG}",
                {"name": "市级平台", "kind": "bureau", "parent": "district"},
                "org.save",
                f"organisation {PEER_ORG}",
            )  # fmt: skip
        )
        checkpoint(install.settings)  # one for the witness to cosign
        yield found
        found.conn.close()
    finally:
        running.stop()
        install.close()
        db.drop_database(settings)


# ---------------------------------------------------------------- the test


def _fault(reply: Any, form: bool) -> str | None:
    """What is wrong with an answer to a wrong field, if anything."""
    if reply.status_code >= 500:
        return f"{reply.status_code} {reply.get_data()[:200]!r}"
    if reply.status_code < 400:
        return None
    if not reply.is_json:
        return f"{reply.status_code} without JSON"
    said = reply.get_json()
    if form:  # GeoReport v2's errors
        if not (
            isinstance(said, list) and said and all(e["code"] and e["description"] for e in said)
        ):
            return f"{reply.status_code} not a list of errors: {said}"
    elif not (isinstance(said, dict) and said.get("error") and said.get("message")):
        return f"{reply.status_code} without error and message: {said}"
    return None


@pytest.mark.parametrize("route", sorted(TARGETS))
def test_a_wrong_field_is_refused_as_json_and_stores_nothing(fields: Fields, route: str) -> None:
    make = TARGETS[route]
    target = make(fields)
    valid = fields.send(target)
    assert valid.status_code < 300, (route, valid.status_code, valid.get_json())
    target = make(fields)
    beside = target.skip if target.params is None else (lambda path: False)
    values = FORM_VALUES if target.form else VALUES
    changes = [("body", *change) for change in edits(target.body, values, beside)]
    if target.params is not None:
        once = SIGNATURE_REFUSES
        changes += [
            ("params", *change) for change in edits(target.params, VALUES, target.skip, once)
        ]
    faults = []
    kept = fields.stored()
    for part, name, how, edit in changes:
        if part == "params":
            reply = fields.send(target, params=edit(target.params))
        else:
            reply = fields.send(target, body=edit(target.body))
        fault = _fault(reply, target.form)
        if reply.status_code < 300:
            if how in OVER_LIMITS and name not in target.opaque:
                fault = f"{reply.status_code}: accepted"
            target = make(fields)  # a valid body after all: its target has moved on
            kept = fields.stored()
        elif (now := fields.stored()) != kept:
            fault = fault or f"{reply.status_code}, yet stored"
            kept = now
        if fault:
            faults.append(f"{part} {name}{how}: {fault}")
    assert not faults, "\n".join(faults)
