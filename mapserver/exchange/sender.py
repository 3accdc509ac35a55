"""Sending the outbox to the peer over mutual TLS, oldest first, until each message is
acknowledged: a refused or unreachable send is recorded and retried on the next round; a
replay the peer already holds counts as acknowledged (idempotent by source id). Every
attempt is an entry of this install's audit log."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import Jsonb

from audit import storable
from audit.keys import signer
from audit.record import Entry, checkpoint_now, record
from mapserver import db
from mapserver.exchange import bundle, evidence, files, outbox
from mapserver.settings import Settings

TIMEOUT_S = 20.0
MAX_ERROR = 500


class Sent(NamedTuple):
    source_id: str
    seq: int
    status: int  # the peer's HTTP status, 0 when unreachable or not ready to send
    outcome: str  # acknowledged, replayed (the peer had it), refused, pending, unreachable
    reason: str


def _context(settings: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=settings.exchange_peer_ca)
    ctx.load_cert_chain(settings.exchange_client_cert, settings.exchange_client_key)
    return ctx


def _connect(settings: Settings) -> http.client.HTTPSConnection:
    url = urlsplit(settings.exchange_peer_url)
    return http.client.HTTPSConnection(
        url.hostname or "", url.port or 443, context=_context(settings), timeout=TIMEOUT_S
    )


def _answer(reply: http.client.HTTPResponse) -> tuple[int, dict[str, Any]]:
    data = reply.read()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {"error": "unreadable", "message": data[:200].decode("utf-8", "replace")}
    return reply.status, answer if isinstance(answer, dict) else {"answer": answer}


def post(settings: Settings, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST a bundle to the peer's /exchange/receive with this install's certificate."""
    conn = _connect(settings)
    try:
        body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        conn.request(
            "POST", "/exchange/receive", body=body, headers={"Content-Type": "application/json"}
        )
        return _answer(conn.getresponse())
    finally:
        conn.close()


def put_files(
    settings: Settings, items: list[dict[str, Any]], load: Callable[[str], bytes]
) -> tuple[int, dict[str, Any]]:
    """Deliver the files a message lists that the peer does not hold yet, each by its hash,
    over one connection; (200, {}) when the peer holds them all, else its first refusal."""
    conn = _connect(settings)
    try:
        for item in items:
            path = f"/exchange/files/{item['sha256']}"
            conn.request("GET", path)
            status, answer = _answer(conn.getresponse())
            if status == 200:
                continue
            if status != 404:
                return status, answer
            conn.request(
                "PUT", path, body=load(item["sha256"]),
                headers={"Content-Type": item["media_type"]},
            )  # fmt: skip
            status, answer = _answer(conn.getresponse())
            if status not in (200, 201):
                said = f"file {item['sha256']}: {answer.get('message', '')}"
                if status in (400, 413, 415):  # the same file will be refused again
                    said += " (withdraw the message to send the ones after it)"
                return status, {**answer, "message": said}
        return 200, {}
    finally:
        conn.close()


def make(conn: psycopg.Connection, settings: Settings, row: tuple[Any, ...]) -> dict[str, Any]:
    """The bundle of an outbox row; raises evidence.Pending while the log lacks proofs."""
    seq, source_id, kind, content, action = row
    number = conn.execute(
        "SELECT case_number FROM exchange_outbox WHERE seq = %s", (seq,)
    ).fetchone()
    # A forwarded case carries its whole history; anything else (a withdrawal too, whatever
    # case the withdrawn message concerned) only the act that made the message.
    ids = (
        outbox.case_actions(conn, number[0] if number else None, action)
        if kind == "case.forward"
        else [action]
    )
    try:
        actions = [evidence.of_action(conn, settings, i) for i in ids]
    except evidence.Pending:
        # Our own log: sign a checkpoint now rather than wait for the next one.
        with conn.transaction():
            checkpoint_now(conn, signer(settings.pki_dir))
        actions = [evidence.of_action(conn, settings, i) for i in ids]
    me = outbox.me(settings)
    return bundle.build(source_id, seq, kind, me, outbox.peer(settings), content, actions)


