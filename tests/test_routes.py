"""Every route of the production app, asked as every role: the expected matrix lives here,
so a new route without a row fails. Plus the shape that makes it hold: the policy decides
before any work, undeclared routes refuse to start, a success without a decision is a 500.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Blueprint

from audit.spool import SpoolWriter
from auth.access import Declarations, UndeclaredRoutes, requires
from mapserver.services import services
from mapserver.settings import Settings

from .app_client import Install
from .sequenced import sequenced
from .test_device import Device

STREET_1, STREET_2 = "110108001", "110108002"
MAP_ROLES = (
    "viewer",
    "inspector",
    "operator",
    "shift_leader",
    "dispatcher",
    "bureau_handler",
    "street_supervisor",
    "leader",
    "admin",
)
ROLES = (*MAP_ROLES, "security_officer", "partner", "screen")
SCOPED = frozenset({"viewer", "inspector", "street_supervisor"})  # see only their streets
EVERYONE = frozenset(ROLES)  # every account with a role; "norole" is refused everything
NOT_VIEWER = frozenset(MAP_ROLES) - {"viewer"}
OFFICER = frozenset({"security_officer"})
ADMIN = frozenset({"admin"})
CASE_READERS = frozenset(MAP_ROLES) - {"viewer", "admin"}
CASE_MAP = CASE_READERS - {"bureau_handler"}  # the cases overlay: not a bureau's people
PARTNER = frozenset({"partner"})  # systems such as the city hotline, over Open311
# The command centre's wall display: the overview map with cases and hot spots, and the
# big screen's state; nothing else.
SCREEN = frozenset({"screen"})

# rule → (method, path with {tile} placeholders, roles allowed). The tile is a 1:2000 tile
# inside street 001, where the street-scoped accounts live.
MATRIX: dict[str, tuple[str, str, frozenset[str]]] = {
    "/": ("GET", "/", frozenset(MAP_ROLES) | SCREEN),
    "/review": ("GET", "/review", OFFICER),
    "/manage": ("GET", "/manage", ADMIN),
    "/inbox": ("GET", "/inbox", CASE_READERS),
    "/inbox/<number>": ("GET", "/inbox/2026-000001", CASE_READERS),
    "/static/<path:filename>": ("GET", "/static/viewer.js", EVERYONE),
    "/favicon.ico": ("GET", "/favicon.ico", EVERYONE),
    "/tiles": ("GET", "/tiles", frozenset(MAP_ROLES) | SCREEN),
    "/tiles/<name>": ("GET", "/tiles/topo500", NOT_VIEWER),
    "/tiles/<name>/<z>/<x>/<y>": (
        "GET",
        "/tiles/topo2000/{z}/{x}/{y}.png",
        frozenset(MAP_ROLES) | SCREEN,
    ),
    "/map/identify": (
        "GET",
        "/map/identify?map=topo2000&level={z}&x={x}&y={y}&col=128&row=128",
        frozenset(MAP_ROLES),
    ),
    "/map/cases": ("GET", "/map/cases?level={z}&x={x}&y={y}&col=128&row=128", CASE_MAP),
    "/auth/whoami": ("GET", "/auth/whoami", EVERYONE),
    "/auth/token": ("POST", "/auth/token", EVERYONE),
    "/auth/nonce": ("POST", "/auth/nonce", EVERYONE),
    "/auth/actions/<int:action_id>/bundle": ("GET", "/auth/actions/1/bundle", EVERYONE),
    "/auth/signing/enrol": ("POST", "/auth/signing/enrol", EVERYONE),
    "/admin/accounts": ("POST", "/admin/accounts", ADMIN),
    "/admin/accounts/<name>/disable": ("POST", "/admin/accounts/rt-viewer/disable", ADMIN),
    "/admin/certificates/<serial>/revoke": ("POST", "/admin/certificates/ab/revoke", ADMIN),
    "/audit/entries": ("GET", "/audit/entries", OFFICER),
    "/audit/key": ("GET", "/audit/key", OFFICER),
    "/audit/checkpoints": ("GET", "/audit/checkpoints", OFFICER),
    "/audit/checkpoint": ("GET", "/audit/checkpoint", OFFICER),
    "/audit/tile/<path:path>": ("GET", "/audit/tile/0/000.p/1", OFFICER),
    "/audit/proof/inclusion": ("GET", "/audit/proof/inclusion?entry=0", OFFICER),
    "/audit/proof/consistency": ("GET", "/audit/proof/consistency?from=1&to=1", OFFICER),
    "/audit/export": ("GET", "/audit/export?format=json&limit=1", OFFICER),
    "/audit/register": ("GET", "/audit/register?limit=5", OFFICER),
    "/audit/cosignatures": ("POST", "/audit/cosignatures", OFFICER),
    "/health": ("GET", "/health", ADMIN),
    "/cases": ("GET", "/cases", CASE_READERS),
    "/cases/inbox": ("GET", "/cases/inbox", CASE_READERS),
    "/cases/forms": ("GET", "/cases/forms", CASE_READERS),
    "/cases/<number>": ("GET", "/cases/2026-000001", CASE_READERS),
    "/cases/<number>/bundle": ("GET", "/cases/2026-000001/bundle", CASE_READERS),
    "/cases/report": ("POST", "/cases/report", frozenset({"inspector"})),
    "/cases/record": ("POST", "/cases/record", frozenset({"operator"})),
    "/cases/<number>/<name>": ("POST", "/cases/2026-000001/file", frozenset({"shift_leader"})),
    "/cases/attachments": (
        "POST",
        "/cases/attachments",
        frozenset({"inspector", "operator", "shift_leader", "dispatcher", "bureau_handler"}),
    ),
    "/cases/<number>/attachments/<sha256>": (
        "GET",
        "/cases/2026-000001/attachments/" + "0" * 64,
        CASE_READERS,
    ),
    "/cases/<number>/exchange": ("GET", "/cases/2026-000001/exchange", CASE_READERS),
    "/cases/<number>/exchange/<source_id>/files/<sha256>": (
        "GET",
        "/cases/2026-000001/exchange/city-110108-1/files/" + "0" * 64,
        CASE_READERS,
    ),
    "/open311/v2/services.json": ("GET", "/open311/v2/services.json", PARTNER),
    "/open311/v2/services/<code>.json": ("GET", "/open311/v2/services/event-01-02.json", PARTNER),
    "/open311/v2/requests.json": ("GET", "/open311/v2/requests.json", PARTNER),
    "/open311/v2/requests/<request_id>.json": (
        "GET",
        "/open311/v2/requests/2026-000001.json",
        PARTNER,
    ),
}
MATRIX.update(
    {
        "/evaluation/indicators": (
            "GET",
            "/evaluation/indicators?subject=bureau&from=2026-01-01&to=2026-01-31",
            frozenset({"leader"}),
        ),
        "/evaluation/drill": (
            "GET",
            "/evaluation/drill?indicator=bureau.handling_rate&subject=x&from=2026-01-01&to=2026-01-31",
            frozenset({"leader"}),
        ),
        "/evaluation/config": ("GET", "/evaluation/config", frozenset({"leader"})),
        "/evaluation/trend": (
            "GET",
            "/evaluation/trend?indicator=bureau.handling_rate&from=2026-01-01&to=2026-01-31",
            frozenset({"leader"}),
        ),
        "/evaluation/classes": (
            "GET",
            "/evaluation/classes?from=2026-01-01&to=2026-01-31",
            frozenset({"leader"}),
        ),
        "/evaluation/report.<fmt>": (
            "GET",
            "/evaluation/report.xlsx?subject=bureau&from=2026-01-01&to=2026-01-31",
            frozenset({"leader"}),
        ),
        "/evaluation": ("GET", "/evaluation", frozenset({"leader"})),
        # Hot spots: the policy of the `hotspot` overlay, as for the cases overlay.
        "/evaluation/hotspot/<z>/<x>/<y>": (
            "GET",
            "/evaluation/hotspot/{z}/{x}/{y}.png?from=2026-01-01&to=2026-01-31",
            CASE_MAP | SCREEN,
        ),
        "/screen": ("GET", "/screen", frozenset({"leader"}) | SCREEN),
        "/screen/state": ("GET", "/screen/state", frozenset({"leader"}) | SCREEN),
    }
)
# Component online update: a bureau's people (the view narrows to their departments).
BUREAU = frozenset({"bureau_handler"})
MATRIX.update(
    {
        "/bureau/components": ("GET", "/bureau/components", BUREAU),
        "/components": ("GET", "/components", BUREAU),
        "/components/forms": ("GET", "/components/forms", BUREAU),
        "/components/<code>": ("GET", "/components/1101080101000001", BUREAU),
        "/components/<code>/<op>": ("POST", "/components/1101080101000001/edit", BUREAU),
        "/components/imports": ("POST", "/components/imports", BUREAU),
        "/components/imports/<import_id>": (
            "GET",
            "/components/imports/00000000-0000-0000-0000-000000000000",
            BUREAU,
        ),
        "/components/imports/<import_id>/apply": (
            "POST",
            "/components/imports/00000000-0000-0000-0000-000000000000/apply",
            BUREAU,
        ),
    }
)
# Street supervision: statistics for street offices (their streets), the centres, leaders.
STREET_STATS = frozenset({"street_supervisor", "leader", "shift_leader", "dispatcher"})
MATRIX.update(
    {
        "/street": ("GET", "/street", STREET_STATS),
        "/street/stats": ("GET", "/street/stats?from=2026-01-01&to=2026-01-31", STREET_STATS),
    }
)
# Application maintenance: administrators only; every change a signed action.
MATRIX.update(
    {
        "/maintenance/summary": ("GET", "/maintenance/summary", ADMIN),
        "/maintenance/history": ("GET", "/maintenance/history", ADMIN),
        "/maintenance/organisations": ("GET", "/maintenance/organisations", ADMIN),
        "/maintenance/organisations/<code>": ("POST", "/maintenance/organisations/x", ADMIN),
        "/maintenance/classes/<kind>": ("GET", "/maintenance/classes/event", ADMIN),
        "/maintenance/classes/<kind>/<major>/<minor>": (
            "POST",
            "/maintenance/classes/event/01/02",
            ADMIN,
        ),
        "/maintenance/limits": ("GET", "/maintenance/limits", ADMIN),
        "/maintenance/limits/<stage>": ("POST", "/maintenance/limits/handle", ADMIN),
        "/maintenance/calendar": ("GET", "/maintenance/calendar", ADMIN),
        "/maintenance/calendar/<day>": ("POST", "/maintenance/calendar/2026-10-09", ADMIN),
        "/maintenance/accounts": ("GET", "/maintenance/accounts?q=rt", ADMIN),
        "/maintenance/accounts/<name>": ("GET", "/maintenance/accounts/rt-viewer", ADMIN),
        "/maintenance/accounts/<name>/enable": (
            "POST",
            "/maintenance/accounts/rt-viewer/enable",
            ADMIN,
        ),
        "/maintenance/accounts/<name>/grant": (
            "POST",
            "/maintenance/accounts/rt-viewer/grant",
            ADMIN,
        ),
        "/maintenance/accounts/<name>/revoke-role": (
            "POST",
            "/maintenance/accounts/rt-viewer/revoke-role",
            ADMIN,
        ),
        "/maintenance/accounts/<name>/enrol-code": (
            "POST",
            "/maintenance/accounts/rt-viewer/enrol-code",
            ADMIN,
        ),
        "/maintenance/accounts/<name>/certificates": (
            "POST",
            "/maintenance/accounts/rt-viewer/certificates",
            ADMIN,
        ),
    }
)
# City–district exchange: the command centre forwards, answers and reads; only the peer
# install's account (role exchange_peer, not asked here) delivers bundles.
DISPATCHER = frozenset({"dispatcher"})
MATRIX.update(
    {
        "/exchange": ("GET", "/exchange", DISPATCHER),
        "/exchange/receive": ("POST", "/exchange/receive", frozenset()),
        "/exchange/files/<sha256>": ("GET", "/exchange/files/" + "0" * 64, frozenset()),
        "/exchange/messages/<source_id>/files/<sha256>": (
            "GET",
            "/exchange/messages/district-110108-1/files/" + "0" * 64,
            DISPATCHER,
        ),
        "/exchange/cases/<number>/forward": (
            "POST",
            "/exchange/cases/2026-000001/forward",
            DISPATCHER,
        ),
        "/exchange/forward": ("POST", "/exchange/forward", DISPATCHER),
        "/exchange/messages": ("GET", "/exchange/messages", DISPATCHER),
        "/exchange/messages/<source_id>/result": (
            "POST",
            "/exchange/messages/district-110108-1/result",
            DISPATCHER,
        ),
        "/exchange/messages/<source_id>/withdraw": (
            "POST",
            "/exchange/messages/district-110108-1/withdraw",
            DISPATCHER,
        ),
    }
)
# Device routes: inspectors only, asked with a device certificate and its bound token
# (`Routes.ask`); the device guard's own refusals are in tests/test_device.py.
INSPECTOR = frozenset({"inspector"})
MATRIX.update(
    {
        "/device/v1/tasks": ("GET", "/device/v1/tasks", INSPECTOR),
        "/device/v1/map": ("GET", "/device/v1/map?case=2026-000001&w=480&h=640", INSPECTOR),
        "/device/v1/cases/<number>/attachments/<sha256>": (
            "GET",
            "/device/v1/cases/2026-000001/attachments/" + "0" * 64,
            INSPECTOR,
        ),
        "/device/v1/reports": ("POST", "/device/v1/reports", INSPECTOR),
        "/device/v1/cases/<number>/<name>": (
            "POST",
            "/device/v1/cases/2026-000001/verify",
            INSPECTOR,
        ),
        "/device/v1/uploads": ("POST", "/device/v1/uploads", INSPECTOR),
        "/device/v1/uploads/<upload_id>": (
            "PATCH",
            "/device/v1/uploads/00000000-0000-0000-0000-000000000000",
            INSPECTOR,
        ),
    }
)
# Further methods of a rule that has a row above.
MORE_METHODS: dict[str, list[tuple[str, str, frozenset[str]]]] = {
    "/open311/v2/requests.json": [("POST", "/open311/v2/requests.json", PARTNER)],
    "/evaluation/config": [("POST", "/evaluation/config", frozenset({"leader"}))],
    "/device/v1/uploads": [("OPTIONS", "/device/v1/uploads", INSPECTOR)],
    "/components": [("POST", "/components", BUREAU)],
    "/exchange/files/<sha256>": [("PUT", "/exchange/files/" + "0" * 64, frozenset())],
    "/device/v1/uploads/<upload_id>": [  # HEAD: a body-less answer, in test_device.py
        ("DELETE", "/device/v1/uploads/00000000-0000-0000-0000-000000000000", INSPECTOR),
    ],
}


class Routes:
    def __init__(self, install: Install, out: Path):
        self.install = install
        self.app = install.app
        self.device = Device.of(install, "rt-inspector", out)
        grid = services(self.app).tiles().grid
        self.grid = grid
        with psycopg.connect(install.settings.database_url) as conn:
            self.tiles = {
                "own": self._tile(conn, 6, STREET_1, STREET_2),
                "other": self._tile(conn, 8, STREET_2, STREET_1),
                "own500": self._tile(conn, 8, STREET_1, STREET_2),
                "nowhere": self._outside(conn, 8),
            }

    def _tile(self, conn: psycopg.Connection, z: int, inside: str, away: str) -> tuple[int, ...]:
        """A tile of level z that meets street `inside` and not street `away`, found with
        PostGIS (independently of the street index the policy uses)."""
        x, y = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM street"
            " WHERE code = %s) s",
            (inside,),
        ).fetchone()
        tx, ty, _, _ = self.grid.locate(z, x, y)
        for dx, dy in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2)]:
            b = self.grid.tile_bbox(z, tx + dx, ty + dy)
            meets = conn.execute(
                "SELECT bool_or(code = %s), bool_or(code = %s) FROM street"
                " WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, %s))"
                " AND ST_Area(ST_Intersection(geom, ST_MakeEnvelope(%s, %s, %s, %s, %s))) > 0",
                (inside, away, *b, self.install.settings.srid, *b, self.install.settings.srid),
            ).fetchone()
            if meets[0] and not meets[1]:
                return (z, tx + dx, ty + dy)
        raise AssertionError(f"no level-{z} tile of street {inside} away from {away}")

    def _outside(self, conn: psycopg.Connection, z: int) -> tuple[int, ...]:
        """A served tile of the margin around the district, touching no street."""
        minx, maxy = conn.execute("SELECT ST_XMin(geom), ST_YMax(geom) FROM district").fetchone()
        tx, ty, _, _ = self.grid.locate(z, minx - 100, maxy + 100)
        return (z, tx, ty)

    def ask(self, who: str, method: str, path: str, **kw: Any):  # type: ignore[no-untyped-def]
        z, x, y = self.tiles["own"]
        url = path.format(z=z, x=x, y=y)
        if url.startswith("/device/") and who == "inspector":
            return self.device.client.open(url, method=method, **kw)
        return self.install.client(f"rt-{who}").open(url, method=method, **kw)


@pytest.fixture(scope="module")
def routes(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routes]:
    install = Install(
        demo_settings,
        tmp_path_factory.mktemp("routes-certs"),
        data_dir=tmp_path_factory.mktemp("routes-var"),
        rate_limit_api="*=100000/hour",
        rate_limit_tiles="*=100000/hour",
    )
    for role in ROLES:
        org = "street-001" if role in SCOPED else None
        install.account(f"rt-{role}", [role], org)
    install.account("rt-norole", [], "street-001")
    install.account("rt-other-inspector", ["inspector"], "street-002")
    yield Routes(install, tmp_path_factory.mktemp("routes-devices"))
    install.close()


def test_every_route_has_a_row(routes: Routes) -> None:
    rules = {rule.rule for rule in routes.app.url_map.iter_rules()}
    assert rules == set(MATRIX), (
        f"routes without a row: {rules - set(MATRIX)}; rows without a route: {set(MATRIX) - rules}"
    )


@pytest.mark.parametrize("rule", sorted(MATRIX))
def test_route_as_every_role(routes: Routes, rule: str) -> None:
    for method, path, allowed in [MATRIX[rule], *MORE_METHODS.get(rule, [])]:
        for role in (*ROLES, "norole"):
            reply = routes.ask(role, method, path, json={} if method == "POST" else None)
            assert reply.is_json or reply.status_code < 400, (rule, role, reply.status_code)
            if role in allowed:
                assert reply.status_code not in (401, 403), (rule, role, reply.get_json())
            else:
                assert reply.status_code == 403, (rule, method, role, reply.status_code)
                assert reply.get_json()["error"] == "forbidden"


def test_the_map_index_names_the_descriptors_each_role_may_ask_for(routes: Routes) -> None:
    """GET /tiles names exactly the maps whose descriptors the account may ask for (the
    pages ask for those only, so that a page load is not a run of refusals): names and
    nothing else."""
    from tiles.products import PRODUCTS

    for role in (*ROLES, "norole"):
        reply = routes.ask(role, "GET", "/tiles")
        if reply.status_code == 403:
            assert role not in MATRIX["/tiles"][2], role
            continue
        index = reply.get_json()
        assert set(index) == {"maps"} and set(index["maps"]) <= set(PRODUCTS), index
        for name in PRODUCTS:
            status = routes.ask(role, "GET", f"/tiles/{name}").status_code
            assert (status != 403) == (name in index["maps"]), (role, name, status)
    viewer = routes.ask("viewer", "GET", "/tiles").get_json()["maps"]
    assert "topo500" not in viewer and "cases" not in viewer and "topo2000" in viewer


def test_the_icon_is_where_a_browser_looks_for_it(routes: Routes) -> None:
    """A browser asks /favicon.ico after an answer that is not a page (a refusal, say): it
    gets the pages' icon, not a 404 to be logged after every such answer."""
    reply = routes.ask("viewer", "GET", "/favicon.ico")
    assert reply.status_code == 200 and reply.mimetype == "image/svg+xml"
    assert reply.get_data().startswith(b"<svg")


