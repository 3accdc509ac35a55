"""Grid, component and event codes (CJ/T 213 / CJ/T 214 usage): pure parsing and formatting.

Parsing checks the shape of a code and, when given the known districts and classes, that
its parts exist; every refusal says why.
"""

from __future__ import annotations

from collections.abc import Container
from typing import NamedTuple

from mapserver.errors import InvalidInput

COMPONENT_STATES = ("intact", "damaged", "missing", "occupied")
STATE_NAMES = {"intact": "完好", "damaged": "破损", "missing": "丢失", "occupied": "占用"}


class GridCode(NamedTuple):
    district: str
    street: str
    community: str
    serial: int
    serial_digits: int = 2

    def __str__(self) -> str:
        return f"{self.community_code}{self.serial:0{self.serial_digits}d}"

    @property
    def street_code(self) -> str:
        return self.district + self.street

    @property
    def community_code(self) -> str:
        return self.district + self.street + self.community


class ClassCode(NamedTuple):
    """A component or event class: (major, minor)."""

    major: str
    minor: str


class ComponentCode(NamedTuple):
    district: str
    major: str
    minor: str
    serial: int

    def __str__(self) -> str:
        return f"{self.district}{self.major}{self.minor}{self.serial:06d}"

    @property
    def cls(self) -> ClassCode:
        return ClassCode(self.major, self.minor)


def _digits(code: str, what: str) -> str:
    if not isinstance(code, str):
        raise InvalidInput(f"{what} must be a string of digits")
    code = code.strip()
    if not code.isascii() or not code.isdigit():
        raise InvalidInput(f"{what} {code!r}: only digits allowed")
    return code


def parse_grid_code(
    code: str,
    serial_digits: int = 2,
    districts: Container[str] | None = None,
) -> GridCode:
    """Split a unit-grid code into its parts: 6 district + 3 street + 3 community + serial."""
    code = _digits(code, "grid code")
    want = 12 + serial_digits
    if len(code) != want:
        raise InvalidInput(f"grid code {code!r}: wrong length {len(code)}, expected {want}")
    district = code[:6]
    if districts is not None and district not in districts:
        raise InvalidInput(f"grid code {code!r}: unknown district {district}")
    if code[6:9] == "000":
        raise InvalidInput(f"grid code {code!r}: street part 000 is not a street")
    if code[9:12] == "000":
        raise InvalidInput(f"grid code {code!r}: community part 000 is not a community")
    return GridCode(district, code[6:9], code[9:12], int(code[12:]), serial_digits)


def parse_component_code(
    code: str,
    minor_digits: int = 2,
    districts: Container[str] | None = None,
    classes: Container[ClassCode] | None = None,
) -> ComponentCode:
    """Split a component code: 6 district + 2 major + 2 (or 3) minor + 6 serial."""
    code = _digits(code, "component code")
    want = 14 + minor_digits
    if len(code) != want:
        raise InvalidInput(f"component code {code!r}: wrong length {len(code)}, expected {want}")
    district, major = code[:6], code[6:8]
    minor, serial = code[8 : 8 + minor_digits], code[8 + minor_digits :]
    if districts is not None and district not in districts:
        raise InvalidInput(f"component code {code!r}: unknown district {district}")
    if classes is not None and ClassCode(major, minor) not in classes:
        raise InvalidInput(f"component code {code!r}: bad class {major}/{minor}")
    if int(serial) == 0:
        raise InvalidInput(f"component code {code!r}: serial 000000 is not a component")
    return ComponentCode(district, major, minor, int(serial))


def parse_event_class(
    code: str, minor_digits: int = 2, classes: Container[ClassCode] | None = None
) -> ClassCode:
    """An event class code: 2 major + 2 (or 3) minor."""
    code = _digits(code, "event class")
    want = 2 + minor_digits
    if len(code) != want:
        raise InvalidInput(f"event class {code!r}: wrong length {len(code)}, expected {want}")
    cls = ClassCode(code[:2], code[2:])
    if classes is not None and cls not in classes:
        raise InvalidInput(f"event class {code!r}: bad class {cls.major}/{cls.minor}")
    return cls


def component_code(district: str, cls: ClassCode, serial: int) -> str:
    if not 0 < serial < 1_000_000:
        raise InvalidInput(f"component serial {serial} out of range 1..999999")
    return f"{district}{cls.major}{cls.minor}{serial:06d}"


def grid_code(community_code: str, serial: int, serial_digits: int = 2) -> str:
    if not 0 < serial < 10**serial_digits:
        raise InvalidInput(
            f"grid serial {serial} out of range 1..{10**serial_digits - 1} for community "
            f"{community_code}"
        )
    return f"{community_code}{serial:0{serial_digits}d}"
