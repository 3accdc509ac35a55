"""Putting the gateway in front of the app: pool, identity, policy guard, audit, limits."""

from __future__ import annotations

from flask import Flask, g, jsonify, request
from flask_limiter import Limiter
from redis.exceptions import RedisError

from audit.keys import signer
from audit.writer import GroupCommitWriter
from auth import policy
from auth.ca_store import CaStore, PkiError
from auth.gateway import Gateway, audit_note, authorize
from mapserver.db import open_pool
from mapserver.settings import Settings, rate_table


def _limit_for(table: dict[str, str]):  # type: ignore[no-untyped-def]
    """The most generous limit among the requester's roles (callable for Flask-Limiter)."""
    from limits import parse

    def limit() -> str:
        who = g.get("identity")
        roles = who.roles if who else ()
        candidates = [table[r] for r in roles if r in table] or [table["*"]]
        return max(candidates, key=lambda s: parse(s).amount / parse(s).get_expiry())

    return limit


def _certificate_key() -> str:
    who = g.get("identity")
    return f"cert:{who.cert_sha256}" if who else f"addr:{request.remote_addr}"


def init_app(app: Flask, settings: Settings) -> None:
    store = CaStore(settings.pki_dir)
    if not store.exists():
        raise PkiError("no CA yet: run `citygrid pki init` before serving")
    pool = open_pool(settings)
    app.extensions["citygrid.pool"] = pool

    writer = GroupCommitWriter(
        settings.serving_database_url,
        signer(settings.pki_dir),
        settings.audit_checkpoint_entries,
        settings.audit_checkpoint_seconds,
    )
    app.extensions["citygrid.audit_writer"] = writer
    Gateway(app, store.cert_path, settings.pki_dir / "jwt", writer.write)

    def guard(
        action: str, product: str | None = None, scale: int | None = None, street: str | None = None
    ) -> None:
        authorize(policy.Request(action, product, scale, street))

    app.extensions["citygrid.guard"] = guard
    app.extensions["citygrid.note"] = audit_note

    limiter = Limiter(
        key_func=_certificate_key,
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2},
        strategy="moving-window",
        headers_enabled=True,
        swallow_errors=False,
        in_memory_fallback_enabled=False,
        key_prefix="citygrid",
    )
    limiter.init_app(app)
    app.extensions["citygrid.limiter"] = limiter
    import tiles.views

    limiter.limit(_limit_for(rate_table(settings.rate_limit_tiles)), scope="tiles")(tiles.views.bp)
    from auth import views

    limiter.limit(_limit_for(rate_table(settings.rate_limit_api)), scope="api")(views.bp)
    views.init_app(app)
    import audit.views
    from mapserver import admin_views

    audit.views.init_app(app)
    admin_views.init_app(app)

    @app.errorhandler(RedisError)
    def limiter_down(exc: RedisError):  # type: ignore[no-untyped-def]
        g.audit = {**(g.get("audit") or {}), "reason": "rate_limiter_unavailable"}
        response = jsonify(error="unavailable", message="rate limiter unavailable; try later")
        return response, 503
