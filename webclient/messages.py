"""The pages' words in the install's language: one message catalogue per locale.

`webclient/messages/<locale>.json` maps a message key to its text; the templates write
`{{ t("key") }}` and the pages' scripts `T("key")` (static/i18n.js), reading the catalogue
the page carries in a JSON data block (no inline script, so the CSP stays `script-src
'self'`). The settings' `locale` (mapserver.locales) picks the catalogue; zh-CN is the
default. Every catalogue holds the same keys (tests/test_ui_locale.py checks them against
every key the templates and scripts use).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from mapserver import locales


@cache
def catalogue(code: str) -> dict[str, str]:
    """The messages of locale `code` (unknown codes: the default locale's)."""
    code = locales.get(code).code
    text = resources.files("webclient").joinpath("messages", f"{code}.json").read_text("utf-8")
    messages: dict[str, str] = json.loads(text)
    return messages


def translate(code: str, key: str) -> str:
    """The text of `key` in locale `code`; the key itself when a catalogue lacks it (a test
    keeps every key present, so a page never shows a key)."""
    return catalogue(code).get(key, key)
