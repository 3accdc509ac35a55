"""Grid, component and event codes: pure parsing with reasons."""

from __future__ import annotations

import pytest

from mapserver import codes
from mapserver.errors import InvalidInput

CLASSES = {codes.ClassCode("01", "01"), codes.ClassCode("04", "02")}


def test_grid_codes_both_widths() -> None:
    g = codes.parse_grid_code("11010800100107")
    assert (g.district, g.street, g.community, g.serial) == ("110108", "001", "001", 7)
    assert str(g) == "11010800100107" and g.community_code == "110108001001"
    g3 = codes.parse_grid_code("110108001001107", serial_digits=3)
    assert g3.serial == 107 and str(g3) == "110108001001107"
    assert codes.grid_code("110108001001", 7) == "11010800100107"
    assert codes.grid_code("110108001001", 7, 3) == "110108001001007"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("1101080010010", "wrong length"),
        ("110108001001070", "wrong length"),
        ("1101080010010a", "only digits"),
        ("１１０１０８００１００１０７", "only digits"),
        ("11010800000107", "street part 000"),
        ("11010800100007", "community part 000"),
    ],
)
def test_bad_grid_codes(code: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        codes.parse_grid_code(code)


def test_unknown_district() -> None:
    with pytest.raises(InvalidInput, match="unknown district 110109"):
        codes.parse_grid_code("11010900100107", districts={"110108"})


def test_component_codes() -> None:
    c = codes.parse_component_code("1101080402000123", districts={"110108"}, classes=CLASSES)
    assert (c.major, c.minor, c.serial) == ("04", "02", 123)
    assert str(c) == "1101080402000123"
    c17 = codes.parse_component_code("11010804002000123", minor_digits=3)
    assert c17.minor == "002"
    assert codes.component_code("110108", codes.ClassCode("01", "01"), 5) == "1101080101000005"
    with pytest.raises(InvalidInput, match="bad class 05/05"):
        codes.parse_component_code("1101080505000001", classes=CLASSES)
    with pytest.raises(InvalidInput, match="out of range"):
        codes.component_code("110108", codes.ClassCode("01", "01"), 1_000_000)


def test_event_class() -> None:
    assert codes.parse_event_class("0102") == codes.ClassCode("01", "02")
    with pytest.raises(InvalidInput, match="wrong length"):
        codes.parse_event_class("01020")
    with pytest.raises(InvalidInput, match="bad class"):
        codes.parse_event_class("0999", classes=CLASSES)
