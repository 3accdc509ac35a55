"""The attribute changes a bureau's person signs (`set`), checked before anything is
stored: a department left blank is refused like a blank name (it was stored as '')."""

from __future__ import annotations

import pytest

from mapserver.components import store
from mapserver.errors import InvalidInput

OWN = frozenset({"bureau-07", "园林绿化局"})


@pytest.mark.parametrize("name", ["name", "responsible_dept", "owner_dept", "maintainer_dept"])
@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_attribute_is_refused(name: str, value: str) -> None:
    with pytest.raises(InvalidInput, match=f"set.{name} must not be empty"):
        store.attributes({"set": {name: value}}, OWN)


def test_attributes_are_kept_trimmed() -> None:
    given = {"name": " 井盖 ", "owner_dept": "园林绿化局 ", "state": "damaged"}
    assert store.attributes({"set": given}, OWN) == {
        "name": "井盖",
        "owner_dept": "园林绿化局",
        "state": "damaged",
    }
