"""Components kept in the secure zone's map database, asked of the renderer service
(tiles.renderer_components answers): the gateway of two zones has no map database.

Each request carries the gateway's grant for the asker (the `components` map at the finest
level) and what only the gateway knows: the asker's departments and home organisation, from
its accounts. A change carries the person's signed envelope as they sent it, with the number
the gateway stored it under: the renderer checks the signature again against CityGrid's CA
and its CRL, its signer against the grant's account, its action and resource against the
change, and keeps its own copy under that number. The renderer commits first; the gateway's
transaction (its copy of the signed action, the city's outbox, the audit entry) after it.
What comes back is codes, names, states and pixels: never a point.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import psycopg

from mapserver import class_text
from mapserver.components import store
from mapserver.components.kept import Done, Signed
from tiles.remote import RemoteTiles

COMPONENTS = "components"


class RemoteComponents:
    def __init__(self, remote: RemoteTiles):
        self.remote = remote

    def _post(
        self, path: str, doc: Mapping[str, Any] | None = None, body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        sent = body if body is not None else json.dumps(doc or {}).encode()
        return json.loads(self.remote.post(path, [COMPONENTS], sent, headers))

    @staticmethod
    def _own(own: frozenset[str]) -> list[str]:
        return sorted(own)

    @staticmethod
    def _named(conn: psycopg.Connection, shown: list[dict[str, Any]], locale: str) -> None:
        """Class names as this install keeps them: administrators edit a class's texts at the
        gateway (mapserver.maintenance), so its names, not the map database's, are shown."""
        classes = [c["class"] for c in shown if isinstance(c.get("class"), dict)]
        if not classes:
            return
        names = dict(
            ((major, minor), name)
            for major, minor, name in conn.execute(
                f"SELECT major, minor, name FROM {class_text.relation(locale)}"  # noqa: S608 - a locale code
                " WHERE kind = 'component'"
            ).fetchall()
        )
        for kind in classes:
            kind["name"] = names.get((kind.get("major"), kind.get("minor")), kind.get("name"))

    def listing(
        self, conn: psycopg.Connection, own: frozenset[str], args: Mapping[str, str], locale: str
    ) -> dict[str, Any]:
        asked = {"own": self._own(own), "args": dict(args), "locale": locale}
        found: dict[str, Any] = self._post("/components/list", asked)
        self._named(conn, found["components"], locale)
        return found

    def detail(
        self, conn: psycopg.Connection, code: str, own: frozenset[str], locale: str
    ) -> dict[str, Any]:
        found: dict[str, Any] = self._post(
            "/components/detail", {"own": self._own(own), "code": code, "locale": locale}
        )
        self._named(conn, [found], locale)
        return found

    def as_of(
        self, conn: psycopg.Connection, code: str, own: frozenset[str], when: dt.datetime
    ) -> dict[str, Any]:
        asked = {"own": self._own(own), "code": code, "as_of": when.isoformat()}
        found: dict[str, Any] = self._post("/components/detail", asked)
        return found

    def _done(self, conn: psycopg.Connection, path: str, signed: Signed, **asked: Any) -> Done:
        doc = self._post(
            path, {**asked, "action_id": signed.action_id, "envelope": signed.envelope}
        )
        if "locale" in asked:
            self._named(conn, [doc["shown"]], asked["locale"])
        return Done(doc["shown"], list(doc["codes"]), list(doc["items"]), [])

    def add(
        self, conn: psycopg.Connection, signed: Signed, params: Mapping[str, Any],
        own: frozenset[str], home: str, locale: str,
    ) -> Done:  # fmt: skip
        return self._done(
            conn, "/components/add", signed, own=self._own(own), home=home, locale=locale
        )

    def change(
        self, conn: psycopg.Connection, signed: Signed, code: str, op: str,
        params: Mapping[str, Any], own: frozenset[str], locale: str,
    ) -> Done:  # fmt: skip
        return self._done(
            conn, "/components/change", signed, own=self._own(own), code=code, op=op, locale=locale
        )

    def check_import(
        self, conn: psycopg.Connection, account: str, import_id: str, data: bytes, fmt: str,
        filename: str, own: frozenset[str],
    ) -> dict[str, Any]:  # fmt: skip
        query = urlencode({"id": import_id, "format": fmt, "filename": filename})
        own_header = json.dumps(self._own(own))  # ASCII: names escaped
        found: dict[str, Any] = self._post(
            f"/components/imports?{query}", body=data,
            headers={
                "X-CityGrid-Departments": own_header,
                "Content-Type": "application/octet-stream",
            },
        )  # fmt: skip
        return found

    def load_import(self, conn: psycopg.Connection, import_id: str, account: str) -> dict[str, Any]:
        found: dict[str, Any] = self._post("/components/imports/show", {"id": import_id})
        return found

    def apply_import(
        self, conn: psycopg.Connection, signed: Signed, import_id: str, own: frozenset[str],
        home: str,
    ) -> Done:  # fmt: skip
        return self._done(
            conn, "/components/imports/apply", signed, own=self._own(own), home=home, id=import_id
        )

    def expire(self, points: Iterable[store.Point]) -> int:
        """Nothing here: the renderer dropped the tiles in its zone once it committed."""
        return 0