def test_policy_before_any_lookup(routes: Routes) -> None:
    """A viewer may not see 1:500: the same 403 for a tile that exists and one that does
    not, and for a map that does not exist."""
    z, x, y = routes.tiles["own500"]
    for path in (
        f"/tiles/topo500/{z}/{x}/{y}.png",
        "/tiles/topo500/8/0/0.png",
        "/tiles/topo500/99/0/0.png",
        "/tiles/nosuchmap/1/1/1.png",
        "/tiles/nosuchmap",
    ):
        reply = routes.ask("viewer", "GET", path)
        assert reply.status_code == 403, (path, reply.status_code)
    # An administrator, who may see 1:500, learns what exists.
    assert routes.ask("admin", "GET", "/tiles/topo500/8/0/0.png").status_code == 404
    assert routes.ask("admin", "GET", f"/tiles/topo500/{z}/{x}/{y}.png").status_code == 200


def test_street_scope_holds_on_pictures(routes: Routes) -> None:
    z, x, y = routes.tiles["other"]
    tile = f"/tiles/topo500/{z}/{x}/{y}.png"
    grids = f"/tiles/grids/{z}/{x}/{y}.png"
    identify = f"/map/identify?map=topo500&level={z}&x={x}&y={y}&col=128&row=128"
    for path in (tile, grids, identify):
        assert routes.ask("inspector", "GET", path).status_code == 403, path
        assert routes.ask("other-inspector", "GET", path).status_code == 200, path
        assert routes.ask("dispatcher", "GET", path).status_code == 200, path
    z, x, y = routes.tiles["own500"]
    assert routes.ask("inspector", "GET", f"/tiles/topo500/{z}/{x}/{y}.png").status_code == 200
    # Outside every street: nothing for the street-scoped, before any "not in a grid".
    z, x, y = routes.tiles["nowhere"]
    identify = f"/map/identify?map=topo500&level={z}&x={x}&y={y}&col=0&row=0"
    assert routes.ask("inspector", "GET", identify).status_code == 403
    nowhere = routes.ask("dispatcher", "GET", identify)
    assert nowhere.status_code == 200 and nowhere.get_json()["grid"] is None


