"""Reading fields of Halo's records whose shape is not what their name suggests."""

from collections.abc import Mapping
from typing import Any


def custom_field_text(value: object) -> str:
    """A Halo custom field's value as the portal compares it: trimmed text, '' when unset
    (Halo omits nulls; values may be numbers). The one answer for every model that mirrors
    Halo records."""
    return "" if value is None else str(value).strip()


def linked_item_id(line: Mapping[str, Any]) -> int | None:
    """The Halo Item id of an invoice line, or None.

    Halo answers `linked_item` as the Item object (`{"id": 502, "name": ...}`), not an id
    (halo-api.md §4, Invoice; the document types it as an Item). `_itemid` is the write-side
    field, read too in case an answer carries it.
    """
    item: Any = line.get("linked_item")  # JSON: an object, an id, or nothing
    if isinstance(item, dict):
        item = item.get("id")
    if item in (None, "", 0):
        item = line.get("_itemid")
    try:
        return int(item) or None
    except (TypeError, ValueError):
        return None
