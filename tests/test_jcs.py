"""audit.jcs writes RFC 8785 bytes: the C encoder's where they agree, `rfc8785`'s otherwise.
Checked against the `rfc8785` package on generated JSON values, on the edges the fast way
must leave to it, and on a stored audit entry's canonical form (the leaf hashes of every
existing log depend on it)."""

from __future__ import annotations

import datetime as dt
import math

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import entry, jcs
from audit.record import Entry, prepare

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)  # no lone surrogates
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-jcs.INT_MOST, max_value=jcs.INT_MOST)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=1500, deadline=None)
@given(_VALUES)
def test_the_same_bytes_as_rfc8785(value: object) -> None:
    assert jcs.dumps(value) == rfc8785.dumps(value)


@settings(max_examples=1500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_prints_as_ecmascript_does(x: float) -> None:
    assert jcs.dumps({"latency_ms": x, "n": [x]}) == rfc8785.dumps({"latency_ms": x, "n": [x]})


def test_the_edges_go_to_rfc8785() -> None:
    edges: list[object] = [
        2.0, -0.0, 0.0, 1e-5, 0.0001, 9.999e-5, 1e15 + 0.5, 1e16, 1.5e16, 1e21, 5e-324,
        math.pi, -math.e, 2**53 - 1, -(2**53 - 1),
        {"\ue000": 1, "\U0001f600": 2},  # sorted by UTF-16 units: the emoji's surrogate first
        {"é": 1, "z": 2, "a": 3}, "\x00\x1f\x7f\u2028\"\\/", ["\b\t\n\f\r"], (1, "a"),
    ]  # fmt: skip
    for value in edges:
        assert jcs.dumps(value) == rfc8785.dumps(value), value
    assert not jcs._agrees(2.0) and not jcs._agrees(1e-5) and not jcs._agrees({"é": 1})
    assert jcs._agrees({"a": [1, 0.25, "é", None, True]})


def test_an_audit_entry_hashes_as_before() -> None:
    e = Entry(
        at=dt.datetime(2026, 11, 26, 5, 0, 0, 123456, tzinfo=dt.UTC), action="tile.read",
        outcome="ok", account="张三", role="viewer", cert_serial="1f", cert_sha256="ab" * 32,
        client_addr="10.0.0.1", method="GET", resource="/tiles/topo500/3/1/2.png",
        request_id="r1", status=200, bytes=1234, latency_ms=0.317,
        detail={"map": "topo500", "level": 3, "streets": ["110101001"], "note": "a\nb"},
    )  # fmt: skip
    values = prepare(e, e.at)
    doc = {
        name: (
            values[name].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if isinstance(values[name], dt.datetime)
            else values[name]
        )
        for name in entry.FIELDS
    }
    assert entry.canonical(values) == rfc8785.dumps(doc)