def test_descriptors_list_what_the_asker_may_see(routes: Routes) -> None:
    full = routes.ask("dispatcher", "GET", "/tiles/grids").get_json()
    viewer = routes.ask("viewer", "GET", "/tiles/grids")
    assert viewer.status_code == 200  # allowed at the coarsest scale the viewer may see
    scales = {lv["scale_denominator"] for lv in viewer.get_json()["levels"]}
    assert scales and min(scales) == 2000
    assert routes.ask("viewer", "GET", "/tiles/components").status_code == 200
    own = {
        lv["level"]: lv["tiles"]
        for lv in routes.ask("inspector", "GET", "/tiles/grids").get_json()["levels"]
    }
    other = {
        lv["level"]: lv["tiles"]
        for lv in routes.ask("other-inspector", "GET", "/tiles/grids").get_json()["levels"]
    }
    for level in full["levels"]:
        z, t = level["level"], level["tiles"]
        assert own[z] != t and own[z] != other[z]  # each sees its own street's ranges
        for mine in (own[z], other[z]):
            assert t["x_min"] <= mine["x_min"] <= mine["x_max"] <= t["x_max"]
            assert t["y_min"] <= mine["y_min"] <= mine["y_max"] <= t["y_max"]


def test_unknown_paths_are_404_json_for_everyone(routes: Routes) -> None:
    for role in ("viewer", "security_officer", "norole"):
        reply = routes.ask(role, "GET", "/no/such/path")
        assert reply.status_code == 404 and reply.is_json


