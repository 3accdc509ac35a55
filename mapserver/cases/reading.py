"""What a person may see of cases: detail with history, lists with filters and paging,
inboxes by role, and the offline bundle. Scoped to the asker (streets, organisation);
never a coordinate, only codes, names and a pixel position in the map pictures."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from auth import policy
from auth.identity import Identity
from mapserver import class_text
from mapserver.cases import attachments, duplicates, flow, place, supervision
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import Services
from mapserver.settings import Settings
from mapserver.text_limits import MAX_PAGE
from webclient.messages import translate

NUMBER = re.compile(r"^[0-9]{4}-[0-9]{6}\Z")
PER_PAGE = 50
MAX_PER_PAGE = 200

_COLUMNS = (
    """c.id, c.number, c.state, c.kind, c.major, c.minor, c.component_code, c.source,
    c.description, c.address, c.contact, ST_X(c.geom), ST_Y(c.geom), c.grid_code,
    c.community_code, m.name, c.street_code, s.name, c.bureau, c.reporter, c.version,
    c.created_at, c.stage, c.stage_deadline, c.rework_count, c.postpone_pending,
    c.duplicate_of, c.closed_at, k.name, c.contact_salt,
    """
    + supervision.OPEN_ESCALATION
    + ", c.pixel_x, c.pixel_y, "
    + supervision.ORDER_WAITING
)


def _from(locale: str) -> sql.SQL:
    """The cases with their community, street and class (its name in `locale`)."""
    return sql.SQL(
        """FROM city_case c
    JOIN community m ON m.code = c.community_code
    JOIN street s ON s.code = c.street_code
    LEFT JOIN """
        + class_text.relation(locale)
        + """ k ON (k.kind, k.major, k.minor) = (c.kind, c.major, c.minor)"""
    )


def organisation_of(conn: psycopg.Connection, account: str) -> str | None:
    row = conn.execute("SELECT org_code FROM account WHERE name = %s", (account,)).fetchone()
    return row[0] if row else None


def only_own_bureau(who: Identity) -> bool:
    """A bureau's people see the cases dispatched to their organisation, nothing else."""
    return (
        "bureau_handler" in who.roles
        and not policy.permitted(who.roles, policy.Request("case.dispatch"))
        and not policy.permitted(who.roles, policy.Request("case.file"))
    )


def _scope(conn: psycopg.Connection, who: Identity) -> tuple[sql.Composable, list[Any]]:
    """SQL condition limiting cases to what `who` may see."""
    parts: list[sql.Composable] = []
    values: list[Any] = []
    if policy.street_scoped(who.roles):
        parts.append(sql.SQL("c.street_code = ANY(%s)"))
        values.append(list(who.streets))
    if only_own_bureau(who):
        parts.append(sql.SQL("c.bureau = %s"))
        values.append(organisation_of(conn, who.account))
    if not parts:
        return sql.SQL("true"), values
    return sql.SQL(" AND ").join(parts), values


def _summary(
    row: tuple[Any, ...], services: Services, who: Identity, now: dt.datetime
) -> dict[str, Any]:
    (
        _,
        number,
        state,
        kind,
        major,
        minor,
        component,
        source,
        description,
        address,
        contact,
        x,
        y,
        grid,
        community,
        community_name,
        street,
        street_name,
        bureau,
        reporter,
        version,
        created,
        stage,
        deadline,
        rework,
        pending,
        duplicate_of,
        closed_at,
        class_name,
        contact_salt,
        escalated,
        pixel_x,
        pixel_y,
        order_waiting,
    ) = row
    calendar = services.calendar()
    pixel = case_pixel(services, pixel_x, pixel_y, x, y)
    shown: dict[str, Any] = {
        "number": number,
        "state": state,
        "state_name": translate(services.settings.locale, f"state.{state}"),
        "kind": kind,
        "class": {"major": major, "minor": minor, "name": class_name},
        "component": component,
        "source": source,
        "description": description,
        "address": address,
        "grid": grid,
        "community": {"code": community, "name": community_name},
        "street": {"code": street, "name": street_name},
        "pixel": pixel._asdict(),
        "bureau": bureau,
        "reporter": reporter,
        "version": version,
        "created_at": created.isoformat(),
        "stage": stage,
        "deadline": deadline.isoformat() if deadline else None,
        "remaining_seconds": (
            int(calendar.remaining(deadline, now).total_seconds()) if deadline else None
        ),
        "overdue": bool(deadline and calendar.overdue(deadline, now)),
        "rework_count": rework,
        "postpone_pending": pending,
        "duplicate_of": duplicate_of,
        "closed_at": closed_at.isoformat() if closed_at else None,
        "escalated": escalated,  # a street's order unanswered past its due time
        "allowed": [
            name
            for name in flow.open_to(state, pending, order_waiting)
            if policy.permitted(who.roles, policy.Request(flow.TRANSITIONS[name].action))
        ],
    }
    if "operator" in who.roles:
        shown["contact"] = contact  # the caller's contact: operators only
        shown["contact_salt"] = contact_salt  # to check it against the signed contact_digest
    return shown


