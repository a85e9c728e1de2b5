"""Reading fields of Halo's records whose shape is not what their name suggests."""


def linked_item_id(line):
    """The Halo Item id of an invoice line, or None.

    Halo answers `linked_item` as the Item object (`{"id": 502, "name": ...}`), not an id
    (halo-api.md §4, Invoice; the document types it as an Item). `_itemid` is the write-side
    field, read too in case an answer carries it.
    """
    item = line.get("linked_item")
    if isinstance(item, dict):
        item = item.get("id")
    if item in (None, "", 0):
        item = line.get("_itemid")
    try:
        return int(item) or None
    except (TypeError, ValueError):
        return None
