"""Bench-only: CityGrid with the audit write replaced by a no-op, to measure what the audit
costs (bench/gateway.py). Never part of the product: no setting can do this."""

from __future__ import annotations

from flask import Flask

from mapserver import create_app


def create() -> Flask:
    app = create_app()
    app.extensions["citygrid.gateway"].record = lambda entry: None
    return app