# Who asks each route in the hostile-input tests: a role it admits, the broadest first.
_ASKER_ORDER = ("admin", "security_officer", "leader", "partner", "screen", "dispatcher")


def _asker(allowed: frozenset[str]) -> str:
    return next((r for r in _ASKER_ORDER if r in allowed), min(allowed))


def _hostile_urls(rule: str, path: str) -> list[str]:
    """`path` with a NUL in a query value, a control character in a query name, and a NUL in
    each of the rule's text variables in turn (an `int:` variable never matches one)."""
    base, _, query = path.partition("?")
    join = "&" if query else "?"
    urls = [f"{path}{join}q=a%00b", f"{path}{join}x%01y=1"]
    rule_parts, parts = rule.split("/"), base.split("/")
    for i, part in enumerate(rule_parts):
        if part.startswith("<") and not part.startswith("<int:") and i < len(parts):
            suffix = part.partition(">")[2]  # `<code>.json`: the variable, then `.json`
            hostile = [*parts[:i], "a%00b" + suffix, *parts[i + 1 :]]
            urls.append("/".join(hostile) + (f"?{query}" if query else ""))
    return urls


@pytest.mark.parametrize("rule", sorted(MATRIX))
def test_control_characters_in_a_query_or_path_are_400_on_every_route(
    routes: Routes, rule: str
) -> None:
    """A NUL or other control character in a query parameter or a text of the path is refused
    with a JSON 400 before a view reads it (such a NUL reached PostgreSQL as a 500 on
    /cases, /cases/inbox, /maintenance/accounts, /exchange/messages and three routes' path
    variables), whatever the route and method, for a role the route admits."""
    for method, path, allowed in [MATRIX[rule], *MORE_METHODS.get(rule, [])]:
        if not allowed:
            continue  # a route for other systems only (test_exchange.py)
        role = _asker(allowed)
        for url in _hostile_urls(rule, path):
            reply = routes.ask(role, method, url, json={} if method == "POST" else None)
            assert reply.status_code == 400 and reply.is_json, (method, url, reply.status_code)
            assert reply.get_json()["error"] == "invalid", (method, url, reply.get_json())


