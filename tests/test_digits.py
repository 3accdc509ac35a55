"""A digit is an ASCII digit wherever CityGrid reads a number or a code from outside:
`str.isdigit()` is true of '²' and '٣' too, which `int()` refuses or reads as another number
(GET /evaluation/config?version=² was a 500, `serve --bind HOST:²` a traceback)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint
from mapserver.cases import calendar, reading
from mapserver.cli import main
from mapserver.errors import CityGridError
from mapserver.exchange import views as exchange_views
from mapserver.serve import split_bind
from tiles import scope

NOT_ASCII = ("²", "٣", "８")  # superscript two, Arabic-Indic three, fullwidth eight


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_a_bind_address_takes_ascii_digits(digit: str) -> None:
    with pytest.raises(CityGridError, match="--bind must be HOST:PORT"):
        split_bind(f"127.0.0.1:{digit}")
    result = CliRunner().invoke(main, ["serve", "--bind", f"127.0.0.1:80{digit}"])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert result.output.startswith("citygrid: error: --bind must be HOST:PORT"), result.output
    assert split_bind("127.0.0.1:8443") == ("127.0.0.1", 8443)


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_a_signed_checkpoint_with_another_digit_is_not_a_checkpoint(digit: str) -> None:
    """Even signed with the trusted key (a peer's or witness's bug), the size must be ASCII."""
    key = Ed25519PrivateKey.generate()
    body = f"{checkpoint.ORIGIN}\n1{digit}\n{base64.b64encode(bytes(32)).decode()}\n"
    blob = checkpoint.key_id(checkpoint.KEY_NAME, key.public_key()) + key.sign(body.encode())
    note = body + f"\n\u2014 {checkpoint.KEY_NAME} {base64.b64encode(blob).decode()}\n"
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        checkpoint.verify(note, key.public_key())
    good = checkpoint.sign(checkpoint.Checkpoint(checkpoint.ORIGIN, 12, bytes(32)), key)
    assert checkpoint.verify(good, key.public_key()).size == 12


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_working_hours_take_ascii_digits(digit: str) -> None:
    """'٣' and '８' were read as 3 and 8: a calendar of 03:00 that nobody typed."""
    with pytest.raises(ValueError, match="is not HH:MM-HH:MM"):
        calendar.parse_work_hours(f"0{digit}:00-12:00")
    assert calendar.parse_work_hours("08:30-12:00")[0].start.hour == 8


# Patterns that read what CityGrid itself wrote or parses as free text: ogrinfo's and
# ogr2ogr's output, migration file names, addresses (a house number in any digits is a
# number), the device client's own forms.
_FREE = ("mapserver/address_text.py", "mapserver/importer.py", "mapserver/migrate.py",
         "mapserver/device_client/")  # fmt: skip


def test_codes_and_numbers_are_matched_as_ascii_digits() -> None:
    r"""`\d` in a text pattern matches every decimal digit of Unicode: a grid code, a class or
    a case number in Arabic-Indic or fullwidth digits passed as one, and a class the city
    forwarded so would be refused by the district, holding back every later message."""
    root = Path(__file__).parent.parent
    found = [
        f"{path.relative_to(root)}:{n}"
        for package in ("mapserver", "auth", "audit", "tiles", "webclient")
        for path in sorted((root / package).rglob("*.py"))
        if not str(path.relative_to(root)).startswith(_FREE)
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if "\\d" in line
    ]
    assert not found, found
    for digits in ("٠١", "０１"):
        assert not re.fullmatch(exchange_views._CODES["major"][0], digits)
        assert not reading.NUMBER.match(f"2026-0000{digits}")
        assert not scope._INDEX.match(digits[1])


@pytest.mark.parametrize("digit", NOT_ASCII)
def test_a_device_waits_only_for_an_ascii_retry_after(digit: str) -> None:
    """A proxy on the mobile link that answers `Retry-After: ²` made the device client raise
    (float('²') is an error) instead of backing off on its own schedule."""
    from mapserver.device_client.plan import Answer

    assert Answer(503, {"retry-after": f"1{digit}"}, b"").retry_after() is None
    assert Answer(503, {"retry-after": "12"}, b"").retry_after() == 12.0


def test_isdigit_comes_with_isascii() -> None:
    """Wherever a check says "digits" before int() reads them, it also says "ASCII", within
    the statement (a line or the two before it)."""
    root = Path(__file__).parent.parent
    found = []
    for package in ("mapserver", "auth", "audit", "tiles", "webclient"):
        for path in sorted((root / package).rglob("*.py")):
            if str(path.relative_to(root)) == "mapserver/address_text.py":
                continue  # its numbers are matched by a pattern first
            lines = path.read_text("utf-8").splitlines()
            for n, line in enumerate(lines):
                statement = "".join(lines[max(0, n - 2) : n + 1])
                if ".isdigit()" in line and "isascii()" not in statement:
                    found.append(f"{path.relative_to(root)}:{n + 1}")
    assert not found, found
