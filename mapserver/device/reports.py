"""A device's report and its verify/check results, as signed actions of the device's
account through the case store, in the caller's transaction (so the case, the signed
action, the idempotency key's answer and the audit entry commit together)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import psycopg

from audit.notes import note
from auth import actions, policy
from auth.ca_store import CaStore
from auth.identity import Identity
from mapserver.cases import flow, reading, store
from mapserver.cases.own_streets import place_in_own_streets
from mapserver.device import fix as fix_mod
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import Services

# What a device may fire: the inspector's transitions (verification and check on site).
TRANSITIONS = frozenset({"verify", "check_pass", "check_fail"})
CLOCK_SKEW = dt.timedelta(days=30)  # a device's clock may be wrong; not wildly
ENVELOPE = ("payload", "signature", "certificate")  # auth.signed_action.parse_envelope
BESIDE_REPORT = ("fix",)  # what a report carries beside its envelope (mapserver.device.fix)


def only_known(body: Any, beside: tuple[str, ...] = ()) -> None:
    """A body holds the signed envelope and what the route takes beside it, nothing else: a
    key the server would drop unread is refused by name, so that no device believes that
    something it sent (an altitude beside the fix, say) was taken."""
    if not isinstance(body, Mapping):
        return  # the envelope's own check refuses it
    for key in body:
        if key not in ENVELOPE and key not in beside:
            taken = ", ".join(ENVELOPE + beside)
            raise InvalidInput(f"the body takes {taken} only, not {str(key)[:40]!r}")


def client_time(params: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    """The device's own time of the report (ISO 8601 with its offset), kept beside ours."""
    value = params.get("client_time")
    wrong = InvalidInput("client_time must be the device's ISO 8601 time with its offset")
    if not isinstance(value, str) or len(value) > 40:
        raise wrong
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise wrong from None
    if when.tzinfo is None:
        raise InvalidInput("client_time needs its UTC offset")
    if abs(when - now) > CLOCK_SKEW:
        raise InvalidInput("client_time is more than 30 days from the server's time")
    return when


def _signed(
    conn: psycopg.Connection, services: Services, who: Identity, body: Any, action: str, res: str
) -> tuple[dict[str, Any], int]:
    ca = CaStore(services.settings.pki_dir).certificate()
    verified, action_id = actions.accept(conn, who, body, action, res, ca)
    note(action=action, resource=res, signature_sha256=verified.signature_sha256)
    return dict(verified.parameters), action_id


def report(
    conn: psycopg.Connection, services: Services, who: Identity, body: Any
) -> dict[str, Any]:
    """A signed `case.report` of the device's inspector; the answer a device needs."""
    now = dt.datetime.now(dt.UTC)
    only_known(body, BESIDE_REPORT)
    params, action_id = _signed(conn, services, who, body, "case.report", "cases")
    if params.get("source") != "inspector":
        raise InvalidInput("source must be inspector")
    when = client_time(params, now)
    beside = body.get("fix") if isinstance(body, dict) else None
    fix = fix_mod.from_request(params.get("place"), beside)
    tiles = services.tile_source()  # where the map is: this process, or the renderer
    if fix is not None:
        if params.get("kind") != "event":
            raise InvalidInput("a GPS fix places an event; a component case names its code")
        spec = {"gps": [fix.lon, fix.lat]}
        resolved = place_in_own_streets(tiles, spec, who, "place.gps", allow_gps=True)
    else:
        resolved = place_in_own_streets(tiles, store.place_spec(params), who, "place")
    number = store.create(
        conn,
        services.settings,
        None,
        services.calendar(),
        account=who.account,
        params=params,
        signed_action=action_id,
        now=now,
        resolved=resolved,
    )
    conn.execute(
        """INSERT INTO device_report (case_id, account, client_time, server_time, fix_lon,
               fix_lat, fix_salt)
           SELECT id, %s, %s, %s, %s, %s, %s FROM city_case WHERE number = %s""",
        (
            who.account,
            when,
            now,
            fix.lon if fix else None,
            fix.lat if fix else None,
            fix.salt if fix else None,
            number,
        ),
    )
    note(resource=f"case {number}", signed_action=action_id, case_version=1)
    return _answer(conn, services, who, number) | {
        "client_time": when.isoformat(),
        "server_time": now.isoformat(),
        "signed_action": action_id,
    }


def act(
    conn: psycopg.Connection, services: Services, who: Identity, number: str, name: str, body: Any
) -> dict[str, Any]:
    """A verify or check result from the field: signed `case.NAME` on `case NUMBER`."""
    if name not in TRANSITIONS:
        raise NotFound(f"a device fires {', '.join(sorted(TRANSITIONS))} only")
    policy.check(who.roles, policy.Request(flow.TRANSITIONS[name].action), who.streets)
    reading.require_visible(conn, number, who)  # 404 outside one's streets
    only_known(body)
    params, action_id = _signed(conn, services, who, body, f"case.{name}", f"case {number}")
    now = dt.datetime.now(dt.UTC)
    when = client_time(params, now) if "client_time" in params else None
    _, version = store.act(
        conn,
        services.calendar(),
        number=number,
        name=name,
        params=params,
        account=who.account,
        signed_action=action_id,
        now=now,
    )
    note(resource=f"case {number}", transition=name, signed_action=action_id, case_version=version)
    shown = _answer(conn, services, who, number) | {
        "server_time": now.isoformat(),
        "signed_action": action_id,
    }
    if when is not None:
        shown["client_time"] = when.isoformat()
    return shown


def _answer(
    conn: psycopg.Connection, services: Services, who: Identity, number: str
) -> dict[str, Any]:
    """Small, for a slow link: the case's number, state, version, place in pixels and the
    attachments of its newest history entry."""
    case = reading.detail(conn, services, number, who)
    last = case["history"][-1]
    return {
        "number": case["number"],
        "state": case["state"],
        "version": case["version"],
        "grid": case["grid"],
        "pixel": case["pixel"],
        "attachments": [a["sha256"] for a in last["attachments"]],
    }