# Bodies no client of CityGrid sends: broken or empty JSON, JSON of every other shape, signed-
# action envelopes whose parts are of the wrong type or not what they claim, and bytes that are
# not text at all; each with the JSON content type, and some with another.
_HOSTILE_BODIES: tuple[tuple[bytes, str], ...] = (
    *(
        (body, "application/json")
        for body in (
            b"",
            b"{",
            b"null",
            b"[]",
            b'"x"',
            b"-1e999",
            b'{"a": {"b": [1, {"c": null}]}}',
            b'{"payload": 1, "signature": [], "certificate": {}}',
            b'{"payload": "!!", "signature": "??", "certificate": "-----BEGIN CERTIFICATE-----"}',
            b'{"payload": "e30=", "signature": "AA==", "certificate": "x", "private": []}',
            b"\xff\xfe\x00{",
        )
    ),
    (b"a=1&b=2", "application/x-www-form-urlencoded"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b'{"a": 1}', "text/plain"),
)


@pytest.mark.parametrize("rule", sorted(MATRIX))
def test_hostile_bodies_are_refused_as_json_on_every_route(routes: Routes, rule: str) -> None:
    """Whatever body a route is sent, by a role it admits, the answer is never a 5xx, and a
    refusal is JSON naming its error (Open311's routes: GeoReport v2's list of errors): no
    traceback, no HTML error page."""
    for method, path, allowed in [MATRIX[rule], *MORE_METHODS.get(rule, [])]:
        if not allowed or method == "GET":
            continue
        role = _asker(allowed)
        for body, content_type in _HOSTILE_BODIES:
            reply = routes.ask(role, method, path, data=body, content_type=content_type)
            sent = (method, path, body[:40], content_type)
            assert reply.status_code < 500, (*sent, reply.status_code, reply.get_data()[:200])
            if reply.status_code >= 400:
                assert reply.is_json, (*sent, reply.status_code)
                said = reply.get_json()
                if path.startswith("/open311/"):  # GeoReport v2's errors: a list of them
                    assert said and all(e["code"] and e["description"] for e in said), sent
                else:
                    assert said["error"], (*sent, said)