def case_pixel(
    services: Services, gx: int | None, gy: int | None, x: float | None, y: float | None
) -> place.Pixel:
    """A case's place in the finest level's pictures: kept with it, or (a case written before
    pixels were kept, in one process) found from its point."""
    if gx is None or gy is None:
        assert x is not None and y is not None, "a case has a point or a pixel"
        gx, gy = place.global_pixel(services.tiles().grid, float(x), float(y))
    return place.pixel_at(len(services.tile_source().levels()) - 1, int(gx), int(gy))


def _one(
    conn: psycopg.Connection,
    number: str,
    who: Identity,
    locale: str = class_text.BASE,
    scoped: bool = True,
) -> tuple[Any, ...]:
    if not NUMBER.match(number):
        raise NotFound(f"no case {number[:20]}")
    scope, values = _scope(conn, who) if scoped else (sql.SQL("true"), [])
    row = conn.execute(
        sql.SQL("SELECT {} {} WHERE c.number = %s AND {}").format(
            sql.SQL(_COLUMNS), _from(locale), scope
        ),
        [number, *values],
    ).fetchone()
    if row is None:
        raise NotFound(f"no case {number}")  # missing, or not the asker's: the same answer
    return tuple(row)


def require_visible(conn: psycopg.Connection, number: str, who: Identity) -> None:
    """404 unless the case exists and `who` may see it (the same answer for both)."""
    _one(conn, number, who)


def detail(
    conn: psycopg.Connection,
    services: Services,
    number: str,
    who: Identity,
    acted: bool = False,
) -> dict[str, Any]:
    """The case with its history. `acted`: the answer to a step `who` just took on a case
    they could see before it, shown even when the step took it out of their sight (a
    bureau's return): the case as their own step left it, never anything later."""
    row = _one(conn, number, who, services.settings.locale, scoped=not acted)
    now = dt.datetime.now(dt.UTC)
    shown = _summary(row, services, who, now)
    # The bureau's name for the case's page: looked up here, for one case, and not joined into
    # the lists' query, where it cost an inbox page of 10⁵ cases a tenth (bench/cases.py).
    named = (
        shown["bureau"]
        and conn.execute(
            "SELECT name FROM organisation WHERE code = %s", (shown["bureau"],)
        ).fetchone()
    )
    shown["bureau_name"] = named[0] if named else None
    shown["supervision"] = supervision.of_case(conn, row[0], now)
    scope, values = _scope(conn, who)  # hint only at cases the asker may see
    pixel_m = services.tile_source().levels()[-1].resolution
    shown["possible_duplicates"] = duplicates.nearby(conn, row[0], scope, values, pixel_m)
    attached = attachments.by_event(conn, row[0])
    shown["history"] = [
        {
            "at": at.isoformat(),
            "actor": actor,
            "transition": transition,
            "from": from_state,
            "to": to_state,
            "version": version,
            "parameters": params,
            "signed_action": action_id,
            "stage": stage,
            "stage_deadline": deadline.isoformat() if deadline else None,
            "on_time": on_time,
            "attachments": attached.get(event_id, []),
        }
        for (
            at,
            actor,
            transition,
            from_state,
            to_state,
            version,
            params,
            action_id,
            stage,
            deadline,
            on_time,
            event_id,
        ) in conn.execute(
            """SELECT at, actor, transition, from_state, to_state, version, parameters,
                      signed_action, stage, stage_deadline, on_time, id
               FROM case_event WHERE case_id = %s ORDER BY id""",
            (row[0],),
        ).fetchall()
    ]
    shown["bureau_names"] = _bureau_names(conn, shown)
    return shown


