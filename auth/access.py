"""Authorization declared where a route is defined, decided before the view runs.

Every view carries `@requires(action, scope)`. The gateway asks the policy with what the
declaration derives from the URL alone (map product, scale, streets the requested area
touches), before the view does any work: no query, cache lookup or 404 can come first.
`create_app` refuses to start while any rule of `app.url_map` has no declaration, and a
success answered without a decision is turned into a 500 (see auth.gateway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from flask import Flask

from auth import policy

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__citygrid_access__"


class ScopeContext(Protocol):
    """What a scope function may consult: pure data held in memory, never I/O."""

    def scale_of(self, z: int) -> int | None: ...

    def streets_of_tile(self, z: int, x: int, y: int) -> frozenset[str]: ...


Scope = Callable[[ScopeContext, Mapping[str, Any], Mapping[str, str]], policy.Request]


@dataclass(frozen=True)
class Declared:
    """The action a route performs, and how its product, scale and streets are derived
    from the view arguments and query string (None: the action alone decides)."""

    action: str
    scope: Scope | None = None

    def request(
        self, ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
    ) -> policy.Request:
        if self.scope is None:
            return policy.Request(self.action)
        return self.scope(ctx, view_args, args)


def requires(action: str, scope: Scope | None = None) -> Callable[[F], F]:
    """Declare the policy action of a view (and how its scope is derived)."""

    def mark(view: F) -> F:
        setattr(view, ATTRIBUTE, Declared(action, scope))
        return view

    return mark


class Declarations:
    """Endpoint → declaration, for the views of one app (and endpoints Flask makes itself,
    such as a blueprint's static files, declared by name)."""

    def __init__(self) -> None:
        self.by_endpoint: dict[str, Declared] = {}

    def declare(self, endpoint: str, action: str, scope: Scope | None = None) -> None:
        self.by_endpoint[endpoint] = Declared(action, scope)

    def of(self, app: Flask, endpoint: str | None) -> Declared | None:
        if endpoint is None:
            return None
        found = self.by_endpoint.get(endpoint)
        if found is not None:
            return found
        view = app.view_functions.get(endpoint)
        return getattr(view, ATTRIBUTE, None) if view is not None else None

    def undeclared(self, app: Flask) -> list[str]:
        """Rules of the app's URL map that no declaration covers."""
        return sorted(
            f"{rule.rule} ({rule.endpoint})"
            for rule in app.url_map.iter_rules()
            if self.of(app, rule.endpoint) is None
        )


class UndeclaredRoutes(RuntimeError):
    """Raised by create_app: a route without a policy declaration must never be served."""

    def __init__(self, routes: list[str]):
        super().__init__("routes without a declared policy action: " + ", ".join(routes))
        self.routes = routes