def test_a_hostile_query_is_refused_and_audited(routes: Routes) -> None:
    """The refusal names the parameter and is audited as refused under the route's action; a
    page far past any list's end is a 400 too (it overflowed the database's offset: 500)."""
    reply = routes.ask("admin", "GET", "/maintenance/accounts?q=rt-%00")
    assert reply.status_code == 400
    assert reply.get_json()["message"] == "query parameter 'q' must not contain control characters"
    for path in ("/cases?page=99999999999999999999999", "/cases/inbox?page=1000001"):
        paged = routes.ask("leader", "GET", path)
        assert paged.status_code == 400 and paged.get_json()["error"] == "invalid", path
    assert routes.ask("leader", "GET", "/cases?page=1000000").status_code == 200
    sequenced(routes.install.settings.database_url)
    with psycopg.connect(routes.install.settings.database_url) as conn:
        found = conn.execute(
            "SELECT action, outcome, status, resource FROM audit_entry WHERE request_id = %s",
            (reply.headers["X-Request-Id"],),
        ).fetchone()
    assert found == ("account.admin", "refused", 400, "/maintenance/accounts")


def test_success_without_a_decision_is_500_and_audited(routes: Routes) -> None:
    app = routes.app
    sneaky = app.test_client()
    sneaky.environ_base.update(routes.install.client("rt-admin").environ_base)

    def answer_early() -> str | None:
        from flask import request

        return "answered before the gateway" if request.path == "/auth/whoami" else None

    app.before_request_funcs.setdefault(None, []).insert(0, answer_early)
    try:
        reply = sneaky.get("/auth/whoami")
    finally:
        app.before_request_funcs[None].remove(answer_early)
    assert reply.status_code == 500 and reply.get_json()["error"] == "policy_missing"
    sequenced(routes.install.settings.database_url)
    with psycopg.connect(routes.install.settings.database_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM audit_entry WHERE action = 'policy.missing' AND request_id = %s",
            (reply.headers["X-Request-Id"],),
        ).fetchone()[0]
    assert found == 1