def _audit(conn: psycopg.Connection, settings: Settings, sent: Sent) -> None:
    with conn.transaction():
        record(
            conn,
            Entry(
                action="exchange.send",
                outcome="ok" if sent.outcome in ("acknowledged", "replayed") else "refused",
                account="exchange",
                method="EXCHANGE",
                resource=f"exchange {sent.source_id}",
                status=sent.status or None,
                detail={"seq": sent.seq, "outcome": sent.outcome, "reason": sent.reason[:256]},
            ),
            signer(settings.pki_dir),
        )


def _mark(conn: psycopg.Connection, sent: Sent, answer: dict[str, Any], kind: str) -> None:
    """Record the attempt on the row, if it still holds the message of `kind` that was sent:
    a message withdrawn meanwhile stays pending, and its withdrawal is sent next (the peer
    answers `replayed` if it took the original in)."""
    with conn.transaction():
        if sent.outcome in ("acknowledged", "replayed"):
            conn.execute(
                "UPDATE exchange_outbox SET attempts = attempts + 1, last_attempt = now(),"
                " acked_at = now(), ack = %s, last_error = NULL WHERE seq = %s AND kind = %s",
                (Jsonb(answer), sent.seq, kind),
            )
        else:
            conn.execute(
                "UPDATE exchange_outbox SET attempts = attempts + 1, last_attempt = now(),"
                " last_error = %s WHERE seq = %s AND kind = %s",
                (f"{sent.outcome}: {sent.reason}"[:MAX_ERROR], sent.seq, kind),
            )


def send_pending(
    settings: Settings,
    transport: Callable[[Settings, dict[str, Any]], tuple[int, dict[str, Any]]] = post,
    deliver: Callable[
        [Settings, list[dict[str, Any]], Callable[[str], bytes]], tuple[int, dict[str, Any]]
    ] = put_files,
) -> list[Sent]:
    """One round: send unacknowledged messages in order, stopping at the first that is not
    acknowledged (the peer takes them only in order). A message's files go first."""
    done: list[Sent] = []
    with db.connect(settings) as conn:
        conn.autocommit = True
        for row in outbox.pending(conn):
            seq, source_id = int(row[0]), str(row[1])
            answer: dict[str, Any] = {}
            try:
                doc = make(conn, settings, row)
            except evidence.Pending as exc:
                sent = Sent(source_id, seq, 0, "pending", str(exc))
            else:
                try:
                    status, answer = 200, {}
                    carried = doc["content"].get("attachments") or []
                    if carried:
                        status, answer = deliver(
                            settings, carried, lambda sha: files.load(conn, sha)
                        )
                    if status == 200:
                        status, answer = transport(settings, doc)
                except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                    sent = Sent(source_id, seq, 0, "unreachable", f"{type(exc).__name__}: {exc}")
                else:
                    # Whatever the peer answered, kept as bounded JSON that text and jsonb
                    # store (no NUL, lone surrogate or non-finite number): never a crash here.
                    answer = storable.detail(answer)
                    outcome = (
                        "acknowledged" if status == 200
                        else "replayed" if status == 409 and answer.get("error") == "replayed"
                        else "refused"
                    )  # fmt: skip
                    sent = Sent(source_id, seq, status, outcome, str(answer.get("message", "")))
            _mark(conn, sent, answer, str(row[2]))
            _audit(conn, settings, sent)
            done.append(sent)
            if sent.outcome not in ("acknowledged", "replayed"):
                break
    return done


def loop(settings: Settings, interval: float, rounds: int | None = None) -> None:
    """Send, wait, send again (`citygrid exchange send --loop`)."""
    n = 0
    while rounds is None or n < rounds:
        send_pending(settings)
        n += 1
        time.sleep(interval)
