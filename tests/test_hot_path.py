"""Cached tiles answered before Flask (tiles.hot_path) answer and audit exactly as the Flask
path does, and what that path does not take reaches Flask untouched and counted once."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from werkzeug.test import Client

from auth.gateway import BEHIND_NGINX_ENV
from mapserver import rate_limits
from mapserver.services import services
from mapserver.settings import Settings

from .app_client import Install, PeerSocket
from .hot_paths import UNCOMPARED_HEADERS, Paths, same


def _install(demo_settings: Settings, factory: pytest.TempPathFactory, tag: str) -> Install:
    """An install on the demo district whose accounts TAG-hot-admin and TAG-hot-screen (the
    wall display: 1:2000 maps only, 5 tiles a minute) are asked for as hot-admin, hot-screen."""
    install = Install(
        demo_settings,
        factory.mktemp("hot-certs"),
        data_dir=factory.mktemp("hot-var"),
        rate_limit_tiles="screen=5/minute,*=1200/minute",
    )
    for who, role in (("hot-admin", "admin"), ("hot-screen", "screen")):
        install.account(f"{tag}-{who}", [role])
        install.der[who] = install.der[f"{tag}-{who}"]
    return install


@pytest.fixture(scope="module")
def direct(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    """The app as gunicorn's TLS serves it: the verified certificate on the socket."""
    install = _install(demo_settings, tmp_path_factory, "direct")
    yield Paths(install, _direct_environ(install))
    install.close()