def _bureau_names(conn: psycopg.Connection, shown: Mapping[str, Any]) -> dict[str, str]:
    """The names of the bureaus the case and its steps name (a dispatch to a bureau since
    retired or renamed included), so that its page names each, whoever reads it."""
    codes = {shown["bureau"]} | {
        step["parameters"].get("bureau")
        for step in shown["history"]
        if isinstance(step["parameters"], Mapping)
    }
    asked = sorted(c for c in codes if isinstance(c, str))
    if not asked:
        return {}
    rows = conn.execute(
        "SELECT code, name FROM organisation WHERE code = ANY(%s)", (asked,)
    ).fetchall()
    return {str(code): str(name) for code, name in rows}


_FILTERS = {
    "state": "c.state",
    "kind": "c.kind",
    "source": "c.source",
    "street": "c.street_code",
    "community": "c.community_code",
    "grid": "c.grid_code",
    "major": "c.major",
    "minor": "c.minor",
    "bureau": "c.bureau",
}


def _page(args: Mapping[str, str]) -> tuple[int, int]:
    try:
        page = int(args.get("page", "1"))
        per_page = int(args.get("per_page", str(PER_PAGE)))
    except ValueError:
        raise InvalidInput("page and per_page must be whole numbers") from None
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"page from 1 to {MAX_PAGE}, per_page from 1 to {MAX_PER_PAGE}")
    return page, per_page


def listing(
    conn: psycopg.Connection,
    services: Services,
    who: Identity,
    args: Mapping[str, str],
    extra: sql.Composable | None = None,
) -> dict[str, Any]:
    """Cases the asker may see, filtered, sorted by deadline (or creation), one page."""
    unknown = (
        set(args)
        - set(_FILTERS)
        - {
            "overdue",
            "mine",
            "escalated",
            "page",
            "per_page",
            "sort",
        }
    )
    if unknown:
        raise InvalidInput(f"unknown filter {sorted(unknown)[0]!r}")
    page, per_page = _page(args)
    scope, values = _scope(conn, who)
    conditions: list[sql.Composable] = [scope]
    for name, column in _FILTERS.items():
        if name in args:
            wanted = [v for v in args[name].split(",") if v][:50]
            conditions.append(sql.SQL("{} = ANY(%s)").format(sql.SQL(column)))
            values.append(wanted)
    if args.get("overdue") in ("1", "true"):
        conditions.append(sql.SQL("c.stage_deadline < now()"))
    if args.get("escalated") in ("1", "true"):  # an order of the street answered too late
        conditions.append(sql.SQL(supervision.OPEN_ESCALATION))
    if args.get("mine") in ("1", "true"):
        conditions.append(sql.SQL("c.bureau = %s"))
        values.append(organisation_of(conn, who.account))
    if extra is not None:
        conditions.append(extra)
    sort = args.get("sort", "deadline")
    if sort not in ("deadline", "created"):
        raise InvalidInput("sort must be deadline or created")
    order = (
        "c.stage_deadline ASC NULLS LAST, c.id" if sort == "deadline" else "c.created_at DESC, c.id"
    )
    where = sql.SQL(" AND ").join(conditions)
    total = conn.execute(
        sql.SQL("SELECT count(*) FROM city_case c WHERE {}").format(where), values
    ).fetchone()
    rows = conn.execute(
        sql.SQL("SELECT {} {} WHERE {} ORDER BY {} LIMIT %s OFFSET %s").format(
            sql.SQL(_COLUMNS), _from(services.settings.locale), where, sql.SQL(order)
        ),
        [*values, per_page, (page - 1) * per_page],
    ).fetchall()
    now = dt.datetime.now(dt.UTC)
    return {
        "cases": [_summary(tuple(r), services, who, now) for r in rows],
        "total": int(total[0]) if total else 0,
        "page": page,
        "per_page": per_page,
    }


# What waits for each role (a case can wait for several).
INBOX: dict[str, str] = {
    "operator": "c.state = 'reported' OR c.state = 'feedback'",
    "inspector": "(c.state = 'reported' AND c.source <> 'inspector') OR c.state = 'checking'",
    "shift_leader": "c.state = 'accepted'",
    "dispatcher": "c.state IN ('filed', 'handled')"
    " OR (c.state = 'handling' AND c.postpone_pending)"
    f" OR {supervision.OPEN_ESCALATION}",  # a street's order left unanswered past its due time
    "bureau_handler": "c.state IN ('dispatched', 'handling')"
    f" OR EXISTS (SELECT 1 FROM case_order o WHERE o.case_id = c.id AND {supervision.OPEN})",
    "street_supervisor": "c.state NOT IN ('closed', 'rejected', 'cancelled')",
    "leader": "c.state NOT IN ('closed', 'rejected', 'cancelled') AND c.stage_deadline < now()",
}


