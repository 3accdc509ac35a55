"""The caller's contact of a complaint: operators see it, nobody else does, yet the operator's
signature covers it. The signed parameters carry only a salted digest; the contact and its
salt travel beside the signed envelope (`private`) and are kept for operators, who can
check them against the signed digest. A phone number alone would be found from an unsalted
hash in seconds; the random salt (at least 128 bits) prevents that."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any, NamedTuple

from mapserver import text_limits
from mapserver.errors import InvalidInput

MAX_CONTACT = 200
_SALT = re.compile(r"^[0-9a-f]{32,128}\Z")


class Contact(NamedTuple):
    text: str
    salt: str


def digest(text: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\n{text}".encode()).hexdigest()


def new(text: str) -> tuple[Contact, str]:
    """A contact with a fresh salt, and the digest to sign (for the command line); held to
    the same limit as a contact sent beside a signed request (`from_request`)."""
    text_limits.Limit("contact", MAX_CONTACT).check(text)
    found = Contact(text, secrets.token_hex(16))
    return found, digest(found.text, found.salt)


def from_request(signed: Mapping[str, Any], private: Any) -> Contact | None:
    """The contact beside a signed creation, checked against the digest it signed."""
    if "contact" in signed:
        raise InvalidInput(
            "the caller's contact is never signed in clear: sign contact_digest and send "
            "{contact, salt} in private"
        )
    wanted = signed.get("contact_digest")
    if wanted is None:
        if private:
            raise InvalidInput("private contact sent without a signed contact_digest")
        return None
    if not isinstance(private, Mapping):
        raise InvalidInput("a signed contact_digest needs private {contact, salt}")
    text, salt = private.get("contact"), private.get("salt")
    if not isinstance(text, str) or not isinstance(salt, str) or not _SALT.match(salt):
        raise InvalidInput("private needs contact (text) and salt (32 to 128 hex digits)")
    text = text.strip()
    text_limits.Limit("contact", MAX_CONTACT).check(text)
    if digest(text, salt) != wanted:
        raise InvalidInput("the contact does not match the signed contact_digest")
    return Contact(text, salt)