def _direct_environ(install: Install) -> Callable[[str | None], dict[str, Any]]:
    """The environ gunicorn's TLS worker gives the app for a client (None: no certificate)."""

    def environ(who: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {"REMOTE_ADDR": "192.0.2.7"}
        if who is not None:
            found["gunicorn.socket"] = PeerSocket(install.der[who])
        return found

    return environ


@pytest.fixture(scope="module")
def behind_nginx(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Paths]:
    """The app as `citygrid serve --behind-nginx` serves it: nginx's headers on its socket."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(BEHIND_NGINX_ENV, "1")
        install = _install(demo_settings, tmp_path_factory, "nginx")
        install.app  # noqa: B018 - built while the environment says nginx is in front
    channel, other = socket.socketpair(socket.AF_UNIX)

    def environ(who: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {
            "gunicorn.socket": channel,
            "REMOTE_ADDR": "",
            "HTTP_X_REAL_IP": "198.51.100.4",
        }
        if who is None:
            found["HTTP_X_SSL_CLIENT_VERIFY"] = "NONE"
        else:
            cert = x509.load_der_x509_certificate(install.der[who])
            pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            found["HTTP_X_SSL_CLIENT_VERIFY"] = "SUCCESS"
            found["HTTP_X_SSL_CLIENT_CERT"] = quote(pem)
        return found

    yield Paths(install, environ)
    install.close()
    channel.close()
    other.close()


def _tile(paths: Paths, product: str = "topo500") -> str:
    client = Client(paths.plain)
    desc = client.get(f"/tiles/{product}", environ_base=paths.environ("hot-admin")).get_json()
    level = desc["levels"][-1]
    t = level["tiles"]
    return f"/tiles/{product}/{level['level']}/{(t['x_min'] + t['x_max']) // 2}/{t['y_min']}.png"


@pytest.mark.parametrize("shape", ["direct", "behind_nginx"])
def test_a_cached_tile_is_answered_and_audited_as_flask_answers_it(
    shape: str, request: pytest.FixtureRequest
) -> None:
    paths: Paths = request.getfixturevalue(shape)
    tile = _tile(paths)
    paths.ask(False, "hot-admin", tile)  # rendered and cached
    reached = paths.reached_flask
    hot = paths.ask(True, "hot-admin", tile)
    assert paths.reached_flask == reached, "a cached tile is answered before Flask"
    assert hot[0].status_code == 200 and hot[1].outcome == "ok" and hot[1].bytes > 0
    if shape == "behind_nginx":
        assert hot[0].headers["X-Accel-Redirect"].endswith(tile.removeprefix("/tiles/"))
        assert hot[1].client_addr == "198.51.100.4"
    else:
        assert hot[0].get_data()[:8] == b"\x89PNG\r\n\x1a\n"
    same(hot, paths.ask(False, "hot-admin", tile))

    etag = hot[0].headers["ETag"]
    for held in (etag, f"W/{etag}", f'"other", {etag}', "*", '"other"'):
        asked = {"headers": {"If-None-Match": held}}
        hot = paths.ask(True, "hot-admin", tile, **asked)
        same(hot, paths.ask(False, "hot-admin", tile, **asked))
    assert paths.reached_flask == reached + 6, "only the Flask path's own requests reached it"


@pytest.mark.parametrize("shape", ["direct", "behind_nginx"])
def test_what_the_hot_path_does_not_take_reaches_flask_and_is_answered_alike(
    shape: str, request: pytest.FixtureRequest
) -> None:
    paths: Paths = request.getfixturevalue(shape)
    tile = _tile(paths)
    level = tile.split("/")[3]
    asked: list[tuple[str | None, str, dict[str, Any]]] = [
        (None, tile, {}),  # no certificate
        ("hot-screen", tile, {}),  # a scale the role may not see: refused by the policy
        ("hot-admin", "/tiles/nosuchmap/1/1/1.png", {}),
        ("hot-admin", f"/tiles/topo500/{level}/0/0.png", {}),  # outside the district
        ("hot-admin", "/tiles/topo500/99/0/0.png", {}),
        ("hot-admin", tile, {"method": "HEAD"}),
        ("hot-admin", tile, {"method": "POST"}),
        ("hot-admin", tile, {"query_string": "v=2"}),
        ("hot-admin", tile, {"headers": {"Authorization": "Basic eA=="}}),
        ("hot-admin", tile, {"headers": {"Host": "elsewhere.example"}}),
        ("hot-admin", tile, {"headers": {"Host": "bad host"}}),
        ("hot-admin", tile, {"data": b"x" * 10}),
        ("hot-admin", tile.replace(".png", ".jpg"), {}),
    ]
    for who, path, kw in asked:
        reached = paths.reached_flask
        hot = paths.ask(True, who, path, **kw)
        assert paths.reached_flask == reached + 1, (who, path, kw)
        same(hot, paths.ask(False, who, path, **kw))


def test_each_request_is_counted_once_and_a_refused_one_not_at_all(direct: Paths) -> None:
    """The screen role may ask 5 tiles a minute: a request refused by the policy after the
    hot path counted it is not counted again by Flask, the sixth is refused (429, audited as
    Flask audits it), and the refused ones are not counted."""
    client = redis.Redis.from_url(Settings().redis_url)
    who = "hot-screen"
    overview = _tile(direct, "topo2000")  # a scale the screen may see
    fine = _tile(direct)  # one it may not
    sha = hashlib.sha256(direct.install.der[who]).hexdigest()
    pattern = f"{rate_limits.PREFIX}:cert:{sha}:tiles:5/60:*"
    for key in client.scan_iter(pattern):
        client.delete(key)
    answers = [direct.ask(True, who, fine)[0].status_code]  # counted, then refused
    answers += [direct.ask(True, who, overview)[0].status_code for _ in range(4)]
    assert answers == [403, 200, 200, 200, 200]
    counted = sum(int(client.get(k) or 0) for k in client.scan_iter(pattern))
    assert counted == 5
    refused, entry = direct.ask(True, who, overview)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert entry.action == "rate_limit" and entry.outcome == "refused"
    assert sum(int(client.get(k) or 0) for k in client.scan_iter(pattern)) == 5
    client.close()


def test_an_entry_that_cannot_be_recorded_refuses_the_answer_as_flask_does(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    install = _install(demo_settings, tmp_path_factory, "unrecorded")
    environ = _direct_environ(install)
    paths = Paths(install, environ)
    tile = _tile(paths)
    paths.ask(False, "hot-admin", tile)
    services(install.app).audit.close()  # the writer takes no more entries
    hot = Client(paths.served).get(tile, environ_base=environ("hot-admin"))
    plain = Client(paths.plain).get(tile, environ_base=environ("hot-admin"))
    assert hot.status_code == plain.status_code == 503
    assert hot.get_data() == plain.get_data()
    assert hot.get_json() == {"error": "unavailable", "message": "audit log unavailable; try later"}
    assert sorted(kv for kv in hot.headers.items() if kv[0] not in UNCOMPARED_HEADERS) == sorted(
        kv for kv in plain.headers.items() if kv[0] not in UNCOMPARED_HEADERS
    )
    install.close()


def test_the_path_is_refused_where_the_app_routes_its_urls_elsewhere() -> None:
    """The hot path takes /tiles/MAP/LEVEL/X/Y.png only while the app routes it, with GET, to
    the tile view: built over an app that does not, it refuses."""
    from flask import Flask

    from auth.access import Declarations
    from tiles import hot_path

    elsewhere = Flask("elsewhere")
    elsewhere.add_url_rule("/tiles/<name>/<z>/<x>/<y>", "tiles.other", lambda **kw: "")
    moved = Flask("moved")
    moved.add_url_rule("/tiles/<name>/<int:z>/<x>/<y>", "tiles.tile", lambda **kw: "")
    for app in (Flask("none"), elsewhere, moved):
        with pytest.raises(hot_path.NotTheTileRoute):
            hot_path.for_app(app, None, None, Declarations(), None)  # type: ignore[arg-type]


def test_accounts_out_of_reach_are_answered_by_flask_alike(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The account look-up fails (its pool closed, before any identity is remembered): the
    hot path has done nothing yet and hands the request to Flask, which answers it."""
    install = _install(demo_settings, tmp_path_factory, "unreached")
    environ = _direct_environ(install)
    paths = Paths(install, environ)
    services(install.app).pool.close()
    path = "/tiles/topo500/8/1/1.png"
    hot = Client(paths.served).get(path, environ_base=environ("hot-admin"))
    assert paths.reached_flask == 1
    plain = Client(paths.plain).get(path, environ_base=environ("hot-admin"))
    assert hot.status_code == plain.status_code == 503
    assert hot.get_json() == plain.get_json()
    install.close()
