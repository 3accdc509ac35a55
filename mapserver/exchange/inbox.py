"""Bundles from the peer: checked (mapserver.exchange.bundle), then taken in order, exactly
once, in one transaction with what they change here.

A forwarded case becomes a case of this district (source city_platform, waiting in
`reported` for an operator's signed acceptance, like any submission by a machine) or, on
the city platform, a message its command centre answers. A result is linked to the case we
forwarded. Component updates refresh the city's copy of the district's components.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from psycopg.types.json import Jsonb

from audit.keys import verifier
from mapserver.cases import store
from mapserver.cases.place import Place
from mapserver.errors import CityGridError, Conflict, InvalidInput, NotFound
from mapserver.exchange import bundle, files, outbox, shape
from mapserver.settings import Settings

MAX_REASON = 2000  # a withdrawal's reason, as the sender's route takes it


class Replayed(Conflict):
    """A bundle already taken in: never applied twice; the sender may count it as acknowledged."""

    code = "replayed"

    def __init__(self, message: str, source_id: str, seq: int, kind: str | None = None):
        super().__init__(message)
        self.source_id = source_id
        self.seq = seq
        self.kind = kind  # of the message taken in under that source id, when known

    @property
    def details(self) -> dict[str, object]:
        found: dict[str, object] = {"source_id": self.source_id, "seq": self.seq}
        return found if self.kind is None else {**found, "kind": self.kind}


class OutOfOrder(Conflict):
    code = "out_of_order"

    def __init__(self, expected: int, got: int):
        super().__init__(f"expected seq {expected}, got {got}: send the messages before it first")
        self.expected = expected

    @property
    def details(self) -> dict[str, object]:
        return {"expected": self.expected}


class NotConfigured(CityGridError):
    status = 503
    code = "exchange_not_configured"


def trust(settings: Settings) -> bundle.PeerTrust:
    """The peer's CA and log key, pinned in this install's settings."""
    try:
        ca = x509.load_pem_x509_certificate(Path(settings.exchange_peer_ca).read_bytes())
        key = verifier(settings.pki_dir, Path(settings.exchange_peer_log_key))
    except (OSError, ValueError):
        raise NotConfigured(
            "exchange_peer_ca and exchange_peer_log_key must name the peer's CA certificate "
            "and audit log key"
        ) from None
    return bundle.PeerTrust(ca, key)


def require_configured(settings: Settings) -> None:
    """503 unless this install takes part in an exchange: its own side and the peer's trust
    are set (the peer's files are not taken by an install that would refuse its bundles)."""
    try:
        outbox.me(settings)
    except InvalidInput as exc:
        raise NotConfigured(exc.message) from None
    trust(settings)


def receive(
    conn: psycopg.Connection,
    settings: Settings,
    locate: Callable[[Any], Place],
    calendar: store.Calendar,
    *,
    doc: Any,
    sha256: str,
    peer_account: str,
) -> dict[str, Any]:
    """Take in one bundle (the caller's transaction); returns the acknowledgement.
    `locate` places a forwarded case where the map is (tiles.source.Tiles.place), asked only
    when a bundle forwards one."""
    try:
        me = outbox.me(settings)
    except InvalidInput as exc:
        raise NotConfigured(exc.message) from None
    message = bundle.verify(doc, trust(settings), me, outbox.peer(settings))
    last = conn.execute("SELECT last_seq FROM exchange_peer_state FOR UPDATE").fetchone()
    assert last is not None, "migration 0028 made the state row"
    known = conn.execute(
        "SELECT seq, received_at, kind FROM exchange_inbox WHERE source_id = %s",
        (message.source_id,),
    ).fetchone()
    if known is not None:
        raise Replayed(
            f"bundle {message.source_id} was received at {known[1].isoformat()}: not applied again",
            message.source_id,
            int(known[0]),
            str(known[2]),
        )
    if message.seq <= last[0]:
        raise Replayed(
            f"seq {message.seq} was taken in already (last {last[0]}): not applied again",
            message.source_id,
            message.seq,
        )
    if message.seq != last[0] + 1:
        raise OutOfOrder(last[0] + 1, message.seq)
    shape.check(message.kind, message.content)
    carried = _carried(message)
    files.require(conn, carried)
    case_number, in_reply_to = _apply(conn, settings, locate, calendar, message, peer_account)
    conn.execute(
        """INSERT INTO exchange_inbox (source_id, seq, kind, content, bundle, bundle_sha256,
               signer, case_number, in_reply_to) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            message.source_id,
            message.seq,
            message.kind,
            Jsonb(message.content),
            Jsonb(doc),
            sha256,
            message.actions[-1].account,
            case_number,
            in_reply_to,
        ),
    )
    if message.kind == "component.update":
        _components(conn, message)
    if carried and message.kind == "case.forward" and message.to == "district" and case_number:
        files.adopt(
            conn, account=peer_account, source_id=message.source_id, number=case_number,
            items=carried,
        )  # fmt: skip
    conn.execute("UPDATE exchange_peer_state SET last_seq = %s", (message.seq,))
    return {
        "received": message.source_id,
        "seq": message.seq,
        "kind": message.kind,
        "case": case_number,
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _carried(message: bundle.Message) -> list[dict[str, Any]]:
    """The files the message lists. Where the act that made it chose them (a case the city
    forwards, a result), its signer named each one: the signature covers them as the log
    covers the content."""
    if message.kind == outbox.WITHDRAWN:
        return []  # its content is checked as a withdrawal's (_withdrawal)
    carried = files.listed(message.content)
    if not carried:
        return carried
    if message.kind not in ("case.forward", "case.result"):
        raise bundle.BundleRefused(f"a {message.kind} message carries no files")
    if message.kind == "case.result" or message.to == "district":
        signed = message.actions[-1].parameters.get("attachments")
        if signed != [item["sha256"] for item in carried]:
            raise bundle.BundleRefused("the files are not the ones the signed act names")
    return carried


def _apply(
    conn: psycopg.Connection,
    settings: Settings,
    locate: Callable[[Any], Place],
    calendar: store.Calendar,
    message: bundle.Message,
    peer_account: str,
) -> tuple[str | None, str | None]:
    content = message.content
    if message.kind == outbox.WITHDRAWN:
        _withdrawal(content)
        return None, None
    if message.kind == "component.update" and message.to != "city":
        raise bundle.BundleRefused("component updates go to the city platform only")
    if message.kind == "case.result":
        replied = content.get("in_reply_to")
        if not isinstance(replied, str):
            raise bundle.BundleRefused("a result names the source id it answers (in_reply_to)")
        row = conn.execute(
            "SELECT case_number FROM exchange_outbox"
            " WHERE source_id = %s AND kind = 'case.forward'",
            (replied,),
        ).fetchone()
        if row is None:
            raise bundle.BundleRefused(f"the result answers {replied[:200]!r}, which we never sent")
        if not isinstance(content.get("result"), str) or not content["result"].strip():
            raise bundle.BundleRefused("a result holds the result text")
        return row[0], replied
    if message.kind != "case.forward":
        return None, None
    case = content.get("case")
    if not isinstance(case, dict):
        raise bundle.BundleRefused("a forwarded case holds `case`")
    if message.to != "district":  # the city platform's command centre answers it
        return None, None
    params = {
        k: case[k] for k in ("kind", "major", "minor", "component", "description") if k in case
    }
    if "grid" in case:
        params["place"] = {"grid": case["grid"]}
    params["source"] = "city_platform"
    params["exchange"] = {"source_id": message.source_id, "signer": message.actions[-1].account}
    try:
        number = store.create(
            conn, settings, None, calendar, account=peer_account, params=params,
            signed_action=None, resolved=locate(store.place_spec(params)),
            system_fields=frozenset({"exchange"}),
        )  # fmt: skip
    except (InvalidInput, NotFound) as exc:
        raise bundle.BundleRefused(
            f"the forwarded case cannot be recorded: {exc.message}"
        ) from None
    return number, None


def _withdrawal(content: dict[str, Any]) -> None:
    """A withdrawal names the kind withdrawn, why, and the withdrawn content's hash."""
    withdrawn, reason, sha = (
        content.get("withdrawn"),
        content.get("reason"),
        content.get("content_sha256"),
    )
    if set(content) != {"withdrawn", "reason", "content_sha256"}:
        raise bundle.BundleRefused("a withdrawal holds withdrawn, reason and content_sha256")
    if not isinstance(withdrawn, str) or not 0 < len(withdrawn) <= 100:
        raise bundle.BundleRefused("a withdrawal names the kind it withdraws")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise bundle.BundleRefused(f"a withdrawal holds its reason (1 to {MAX_REASON} characters)")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise bundle.BundleRefused("a withdrawal names the withdrawn content's SHA-256 (64 hex)")


def _components(conn: psycopg.Connection, message: bundle.Message) -> None:
    items = message.content.get("components")
    if not isinstance(items, list):
        raise bundle.BundleRefused("component updates hold `components`")
    for item in items:
        code = item.get("code") if isinstance(item, dict) else None
        if not isinstance(code, str) or not re.fullmatch(r"[0-9]{16,17}", code):
            raise bundle.BundleRefused("each component update names its code")
        version = item.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31:
            raise bundle.BundleRefused("each component update has its version")
        conn.execute(
            """INSERT INTO exchange_component (code, content, version, source_id)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (code) DO UPDATE SET content = EXCLUDED.content,
                   version = EXCLUDED.version, source_id = EXCLUDED.source_id,
                   received_at = now()
               WHERE exchange_component.version < EXCLUDED.version""",
            (code, Jsonb(item), version, message.source_id),
        )
