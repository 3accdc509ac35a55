"""The component and event classes' texts in the install's language.

The class tables hold the standard's Chinese (the zh-CN locale's texts); `class_label` holds a
class's texts in another locale (migration 0035 ships English), and the database function
`class_text(locale)` gives every class with its texts in a locale, falling back to the class
table's text where a locale has none (a name an administrator edited before English shipped).
Queries join `class_text(...)` where they used the class tables for a name; codes never change.
"""

from __future__ import annotations

from mapserver import locales

BASE = "zh-CN"  # the locale whose texts the class tables themselves hold
TEXTS = ("major_name", "name", "filing_condition", "closing_condition")


def relation(locale: str) -> str:
    """`class_text('<code>')` for the install's locale, ready to stand in a FROM clause.

    The code is one of mapserver.locales' keys (unknown codes fall back to zh-CN), never
    user text, so it is written into the SQL as a literal."""
    code = locales.get(locale).code
    assert code in locales.LOCALES and "'" not in code
    return f"class_text('{code}')"


def in_class_table(locale: str) -> bool:
    """Whether an edit of a class's texts in `locale` goes to the class table itself (zh-CN)
    rather than to `class_label`."""
    return locales.get(locale).code == BASE
