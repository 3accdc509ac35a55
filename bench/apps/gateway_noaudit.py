"""Bench-only: CityGrid with the audit write replaced by a no-op, to measure what the audit
costs (bench/gateway.py). Never part of the product: no setting can do this."""

from __future__ import annotations

from flask import Flask

from mapserver import create_app
from mapserver.services import services


def create() -> Flask:
    app = create_app()
    services(app).gateway.record = lambda entry: None
    return app
