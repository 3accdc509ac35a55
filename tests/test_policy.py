"""The role policy table: one place, failing closed, separation of duties."""

from __future__ import annotations

import pytest

from auth.policy import POLICY, Forbidden, Request, Rule, check, street_scoped

TILE_500 = Request("tiles.read", "topo500", 500)
TILE_2000 = Request("tiles.read", "topo2000", 2000)


def test_every_role_has_a_rule() -> None:
    from auth.accounts import ROLES

    assert set(POLICY) == set(ROLES)


def test_viewer_sees_overview_maps_only() -> None:
    check(["viewer"], TILE_2000)
    with pytest.raises(Forbidden):
        check(["viewer"], TILE_500)
    with pytest.raises(Forbidden):
        check(["viewer"], Request("tiles.read", "topo2000", 500))


def test_street_scope() -> None:
    own = Request("map.identify", streets=frozenset({"110108001"}))
    both = Request("map.identify", streets=frozenset({"110108001", "110108002"}))
    other = Request("map.identify", streets=frozenset({"110108002"}))
    nowhere = Request("map.identify", streets=frozenset())
    check(["viewer"], own, own_streets=["110108001"])
    check(["viewer"], both, own_streets=["110108001"])  # a tile that meets one's street
    for req in (other, nowhere):
        with pytest.raises(Forbidden):
            check(["viewer"], req, own_streets=["110108001"])
    check(["dispatcher"], other, own_streets=[])
    check(["dispatcher"], nowhere, own_streets=[])
    assert street_scoped(["viewer"]) and not street_scoped(["viewer", "dispatcher"])


def test_separation_of_duties() -> None:
    check(["security_officer"], Request("audit.read"))
    with pytest.raises(Forbidden):
        check(["security_officer"], Request("account.admin"))
    with pytest.raises(Forbidden):
        check(["security_officer"], TILE_2000)
    check(["admin"], Request("account.admin"))
    with pytest.raises(Forbidden):
        check(["admin"], Request("audit.read"))


def test_fails_closed() -> None:
    for roles in ([], ["emperor"], ["viewer"]):
        with pytest.raises(Forbidden):
            check(roles, Request("audit.read"))
    with pytest.raises(Forbidden):
        check(["viewer"], Request("tiles.read", "topo2000", None))
    with pytest.raises(Forbidden):
        check(["viewer"], Request("tiles.read", "secret-layer", 2000))
    with pytest.raises(Forbidden):
        check(["x"], TILE_2000, policy={"x": Rule()})
    with pytest.raises(Forbidden):
        check(["x"], Request("whoami"), policy={})
