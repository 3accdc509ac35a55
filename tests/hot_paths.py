"""Asking one app two ways, for tests of the cached tiles' own path (tiles.hot_path): through
its WSGI stack as served (that path first) and through the same stack without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.test import Client, TestResponse

from audit.record import Entry
from auth.security_headers import SecurityHeaders
from mapserver.services import services
from tiles.hot_path import HotPath

from .app_client import Install

UNCOMPARED_HEADERS = {"X-Request-Id", "Date"}
UNCOMPARED_FIELDS = {"request_id", "latency_ms"}


class Paths:
    """One app asked two ways: through its WSGI stack as served (the hot path first), and
    through the same stack without it (security headers → Flask). Entries the gateway records
    and the requests that reach Flask are kept, in order."""

    def __init__(self, install: Install, environ: Callable[[str], dict[str, Any]]):
        self.install = install
        self.app = install.app
        stack = self.app.wsgi_app
        assert isinstance(stack, SecurityHeaders) and isinstance(stack.app, HotPath)
        self.hot: HotPath = stack.app
        flask_app = self.hot.app
        self.reached_flask = 0

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            self.reached_flask += 1
            return flask_app(environ, start_response)

        self.hot.app = counted
        self.served = SecurityHeaders(self.hot)
        self.plain = SecurityHeaders(counted)
        self.environ = environ
        self.entries: list[Entry] = []
        gateway = services(self.app).gateway
        record = gateway.record

        def recorded(entry: Entry) -> object:
            self.entries.append(entry)
            return record(entry)

        gateway.record = recorded

    def ask(self, hot: bool, who: str | None, path: str, **kw: Any) -> tuple[TestResponse, Entry]:
        client = Client(self.served if hot else self.plain)
        before = len(self.entries)
        response = client.open(path, environ_base=self.environ(who), **kw)
        response.get_data()
        assert len(self.entries) == before + 1, "one audit entry per request"
        return response, self.entries[-1]


def same(a: tuple[TestResponse, Entry], b: tuple[TestResponse, Entry]) -> None:
    (ra, ea), (rb, eb) = a, b
    assert ra.status == rb.status
    assert ra.get_data() == rb.get_data()
    ha = [(k, v) for k, v in ra.headers.items() if k not in UNCOMPARED_HEADERS]
    hb = [(k, v) for k, v in rb.headers.items() if k not in UNCOMPARED_HEADERS]
    assert sorted(ha) == sorted(hb)
    da, db = ea._asdict(), eb._asdict()
    for name in UNCOMPARED_FIELDS:
        da.pop(name), db.pop(name)
    assert da == db
    assert (
        ra.headers["X-Request-Id"] == ea.request_id != eb.request_id == rb.headers["X-Request-Id"]
    )