def test_an_undeclared_route_refuses_to_start(
    demo_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mapserver import audit_views, create_app

    extra = Blueprint("audit", __name__, url_prefix="/audit")

    @extra.get("/forgotten")
    def forgotten() -> str:
        return "open to anyone"

    @extra.get("/declared")
    @requires("audit.read")
    def declared() -> str:
        return "fine"

    monkeypatch.setattr(audit_views, "bp", extra)
    install = Install(demo_settings, tmp_path, data_dir=tmp_path / "var")
    with pytest.raises(UndeclaredRoutes) as refused:
        create_app(install.settings)
    assert refused.value.routes == ["/audit/forgotten (audit.forgotten)"]


def test_declarations_cover_flask_made_endpoints() -> None:
    from flask import Flask

    app = Flask(__name__, static_folder=None)
    bp = Blueprint("files", __name__, static_folder="static", static_url_path="/files")
    app.register_blueprint(bp)
    declarations = Declarations()
    assert declarations.undeclared(app) == ["/files/<path:filename> (files.static)"]
    declarations.declare("files.static", "static.read")
    assert declarations.undeclared(app) == []


def test_host_names_and_headers_on_every_answer(routes: Routes) -> None:
    from auth.security_headers import SECURITY_HEADERS

    admin = routes.install.client("rt-admin")
    double = {"PATH_INFO": "//tiles/topo2000"}  # the test client would read "//x" as a host
    forged = admin.get("/", environ_overrides=double, headers={"Host": "evil.example"})
    assert forged.status_code == 400 and forged.is_json
    assert "Location" not in forged.headers
    slashes = admin.get("/", environ_overrides=double)
    assert slashes.status_code == 200 and "Location" not in slashes.headers  # no redirect
    replies = [
        forged,
        slashes,
        admin.get("/tiles/topo2000"),  # 200
        routes.install.client("rt-viewer").get("/audit/entries"),  # 403
        admin.get("/tiles/topo2000/a/b/c.png"),  # 400
        admin.delete("/auth/whoami"),  # 405
        admin.post("/admin/accounts", data=b"x" * (2 << 20), content_type="application/json"),
        routes.install.client(None).get("/auth/whoami"),  # 401
    ]
    for reply in replies:
        for name in (*SECURITY_HEADERS, "X-Request-Id"):
            assert name in reply.headers, (reply.status_code, name)
        assert "Server" not in reply.headers
    assert [r.status_code for r in replies[2:]] == [200, 403, 400, 405, 413, 401]


def test_every_route_is_rate_limited(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    install = Install(
        demo_settings,
        tmp_path_factory.mktemp("limit-certs"),
        data_dir=tmp_path_factory.mktemp("limit-var"),
        rate_limit_api="*=3/minute",
    )
    try:
        paths = [
            ("admin", "/map/identify?map=topo2000&level=6&x=0&y=0&col=0&row=0"),
            ("admin", "/no/such/path"),
            ("admin", "/manage"),
            ("security_officer", "/audit/entries"),
            ("security_officer", "/review"),
        ]
        for i, (role, path) in enumerate(paths):
            client = install.client(install.account(f"rl-{i}", [role]))  # a count of its own
            statuses = [client.get(path).status_code for _ in range(4)]
            assert statuses[:3] != [429] * 3 and statuses[3] == 429, (path, statuses)
        # The pages' own files are not counted (tests/test_page_navigation.py).
        client = install.client(install.account("rl-static", ["admin"]))
        assert {client.get("/static/viewer.js").status_code for _ in range(4)} == {200}
    finally:
        install.close()


def test_stalled_audit_shipments_answer_503_until_they_resume(routes: Routes) -> None:
    """Entries are durable in the worker's spool; while they cannot be shipped to the audit
    queue for longer than the spool's bound, requests are refused, not served unrecorded."""
    writer = services(routes.app).audit
    assert isinstance(writer, SpoolWriter)
    officer = routes.install.client("rt-security_officer")
    assert officer.get("/audit/checkpoints").status_code == 200
    bound, writer.max_lag = writer.max_lag, 0.3
    try:
        with psycopg.connect(routes.install.settings.database_url) as blocker:
            blocker.execute("SELECT * FROM audit_spool FOR UPDATE")  # shipments stall
            assert officer.get("/audit/checkpoints").status_code == 200  # spooled, answered
            deadline = time.monotonic() + 30
            while writer.lag() <= 0.3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            refused = officer.get("/audit/checkpoints")
            assert refused.status_code == 503 and refused.get_json()["error"] == "unavailable"
            blocker.rollback()
        assert writer.ship_now(timeout=30)
        assert officer.get("/audit/checkpoints").status_code == 200
    finally:
        writer.max_lag = bound


def test_database_outage_answers_503_json(routes: Routes) -> None:
    officer = routes.install.client("rt-security_officer")
    assert officer.get("/audit/checkpoints").status_code == 200
    with psycopg.connect(routes.install.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND usename = 'citygrid_app'"
        )
    statuses = []
    for _ in range(12):  # each broken pooled connection answers 503 once, then is replaced
        reply = officer.get("/audit/checkpoints")
        assert reply.status_code in (200, 503) and reply.is_json, reply.status_code
        if reply.status_code == 503:
            assert reply.get_json()["error"] in ("database_unavailable", "unavailable")
            assert "Traceback" not in reply.get_data(as_text=True)
            assert "Content-Security-Policy" in reply.headers and "X-Request-Id" in reply.headers
        statuses.append(reply.status_code)
        if statuses[-2:] == [200, 200] and 503 in statuses:
            break
    assert 503 in statuses and statuses[-1] == 200, statuses


def test_no_audit_entry_points_to_a_rolled_back_signed_action(routes: Routes) -> None:
    """A signed action that verifies but whose change is refused rolls back: its audit
    entry must not name a signed-action id that no longer exists."""
    install = routes.install
    envelope = install.envelope(
        "rt-admin",
        "account.add",
        "accounts",
        {"name": "rt-viewer", "roles": ["viewer"]},  # exists: refused after the signature
    )
    reply = install.client("rt-admin").post("/admin/accounts", json=envelope)
    assert reply.status_code == 409, reply.get_json()
    sequenced(install.settings.database_url)
    with psycopg.connect(install.settings.database_url) as conn:
        detail = conn.execute(
            "SELECT detail FROM audit_entry WHERE request_id = %s",
            (reply.headers["X-Request-Id"],),
        ).fetchone()[0]
        pointed = detail.get("signed_action")
        exists = (
            pointed is not None
            and conn.execute("SELECT 1 FROM signed_action WHERE id = %s", (pointed,)).fetchone()
        )
    assert pointed is None or exists, detail


def test_an_install_in_no_exchange_takes_no_peer_files(routes: Routes) -> None:
    """The peer's file routes answer as its bundle route does on an install that takes part
    in no exchange (503), and store nothing; before, a PUT stored the file."""
    import io

    from PIL import Image

    routes.install.account("rt-peer", ["exchange_peer"], None)
    peer = routes.install.client("rt-peer")
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(picture, "JPEG")
    sha = hashlib.sha256(picture.getvalue()).hexdigest()
    put = peer.put(f"/exchange/files/{sha}", data=picture.getvalue(), content_type="image/jpeg")
    asked = peer.get(f"/exchange/files/{sha}")
    bundle = peer.post("/exchange/receive", json={"source_id": "x"})
    for reply in (put, asked, bundle):
        assert reply.status_code == 503, reply.get_json()
        assert reply.get_json()["error"] == "exchange_not_configured"
    with psycopg.connect(routes.install.settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM exchange_file").fetchone() == (0,)
