"""Cases in PostgreSQL: creation with a gap-free number, transitions under a row lock (one
winner, the rest 409), stage deadlines on the work calendar, and what a client may see.

Every function works in the caller's transaction, so a case change, its signed action and
the request's audit entry commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from mapserver import text_limits
from mapserver.cases import areas, attachments, flow, place, supervision
from mapserver.cases.contact import Contact
from mapserver.errors import Conflict, InvalidInput, NotFound
from mapserver.exchange import outbox
from mapserver.maintenance import limits
from mapserver.settings import Settings
from tiles.tile_grid import TileGrid

MAX_DESCRIPTION = 4000
MAX_CONTACT = 200
MAX_NOTE = 2000


class Calendar(Protocol):
    def add(self, start: dt.datetime, amount: float, unit: Any) -> dt.datetime: ...


class StaleState(Conflict):
    """The case moved on since the person looked at it (409 with the current state)."""

    code = "stale"

    def __init__(self, number: str, state: str, version: int):
        super().__init__(f"case {number} is now {state} (version {version}); reload it")
        self.state = state
        self.version = version

    @property
    def details(self) -> dict[str, object]:
        return {"state": self.state, "version": self.version}


def _text(params: Mapping[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = params.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text")
    value = value.strip()
    if required and not value:
        raise InvalidInput(f"the field {name!r} is required")
    text_limits.Limit(name, limit).check(value)
    return value


def _class(conn: psycopg.Connection, kind: str, major: str, minor: str) -> tuple[Any, ...]:
    table = "component_class" if kind == "component" else "event_class"
    row = conn.execute(
        f"SELECT name, department, time_limit, time_unit FROM {table}"  # noqa: S608 - fixed names
        " WHERE major = %s AND minor = %s",
        (major, minor),
    ).fetchone()
    if row is None:
        raise InvalidInput(f"no {kind} class {major[:8]}/{minor[:8]}")
    return tuple(row)


def stage_limit(
    conn: psycopg.Connection,
    kind: str,
    major: str,
    minor: str,
    stage: str,
    version: int | None = None,
) -> tuple[float, str]:
    """(amount, unit) of a stage for a class: an override, the class's own handling limit,
    or the stage default; as limits version `version` held them (a case's pinned version:
    mapserver.maintenance.limits), or the limits in force."""
    if version is not None:
        kept = limits.pinned(conn, version)
        found = limits.lookup(kept, kind, major, minor, stage) if kept is not None else None
        if found is not None:
            return found
    row = conn.execute(
        "SELECT amount, unit FROM case_stage_class_limit"
        " WHERE kind = %s AND major = %s AND minor = %s AND stage = %s",
        (kind, major, minor, stage),
    ).fetchone()
    if row is None and stage == "handle":
        _, _, amount, unit = _class(conn, kind, major, minor)
        row = (amount, unit)
    if row is None:
        row = conn.execute(
            "SELECT amount, unit FROM case_stage_limit WHERE stage = %s", (stage,)
        ).fetchone()
    assert row is not None, f"stage {stage} has a default limit (migration 0011)"
    return float(row[0]), str(row[1])  # 1.5 working days is 1.5, not 2


def next_number(conn: psycopg.Connection, district: str, year: int) -> str:
    """The next number of the district's year; the counter row stays locked until commit, so
    a creation that rolls back gives its number back."""
    row = conn.execute(
        """INSERT INTO case_counter (district, year, last) VALUES (%s, %s, 1)
           ON CONFLICT (district, year) DO UPDATE SET last = case_counter.last + 1
           RETURNING last""",
        (district, year),
    ).fetchone()
    assert row is not None
    return f"{year}-{int(row[0]):06d}"


def create(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid | None,
    calendar: Calendar,
    *,
    account: str,
    params: Mapping[str, Any],
    signed_action: int | None,
    contact: Contact | None = None,
    allow_point: bool = False,
    now: dt.datetime | None = None,
    resolved: place.Place | None = None,
    system_fields: frozenset[str] = frozenset(),
) -> str:
    """Record a new case (state `reported`); returns its number. `system_fields`: what the
    caller itself adds beside a person's fields (Open311's request, the exchange's origin),
    which no signed record may claim. The caller's `contact`
    comes beside the signed parameters, never inside them (mapserver.cases.contact);
    `resolved` is the place found by the caller through the tile interface
    (tiles.source.Tiles.place: `place_spec(params)`, or a device's GPS fix, whose signed
    parameters hold only its digest); without one, `grid` and this transaction resolve it
    (inside the secure zone). A place without a point (a gateway of two zones) is kept as its
    pixel, its areas registered without shapes (mapserver.cases.areas)."""
    now = now or dt.datetime.now(dt.UTC)
    flow.unknown_field(params, flow.CREATE_FIELDS | system_fields)
    attached = attachments.listed(params)
    source = params.get("source")
    if source not in flow.SOURCES:
        raise InvalidInput("source must be one of " + ", ".join(flow.SOURCES))
    kind = params.get("kind")
    if kind not in ("component", "event"):
        raise InvalidInput("kind must be component or event")
    description = _text(params, "description", MAX_DESCRIPTION)
    if "contact" in params:
        raise InvalidInput("the caller's contact is never part of the signed parameters")
    component = None
    if kind == "component":
        code = params.get("component")
        if not isinstance(code, str):
            raise InvalidInput("a component case names the component's code")
        if "place" in params:
            raise InvalidInput("a component case is placed by its component, not by place")
        where = resolved or place.resolve(conn, settings, _grid(grid), {"component": code})
        component = where.component
        if component is None:
            raise InvalidInput("a component case is placed by its component")
        major, minor = component.major, component.minor
        if params.get("major", major) != major or params.get("minor", minor) != minor:
            raise InvalidInput(f"the component {code} is of class {major}/{minor}")
    else:
        given = params.get("major"), params.get("minor")
        if not isinstance(given[0], str) or not isinstance(given[1], str):
            raise InvalidInput("an event case names its class: major and minor")
        major, minor = given[0], given[1]
        where = resolved or place.resolve(
            conn, settings, _grid(grid), params.get("place"), allow_point
        )
    _class(conn, kind, major, minor)
    pixel = where.pixel
    if pixel is None and where.x is not None and where.y is not None:
        pixel = place.global_pixel(_grid(grid), where.x, where.y)
    if pixel is None:
        raise InvalidInput("the place has neither a point nor a pixel")
    if where.x is None:  # a gateway of two zones: the renderer's codes, kept without shapes
        areas.register(conn, settings, where)
    year = now.astimezone(dt.timezone(dt.timedelta(hours=8))).year
    number = next_number(conn, settings.district_code, year)
    amount, unit = stage_limit(conn, kind, major, minor, "accept")
    row = conn.execute(
        """INSERT INTO city_case (number, district, kind, major, minor, component_code, source,
               state, description, address, contact, contact_salt, geom, grid_code,
               community_code, street_code, reporter, created_at, stage, stage_started_at,
               stage_deadline, limits_version, pixel_x, pixel_y)
           VALUES (%s, %s, %s, %s, %s, %s, %s, 'reported', %s, %s, %s, %s,
               ST_SetSRID(ST_MakePoint(%s, %s), %s), %s, %s, %s, %s, %s, 'accept', %s, %s,
               (SELECT max(version) FROM limit_version), %s, %s)
           RETURNING id""",
        (
            number,
            settings.district_code,
            kind,
            major,
            minor,
            component.code if component else None,
            source,
            description,
            where.address,
            contact.text if contact else "",
            contact.salt if contact else "",
            where.x,
            where.y,
            settings.srid,
            where.where.grid_code,
            where.where.community_code,
            where.where.street_code,
            account,
            now,
            now,
            calendar.add(now, amount, unit),
            pixel[0],
            pixel[1],
        ),
    ).fetchone()
    assert row is not None
    event = conn.execute(
        """INSERT INTO case_event (case_id, at, actor, transition, from_state, to_state, version,
               parameters, signed_action)
           VALUES (%s, %s, %s, 'create', NULL, 'reported', 1, %s, %s) RETURNING id""",
        (row[0], now, account, Jsonb(_public_params(params)), signed_action),
    ).fetchone()
    assert event is not None
    attachments.link(conn, account=account, case_id=row[0], event_id=event[0], hashes=attached)
    return number


def _grid(grid: TileGrid | None) -> TileGrid:
    if grid is None:
        raise InvalidInput("this place is resolved inside the secure zone only")
    return grid


def place_spec(params: Mapping[str, Any]) -> Any:
    """What to resolve for a case's signed parameters: its component's code, or its place."""
    if params.get("kind") == "component":
        return {"component": params.get("component")}
    return params.get("place")


def _public_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """What the history keeps of the parameters: never a point (the contact never is one)."""
    kept = dict(params)
    spec = kept.get("place")
    if isinstance(spec, Mapping) and "point" in spec:
        kept["place"] = {"point": "(inside the secure zone)"}
    return kept


def act(
    conn: psycopg.Connection,
    calendar: Calendar,
    *,
    number: str,
    name: str,
    params: Mapping[str, Any],
    account: str,
    signed_action: int | None,
    bureau_of_actor: str | None = None,
    now: dt.datetime | None = None,
    peer_org: str | None = None,
) -> tuple[str, int]:
    """Fire transition `name` on case `number`; returns (new state, new version).

    `peer_org`: on a district in an exchange, the organisation standing for the city
    platform: a dispatch to it forwarded the case, and is recalled only once the city cannot
    hold the case any more (mapserver.exchange.outbox.forward_standing).

    `params["from"]` is the state the person saw (and signed): if the case has moved on,
    409 with the current state. Raises IllegalTransition (409) or InvalidInput (400);
    nothing is written on any refusal (the caller's transaction rolls back).
    """
    now = now or dt.datetime.now(dt.UTC)
    attached = attachments.listed(params)
    row = conn.execute(
        """SELECT id, state, version, resume_state, kind, major, minor, bureau, stage,
                  stage_deadline, postpone_pending, postponed_hours, limits_version, street_code
           FROM city_case WHERE number = %s FOR UPDATE""",
        (number,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no case {number}")
    (
        case_id,
        state,
        version,
        resume_state,
        kind,
        major,
        minor,
        bureau,
        stage,
        deadline,
        pending,
        postponed,
        pinned_version,
        street,
    ) = row
    seen = params.get("from")
    if not isinstance(seen, str) or seen not in flow.STATES:  # a state at all
        raise InvalidInput("the field 'from' is required: the state of the case you acted on")
    if seen != state:
        raise StaleState(number, state, version)
    target = flow.fire(name, state, params, resume_state)
    t = flow.TRANSITIONS[name]
    if t.action == "case.handle" and bureau_of_actor is not None and bureau != bureau_of_actor:
        raise NotFound(f"no case {number} dispatched to your organisation")
    changes: dict[str, Any] = {}
    new_deadline = deadline
    if name == "dispatch":
        dispatched_to = params["bureau"]
        if not isinstance(dispatched_to, str):
            raise InvalidInput("bureau must be a bureau's code")
        org = conn.execute(
            "SELECT kind FROM organisation WHERE code = %s AND active", (dispatched_to,)
        ).fetchone()
        if org is None or org[0] != "bureau":
            raise InvalidInput(f"bureau: no active bureau {dispatched_to!r}")
        changes["bureau"] = dispatched_to
    elif name == "recall":
        held = None
        if peer_org is not None and bureau == peer_org:  # the dispatch forwarded the case
            held = outbox.forward_standing(conn, number)
        if held is not None:
            raise Conflict(held)
        changes["bureau"] = None  # never the bureau's: it no longer sees the case
    elif name == "return":
        # Wrongly dispatched: no longer the bureau's, which sees it no more (as after a
        # recall). The history's dispatch still names it, for the evaluation's `returned`.
        changes["bureau"] = None
        changes["postpone_pending"] = False  # its request went with it
    elif name == "handle":
        changes["postpone_pending"] = False  # the time was asked for this handling: done
    elif name == "request_postpone":
        hours = params["working_hours"]
        if isinstance(hours, bool) or not isinstance(hours, int) or not 0 < hours <= 2000:
            raise InvalidInput("working_hours must be a whole number of hours, 1 to 2000")
        if pending:  # asked by another since this person looked: the case moved on
            raise StaleState(number, state, version)
        changes["postpone_pending"] = True
    elif name == "decide_postpone":
        if not pending:  # decided by another since (the forms offer it only while pending)
            raise StaleState(number, state, version)
        changes["postpone_pending"] = False
        if params["decision"] == "approve":
            hours = _requested_hours(conn, case_id)
            changes["postponed_hours"] = postponed + hours
            new_deadline = calendar.add(deadline, hours, "working_hours")
    elif name == "check_fail":
        changes["rework_count"] = sql.SQL("rework_count + 1")
    elif name == "suspend":
        changes["resume_state"] = state
    elif name == "resume":
        changes["resume_state"] = None
    elif name == "cancel":
        other = params["duplicate_of"]
        if not isinstance(other, str):
            raise InvalidInput("duplicate_of must be the other case's number")
        found = conn.execute("SELECT 1 FROM city_case WHERE number = %s", (other,)).fetchone()
        if found is None or other == number:
            raise InvalidInput(f"duplicate_of: no other case {other!r}")
        changes["duplicate_of"] = other
    elif name == "file":  # the case keeps the limits in force now, whatever changes later
        pinned_version = limits.current_version(conn)
        changes["limits_version"] = pinned_version
    if target == "closed":
        changes["closed_at"] = now
    for field in ("note", "reason", "result", "message", "reply"):
        if field in params:
            _text(params, field, MAX_NOTE, required=False)

    new_stage = flow.STAGE_OF.get(target)
    restart = new_stage != stage or name in ("check_fail", "return", "resume")
    ended_stage, ended_deadline, on_time = None, None, None
    if restart and stage is not None and state != "suspended":
        ended_stage, ended_deadline = stage, deadline
        on_time = deadline is None or now <= deadline
    if restart:
        changes["stage"] = new_stage
        changes["stage_started_at"] = now
        if new_stage is None:
            new_deadline = None
        else:
            amount, unit = stage_limit(conn, kind, major, minor, new_stage, pinned_version)
            new_deadline = calendar.add(now, amount, unit)
    changes["stage_deadline"] = new_deadline
    order_due = None
    if name == "order":
        amount, unit = stage_limit(conn, kind, major, minor, "order_reply", pinned_version)
        order_due = calendar.add(now, amount, unit)
    changes["state"] = target
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(
            sql.Identifier(k),
            v if isinstance(v, sql.Composable) else sql.Literal(v),
        )
        for k, v in changes.items()
    )
    conn.execute(
        sql.SQL("UPDATE city_case SET {}, version = version + 1 WHERE id = %s").format(assignments),
        (case_id,),
    )
    event = conn.execute(
        """INSERT INTO case_event (case_id, at, actor, transition, from_state, to_state, version,
               parameters, signed_action, stage, stage_deadline, on_time)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (
            case_id,
            now,
            account,
            name,
            state,
            target,
            version + 1,
            Jsonb(dict(params)),
            signed_action,
            ended_stage,
            ended_deadline,
            on_time,
        ),
    ).fetchone()
    assert event is not None
    if name in supervision.STEPS:
        supervision.record(
            conn,
            name=name,
            case_id=case_id,
            event_id=event[0],
            params=params,
            account=account,
            street=street,
            bureau=bureau,
            now=now,
            due=order_due,
        )
    if name in supervision.ENDS_ORDERS:
        supervision.end_open(conn, case_id=case_id, event_id=event[0], now=now)
    attachments.link(conn, account=account, case_id=case_id, event_id=event[0], hashes=attached)
    return target, version + 1


def _requested_hours(conn: psycopg.Connection, case_id: int) -> int:
    row = conn.execute(
        "SELECT (parameters ->> 'working_hours')::int FROM case_event"
        " WHERE case_id = %s AND transition = 'request_postpone' ORDER BY id DESC LIMIT 1",
        (case_id,),
    ).fetchone()
    assert row is not None, "a pending postponement has its request event"
    return int(row[0])
