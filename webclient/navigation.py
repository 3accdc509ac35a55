"""The pages a person may open: the links in each page's header, and the way out of a page
the person may not open.

Which pages an account may open is what the policy answers for each page's declared action
(`@requires`), so a link is shown exactly when following it would not be refused. A browser
sent to a page its account may not open gets the same 403, as a small page in the install's
language naming the pages it may open; API clients keep the JSON problem as it is.
"""

from __future__ import annotations

from typing import NamedTuple

from flask import Flask, Response, current_app, g, render_template, request, url_for

from auth import policy
from auth.access import ATTRIBUTE, Declared


class Page(NamedTuple):
    name: str  # what _nav.html calls it
    endpoint: str


# In the order the header lists them; the wall display's page is for its own account only.
PAGES = (
    Page("map", "webclient.index"),
    Page("inbox", "webclient.case_inbox"),
    Page("street", "webclient.street"),
    Page("evaluation", "evaluation_pages.dashboard"),
    Page("screen", "evaluation_pages.big_screen"),
    Page("components", "components.page"),
    Page("exchange", "exchange.page"),
    Page("review", "webclient.review"),
    Page("manage", "webclient.manage"),
)


def openable(app: Flask, roles: tuple[str, ...], streets: tuple[str, ...]) -> dict[str, str]:
    """Page name → path of each page of PAGES that `roles` may open (a page whose view is
    not part of this app, or declares no action, is left out)."""
    found: dict[str, str] = {}
    for page in PAGES:
        view = app.view_functions.get(page.endpoint)
        declared = getattr(view, ATTRIBUTE, None)
        if not isinstance(declared, Declared) or declared.scope is not None:
            continue
        if policy.permitted(roles, policy.Request(declared.action), streets):
            found[page.name] = url_for(page.endpoint)
    return found


def pages() -> dict[str, str]:
    """The pages this request's account may open ({} without an identity)."""
    who = g.get("identity")
    if who is None:
        return {}
    cached: dict[str, str] | None = g.get("citygrid_pages")
    if cached is None:
        cached = g.citygrid_pages = openable(current_app, tuple(who.roles), tuple(who.streets))
    return cached


def wants_page() -> bool:
    """A browser's navigation: a GET whose Accept prefers HTML to JSON (fetch's `*/*`, an
    image's and a client's without Accept prefer JSON)."""
    if request.method != "GET":
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def refusal_page(response: Response) -> Response:
    """A 403 answered to a browser's navigation: the same status, as a page."""
    if response.status_code != 403 or not response.is_json or not wants_page():
        return response
    page = current_app.make_response(render_template("refused.html"))
    page.status_code = 403
    page.headers["Cache-Control"] = "no-store"
    return page


def init_app(app: Flask) -> None:
    """Registered after the gateway's identity hook, whose `after` then runs last: the audit
    entry records the page sent."""
    app.after_request(refusal_page)
