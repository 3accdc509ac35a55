"""Who may do what: one policy table, checked in one place, failing closed.

Every request the gateway lets through is first described as (action, product, level,
street) and checked here. A role absent from the table, an action absent from a role's
rule, or an empty rule denies. An account with several roles may do what any one allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mapserver.errors import CityGridError

ALL = "*"


class Forbidden(CityGridError):
    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Rule:
    """What one role may do. `streets = ALL` sees the whole district, else only its own."""

    actions: frozenset[str] = frozenset()
    maps: frozenset[str] = frozenset()
    finest_scale: int = 0  # the largest-scale level it may see (1:N), 0 = no map at all
    streets: str = "own"


BASE_MAPS = frozenset({"topo500", "topo2000", "grids", "components"})
# The cases overlay shows where every case is and its state: for the roles that read cases
# (street-scoped ones only on tiles of their streets), not for a bureau's people, who see
# only the cases dispatched to them, nor the administrator, who reads no cases.
# The hot-spot overlay (mapserver.evaluation.hotspot) shades grids by their cases: the same.
MAP_PRODUCTS = BASE_MAPS | {"cases", "hotspot"}
OVERVIEW = frozenset({"topo2000", "grids", "components"})
MAP_READ = frozenset({"map.view", "tiles.read", "map.identify"})
CASE_READ = frozenset({"case.read"})
# Uploading a photo or recording, for the roles that create cases or act on them.
CASE_ATTACH = frozenset({"case.attach"})
# An inspector's handheld (mapserver.device): with a device certificate and a bound token.
DEVICE = frozenset({"device.tasks", "device.report", "device.check", "device.upload", "device.map"})
# Per-street statistics (mapserver.cases.street_stats): street offices for their streets,
# the two centres and leaders for any.
STREET_STATS = frozenset({"street.stats"})
# Component online update (mapserver.components): a bureau's people edit the components of
# their own departments (the view narrows to those), each change signed.
COMPONENT_UPDATE = frozenset({"component.read", "component.edit", "component.import"})
# The command centre's side of the city–district exchange: forward, answer, read messages,
# withdraw a message the peer has not acknowledged.
EXCHANGE = frozenset({"exchange.read", "exchange.forward", "exchange.answer", "exchange.withdraw"})

POLICY: Mapping[str, Rule] = {
    "viewer": Rule(MAP_READ, OVERVIEW, 2000, "own"),
    # Case actions follow the workflow table (mapserver.cases.flow): who may fire what.
    "inspector": Rule(
        MAP_READ | CASE_READ | CASE_ATTACH | DEVICE | {"case.report", "case.verify"},
        MAP_PRODUCTS,
        500,
        "own",
    ),
    "operator": Rule(
        MAP_READ | CASE_READ | CASE_ATTACH | {"case.record", "case.accept", "case.reject"},
        MAP_PRODUCTS,
        500,
        ALL,
    ),
    "shift_leader": Rule(
        MAP_READ
        | CASE_READ
        | CASE_ATTACH
        | STREET_STATS
        | {"case.file", "case.suspend", "case.cancel"},
        MAP_PRODUCTS,
        500,
        ALL,
    ),
    "dispatcher": Rule(
        MAP_READ
        | CASE_READ
        | CASE_ATTACH
        | STREET_STATS
        | EXCHANGE
        | {"case.dispatch", "case.postpone", "case.forward"},
        MAP_PRODUCTS,
        500,
        ALL,
    ),
    "bureau_handler": Rule(
        MAP_READ | CASE_READ | CASE_ATTACH | COMPONENT_UPDATE | {"case.handle"},
        BASE_MAPS,
        500,
        ALL,
    ),
    # Street offices: their streets' cases, reminders and orders to bureaus (signed).
    "street_supervisor": Rule(
        MAP_READ | CASE_READ | STREET_STATS | {"case.supervise"}, MAP_PRODUCTS, 500, "own"
    ),
    # Leaders read the evaluation and decide its weights and grade thresholds (signed).
    "leader": Rule(
        MAP_READ | CASE_READ | STREET_STATS | {"eval.read", "eval.configure", "screen.read"},
        MAP_PRODUCTS,
        500,
        ALL,
    ),
    # Separation of duties: the auditor reads the audit and nothing else; the administrator
    # administers and never reads the audit.
    "security_officer": Rule(frozenset({"audit.read", "audit.cosign"})),
    # Partner systems (the city's hotline) over Open311: submit complaints and read back the
    # status of their own submissions; no map, no case list (mapserver.cases.open311).
    "partner": Rule(frozenset({"open311.read", "open311.submit"})),
    # The other install of the city–district exchange (mapserver.exchange): delivers signed
    # bundles and nothing else.
    "exchange_peer": Rule(frozenset({"exchange.receive"})),
    # The command centre's wall display (监督指挥大屏, mapserver.evaluation.screen): reads the
    # district's state and the overview map with cases and hot spots; nothing else, no acts.
    "screen": Rule(
        frozenset({"map.view", "tiles.read", "screen.read"}),
        frozenset({"topo2000", "grids", "cases", "hotspot"}),
        2000,
        ALL,
    ),
    "admin": Rule(
        # config.admin: the organisation tree, class tables, limits, work calendar
        # (mapserver.maintenance), each change signed and versioned.
        MAP_READ | {"account.admin", "pki.admin", "data.admin", "config.admin", "system.health"},
        BASE_MAPS,
        500,
        ALL,
    ),
}

# Separation of duties: no account may hold both roles of a pair. Checked when an account is
# added or granted a role (auth.accounts) and by the database (migration 0007's
# incompatible_role, which must list the same pairs), so a direct INSERT is refused too.
INCOMPATIBLE_ROLES: frozenset[frozenset[str]] = frozenset(
    {
        frozenset({"admin", "security_officer"}),  # who administers never audits himself
        frozenset({"bureau_handler", "shift_leader"}),  # who handles a case never closes it
        frozenset({"bureau_handler", "dispatcher"}),  # who dispatches never to himself
        frozenset({"operator", "partner"}),  # who submits unsigned never accepts it himself
    }
)

# Actions that do not touch the map, allowed to every account with a role: who am I, a
# token, a nonce, enrolling a signing key (with an enrolment code), one's own signed-action
# bundles, and the browser client's static files.
for_every_authenticated = frozenset(
    {"token.issue", "whoami", "signing.enrol", "action.nonce", "action.bundle", "static.read"}
)


@dataclass(frozen=True)
class Request:
    """What is asked: an action, and for map access the product, scale and the streets the
    requested area touches (None: not bound to any street)."""

    action: str
    product: str | None = None
    scale: int | None = None  # the level's scale denominator
    streets: frozenset[str] | None = None


def allows(rule: Rule, req: Request, own_streets: frozenset[str]) -> bool:
    if req.action not in rule.actions:
        return False
    if req.product is not None and (
        req.product not in rule.maps or req.scale is None or req.scale < rule.finest_scale
    ):
        return False
    return req.streets is None or rule.streets == ALL or bool(req.streets & own_streets)


def check(
    roles: Iterable[str],
    req: Request,
    own_streets: Iterable[str] = (),
    policy: Mapping[str, Rule] = POLICY,
) -> None:
    """Raise Forbidden unless one of `roles` allows `req`."""
    streets = frozenset(own_streets)
    if req.action in for_every_authenticated and any(r in policy for r in roles):
        return
    for role in roles:
        rule = policy.get(role)
        if rule is not None and allows(rule, req, streets):
            return
    raise Forbidden(f"not allowed: {req.action}")


def permitted(
    roles: Iterable[str],
    req: Request,
    own_streets: Iterable[str] = (),
    policy: Mapping[str, Rule] = POLICY,
) -> bool:
    try:
        check(roles, req, own_streets, policy)
    except Forbidden:
        return False
    return True


def street_scoped(roles: Iterable[str], policy: Mapping[str, Rule] = POLICY) -> bool:
    """True when none of the roles sees every street (the caller must then filter)."""
    return not any(policy[r].streets == ALL for r in roles if r in policy)