def inbox(
    conn: psycopg.Connection, services: Services, who: Identity, args: Mapping[str, str]
) -> dict[str, Any]:
    waiting = [f"({INBOX[r]})" for r in who.roles if r in INBOX]
    if not waiting:
        return {"cases": [], "total": 0, "page": 1, "per_page": PER_PAGE}
    return listing(conn, services, who, args, sql.SQL("(" + " OR ".join(waiting) + ")"))


def _submitted(
    conn: psycopg.Connection, witnesses: list[Any], number: str, submission: dict[str, Any]
) -> dict[str, Any]:
    """A partner's request, with the log's evidence of its audit entry: the entry names the
    partner's account, the case and the request's hash (mapserver.cases.open311)."""
    from auth import action_bundle

    try:
        log, _ = action_bundle.entry_evidence(
            conn,
            witnesses,
            "resource = %s AND detail ? 'open311' AND detail ->> 'open311' = 'submit'"
            " AND detail ->> 'request_sha256' = %s",
            (f"case {number}", submission.get("request_sha256")),
        )
    except action_bundle.NotYetLogged as exc:
        return {**submission, "log": None, "pending": exc.message}
    return {**submission, "log": log}


def bundle(conn: psycopg.Connection, settings: Settings, number: str) -> dict[str, Any]:
    """The case's history with every signed action as an offline-verifiable bundle (an act
    whose log evidence is not complete yet says so in its bundle: see auth.action_bundle).
    A case the exchange peer forwarded starts with the peer's bundle, as it was received."""
    from audit.cosignature import parse_vkeys
    from auth import action_bundle

    witnesses = parse_vkeys(settings.audit_witnesses)
    rows = conn.execute(
        """SELECT e.transition, e.from_state, e.to_state, e.version, e.at, e.actor,
                  e.parameters -> 'open311', i.source_id, i.bundle, a.id, a.payload,
                  a.signature, a.certificate
           FROM case_event e JOIN city_case c ON c.id = e.case_id
           LEFT JOIN signed_action a ON a.id = e.signed_action
           LEFT JOIN exchange_inbox i ON e.transition = 'create'
               AND i.source_id = e.parameters -> 'exchange' ->> 'source_id'
           WHERE c.number = %s ORDER BY e.id""",
        (number,),
    ).fetchall()
    events = [
        {
            "transition": transition,
            "from": from_state,
            "to": to_state,
            "version": version,
            "at": at.isoformat(),
            "actor": actor,
            "signed_action": action_id,
            "bundle": (
                action_bundle.for_action(
                    conn, settings.pki_dir, witnesses, bytes(data), bytes(sig), cert, True
                )
                if action_id is not None
                else None
            ),
            **(
                {"open311": _submitted(conn, witnesses, number, submission)}
                if submission and action_id is None  # a partner's request, unsigned
                else {}
            ),
            **({"exchange": {"source_id": source_id, "bundle": message}} if message else {}),
        }
        for (
            transition,
            from_state,
            to_state,
            version,
            at,
            actor,
            submission,
            source_id,
            message,
            action_id,
            data,
            sig,
            cert,
        ) in rows
    ]
    doc: dict[str, Any] = {"format": "citygrid-case/1", "case": number, "events": events}
    if events:
        doc["head"] = head(conn, witnesses, stated_head(number, events))
    return doc


def stated_head(number: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What an export of the case states in its audit entry (`case_head`): the version and
    state it read. Under a checkpoint, that entry shows that a bundle of the case holding
    this many events left none out as of the entry's time."""
    return {"case": number, "version": len(events), "state": events[-1]["to"]}


def head_resource(number: str) -> str:
    return f"case {number} bundle"


def head(conn: psycopg.Connection, witnesses: list[Any], stated: dict[str, Any]) -> dict[str, Any]:
    """The newest export's entry stating `stated`, with the log's evidence; while none is
    under a signed checkpoint yet, says so (`pending`): this export's own entry is one."""
    from psycopg.types.json import Jsonb

    from auth import action_bundle

    try:
        log, _ = action_bundle.entry_evidence(
            conn,
            witnesses,
            "resource = %s AND detail ? 'case_head' AND detail -> 'case_head' = %s",
            (head_resource(stated["case"]), Jsonb(stated)),
            newest=True,
        )
    except action_bundle.NotYetLogged as exc:
        return {**stated, "log": None, "pending": exc.message}
    return {**stated, "log": log}
