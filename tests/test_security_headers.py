"""auth.security_headers stamps every answer's header list below the app: the security
headers an answer does not set itself, no Server banner, `no-store` on JSON that says
nothing of caching, and the gateway's request id (never one a view or client chose).
The app-level check on real answers is tests/test_routes.py's headers test."""

from __future__ import annotations

from auth.security_headers import REQUEST_ID_KEY, SECURITY_HEADERS, SecurityHeaders, stamped


def _names(headers: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in headers]


def test_every_security_header_is_added_once_and_a_views_own_is_kept() -> None:
    own_csp = "default-src 'none'"
    out = dict(stamped([("Content-Type", "image/png"), ("content-security-policy", own_csp)], "r1"))
    for name, value in SECURITY_HEADERS.items():
        if name != "Content-Security-Policy":
            assert out[name] == value
    assert out["content-security-policy"] == own_csp
    names = _names(list(out.items()))
    assert len(names) == len(set(names))


def test_no_banner_and_the_gateways_request_id_wins() -> None:
    headers = [("Server", "gunicorn"), ("X-Request-Id", "forged"), ("Content-Length", "3")]
    out = stamped(headers, "abc123")
    assert "server" not in _names(out)
    assert [v for n, v in out if n.lower() == "x-request-id"] == ["abc123"]
    assert ("Content-Length", "3") in out


def test_json_is_not_stored_unless_the_answer_says_how_to_cache_it() -> None:
    json_plain = dict(stamped([("Content-Type", "application/json")], ""))
    assert json_plain["Cache-Control"] == "no-store"
    json_charset = dict(stamped([("Content-Type", "Application/JSON; charset=utf-8")], ""))
    assert json_charset["Cache-Control"] == "no-store"
    json_own = stamped([("Content-Type", "application/json"), ("Cache-Control", "max-age=5")], "")
    assert [v for n, v in json_own if n.lower() == "cache-control"] == ["max-age=5"]
    png = dict(stamped([("Content-Type", "image/png")], ""))
    assert "Cache-Control" not in png


def test_the_middleware_stamps_what_the_app_starts_with_the_environs_id() -> None:
    def app(environ, start_response):  # type: ignore[no-untyped-def]
        environ[REQUEST_ID_KEY] = "from-the-gateway"
        start_response("404 NOT FOUND", [("Content-Type", "application/json"), ("Server", "x")])
        return [b"{}"]

    seen: list[tuple[str, list[tuple[str, str]]]] = []
    body = SecurityHeaders(app)(
        {}, lambda status, headers, exc=None: seen.append((status, headers))
    )
    assert list(body) == [b"{}"]
    status, headers = seen[0]
    assert status == "404 NOT FOUND"
    out = dict(headers)
    assert out["X-Request-Id"] == "from-the-gateway"
    assert out["X-Frame-Options"] == "DENY"
    assert "Server" not in out
