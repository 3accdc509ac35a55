"""The city–district exchange with the district deployed in two zones: the city platform (one
install of its own) forwards a case to the district's gateway, which places it by its unit
grid through the renderer and keeps codes, names and a pixel, no point."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from audit.keys import PUBLIC_FILE
from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db

from .conftest import empty_database
from .test_exchange import Side, _exchange, _ready, _side
from .tls import Server, free_port
from .zones import SECRET, Zones, two_zones


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Zones, Side]]:
    c_port = free_port()
    city = _side(
        "市级", empty_database("citygrid_xzc", tmp_path_factory.mktemp("xzc-var")),
        tmp_path_factory.mktemp("xzc-certs"), c_port,
    )  # fmt: skip
    city.people(("c-dispatcher", "dispatcher", None), ("district-peer", "exchange_peer", None))
    # The district's gateway points at the city: its URL, CA and log key, and the client
    # certificate the city's CA issued to the district.
    district_exchange = {
        "CITYGRID_EXCHANGE_ROLE": "district",
        "CITYGRID_EXCHANGE_PEER_URL": f"https://127.0.0.1:{c_port}",
        "CITYGRID_EXCHANGE_PEER_CA": str(city.store.cert_path),
        "CITYGRID_EXCHANGE_PEER_LOG_KEY": str(city.settings.pki_dir / PUBLIC_FILE),
        "CITYGRID_EXCHANGE_CLIENT_CERT": str(city.out / "district-peer.crt"),
        "CITYGRID_EXCHANGE_CLIENT_KEY": str(city.out / "district-peer.key"),
    }
    with two_zones(tmp_path_factory.mktemp("xz"), gateway_env=district_exchange) as z:
        out = tmp_path_factory.mktemp("xzd-certs")
        with db.transaction(z.gateway_db) as conn:
            accounts.add(conn, "city-peer", ["exchange_peer"], None)
            certs.issue(conn, CaStore(z.gateway_db.pki_dir), SECRET, "city-peer",
                        pki.Kind.PERSON, out)  # fmt: skip
        district = Side("区级", z.gateway_db, out, {})
        _exchange(city, "city", district, z.gateway_port, "city-peer")
        city.server = Server(city.env, port=c_port)
        try:
            city.server.wait_ready()
            yield z, city
        finally:
            city.server.stop()
            db.drop_database(city.settings)


def test_a_forwarded_case_is_placed_through_the_renderer(world: tuple[Zones, Side]) -> None:
    z, city = world
    with db.connect(z.map_db) as conn:
        grid, community, street = conn.execute(
            "SELECT g.code, g.community_code, c.street_code FROM unit_grid g"
            " JOIN community c ON c.code = g.community_code ORDER BY g.code LIMIT 1"
        ).fetchone()  # type: ignore[misc]
    reply = city.signed(
        "c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
        {"kind": "event", "major": "01", "minor": "02", "description": "市民热线：道路积水",
         "grid": grid},
    )  # fmt: skip
    assert reply.status == 201, reply.json()
    source_id = reply.json()["exchange"]["source_id"]
    _ready(city, reply.json()["exchange"]["seq"])
    assert [s.outcome for s in city.send()] == ["acknowledged"]
    with db.connect(z.gateway_db) as conn:
        kept = conn.execute(
            "SELECT c.state, c.source, c.reporter, c.grid_code, c.community_code,"
            " c.street_code, c.geom IS NULL, c.pixel_x IS NOT NULL"
            " FROM exchange_inbox i JOIN city_case c ON c.number = i.case_number"
            " WHERE i.source_id = %s",
            (source_id,),
        ).fetchall()
    assert kept == [("reported", "city_platform", "city-peer", grid, community, street, True, True)]


def test_a_component_changed_inside_reaches_the_city(
    world: tuple[Zones, Side], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A bureau of the district edits a component through its gateway; the renderer applies
    it in the map database and answers its fields, which the gateway queues for the city:
    the city's copy has the new state and no point."""
    import dataclasses
    from types import SimpleNamespace

    z, city = world
    with db.connect(z.map_db) as conn:
        org, name = conn.execute(
            """SELECT o.code, o.name FROM organisation o JOIN component c ON c.owner_dept = o.name
               WHERE o.kind = 'bureau' GROUP BY 1, 2 ORDER BY count(*) DESC, 1 LIMIT 1"""
        ).fetchone()  # type: ignore[misc]
    out = tmp_path_factory.mktemp("xzd-bureau")
    store = CaStore(z.gateway_db.pki_dir)
    with db.transaction(z.gateway_db) as conn:
        conn.execute(
            "INSERT INTO organisation (code, name, kind) VALUES (%s, %s, 'bureau')", (org, name)
        )
        accounts.add(conn, "xz-bureau", ["bureau_handler"], org)
        for kind in (pki.Kind.PERSON, pki.Kind.SIGNING):
            certs.issue(conn, store, SECRET, "xz-bureau", kind, out)
    # The district as its gateway is configured (two_zones' gateway_env), to send its outbox.
    values = {
        "exchange_role": "district",
        "exchange_peer_url": f"https://127.0.0.1:{city.server.port}",  # type: ignore[union-attr]
        "exchange_peer_ca": str(city.store.cert_path),
        "exchange_peer_log_key": str(city.settings.pki_dir / PUBLIC_FILE),
        "exchange_client_cert": str(city.out / "district-peer.crt"),
        "exchange_client_key": str(city.out / "district-peer.key"),
    }
    district = Side("区级", dataclasses.replace(z.gateway_db, **values), out, {})
    district.server = SimpleNamespace(port=z.gateway_port)  # type: ignore[assignment]  # asks need only its port
    component = district.ask("xz-bureau", "GET", "/components").json()["components"][0]
    edited = district.signed(
        "xz-bureau", f"/components/{component['code']}/edit", "component.edit",
        f"component {component['code']}",
        {"version": component["version"], "set": {"state": "damaged"}},
    )  # fmt: skip
    assert edited.status == 200, edited.body
    _ready(district, district.sql("SELECT max(seq) FROM exchange_outbox")[0][0])
    assert [s.outcome for s in district.send()] == ["acknowledged"]
    copied = city.sql(
        "SELECT version, content FROM exchange_component WHERE code = %s", component["code"]
    )
    assert copied[0][0] == component["version"] + 1 and copied[0][1]["state"] == "damaged"
    assert not {"x", "y", "geom", "point"} & set(copied[0][1])
