"""Planning a sync: from counts and the licences already in Halo to the rows a run writes.

Pure functions (no database, no HTTP), so a preview and a real run compute the same rows.

Licence identity. Halo licences carry no item id, so the portal marks the licences it owns:
`vendor_product_sku` is `hpp:<product SKU>` (compared case-insensitively), and
`third_party_product`/`notes` say so to people reading Halo. One marked licence per (Halo
client, SKU) is the pair's licence, found again after any restart or crash because it lives
in Halo, not in the portal. A licence without the marker was made by hand (or by another
tool) and is never written, even when its name or `product_sku` matches a product; two
marked licences for one pair are reported and neither is written, so no third appears.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from integrations.billing_sync.models import RemovalPolicy, SyncResult

MARKER_PREFIX = "hpp:"
PORTAL_NAME = "Halo Partner Portal"
SUBSCRIPTION = 1  # SoftwareLicence.type of a subscription
NOTE = (
    "Managed by the Halo Partner Portal billing sync: every sync overwrites its count. "
    "Change the usage in the portal, not here."
)
NOT_SYNCED = "Not synced any more (mapping removed, or organisation or product inactive):"

Action = SyncResult.Action
Outcome = SyncResult.Outcome


def marker(sku):
    return f"{MARKER_PREFIX}{sku}"


def owned_sku(licence):
    """The product SKU of a licence the portal owns, else None."""
    value = str(licence.get("vendor_product_sku") or "")
    if value[: len(MARKER_PREFIX)].casefold() == MARKER_PREFIX:
        return value[len(MARKER_PREFIX) :]
    return None


def pair_key(client_id, sku):
    return (int(client_id), str(sku).strip().casefold())


@dataclass(frozen=True)
class Pair:
    """One organisation/product count and where it goes in Halo."""

    organisation_id: int | None
    organisation_name: str
    product_id: int | None
    sku: str
    client_id: int | None
    client_name: str = ""
    licence_name: str = ""
    quantity: int = 0
    policy: str = RemovalPolicy.ZERO
    problem: str = ""  # a broken mapping: the pair fails until someone fixes it
    unmapped: str = ""  # not (or no longer) mapped: its licence gets the removal policy

    @property
    def key(self):
        return pair_key(self.client_id, self.sku) if self.client_id else None


@dataclass
class Row:
    pair: Pair
    action: str
    previous: int | None = None
    new: int | None = None
    licence_id: int | None = None
    message: str = ""
    payload: dict | None = None  # the licence fields to POST; None: nothing to write
    policy: str = ""
    outcome: str = ""  # set by `decide` (and by the runner once written)
    approved: bool = False
    error: object = None  # the last Halo error while writing it

    @property
    def writes(self):
        return self.payload is not None

    @property
    def key(self):
        return self.pair.key


def plan(
    pairs,
    licences,
    *,
    default_policy=RemovalPolicy.ZERO,
    protected=lambda key: False,
    remembered_policy=lambda ids: {},
):
    """The row of every pair, plus rows removing portal licences no pair claims any more.

    `protected(key)` keeps such a licence untouched (its mapping is broken, not removed).
    `remembered_policy(licence_ids)` answers the removal policy last applied to licences
    whose mapping is gone, so a deleted mapping's own policy still applies; others get
    `default_policy` (the tenant's).
    """
    owned, by_product_sku = defaultdict(list), defaultdict(list)
    for licence in licences:
        if licence.get("deleted") or not licence.get("client_id"):
            continue
        if (sku := owned_sku(licence)) is not None:
            owned[pair_key(licence["client_id"], sku)].append(licence)
        elif licence.get("product_sku"):
            by_product_sku[pair_key(licence["client_id"], licence["product_sku"])].append(licence)

    claimed = {pair.key for pair in pairs if pair.key}
    orphans = [
        Pair(
            organisation_id=None,
            organisation_name=found[0].get("client_name") or f"Halo client #{key[0]}",
            product_id=None,
            sku=owned_sku(found[0]),
            client_id=key[0],
            client_name=found[0].get("client_name") or "",
            policy=default_policy,
            unmapped=NOT_SYNCED,
        )
        for key, found in owned.items()
        if key not in claimed and not protected(key)
    ]
    removable = [
        licence["id"]
        for pair in [*pairs, *orphans]
        if pair.unmapped and pair.key
        for licence in owned.get(pair.key, [])
    ]
    policies = remembered_policy(removable) if removable else {}

    rows = [_plan_pair(p, owned.get(p.key, []), by_product_sku.get(p.key), policies) for p in pairs]
    for pair in orphans:
        row = _plan_pair(pair, owned[pair.key], None, policies)
        if row.writes or row.action == Action.SKIP:
            rows.append(row)
    return [row for row in rows if row is not None]


def _plan_pair(pair, found, hand_made, policies):
    if pair.problem:
        single = found[0] if len(found) == 1 else {}
        return Row(
            pair,
            Action.SKIP,
            previous=single.get("count"),
            licence_id=single.get("id"),
            message=pair.problem,
        )
    if len(found) > 1:
        ids = ", ".join(str(licence["id"]) for licence in found)
        return Row(
            pair,
            Action.SKIP,
            message=f"Halo has {len(found)} licences marked as the portal's for this pair "
            f"(ids {ids}): delete all but one in Halo, then sync again. Until then the portal "
            "writes none of them, so it never adds another.",
        )
    licence = found[0] if found else None
    if pair.unmapped:
        if licence is None:
            if not pair.quantity:
                return None  # nothing to bill and nothing to remove
            return Row(
                pair, Action.SKIP, new=pair.quantity, message=pair.unmapped, outcome=Outcome.SKIPPED
            )
        policy = policies.get(licence["id"]) or pair.policy
        row = _against(pair, licence, 0, policy)
        row.message = f"{pair.unmapped} {row.message}"
        return row
    if licence is None:
        if pair.quantity == 0:
            return Row(
                pair,
                Action.UNCHANGED,
                new=0,
                message="No licence in Halo and the count is 0: nothing to create.",
            )
        message = f"New licence with {pair.quantity}."
        if hand_made:
            ids = ", ".join(f"#{licence['id']}" for licence in hand_made)
            message += (
                f" Halo also has licence {ids} for {pair.sku} made by hand; the portal leaves "
                "it alone. Delete it in Halo if it bills the same thing."
            )
        return Row(
            pair,
            Action.CREATE,
            new=pair.quantity,
            message=message,
            payload=create_payload(pair),
            policy=pair.policy,
        )
    return _against(pair, licence, pair.quantity, pair.policy)


def create_payload(pair):
    return {
        "client_id": pair.client_id,
        "type": SUBSCRIPTION,
        "name": pair.licence_name or pair.sku,
        "count": pair.quantity,
        "product_sku": pair.sku,
        "vendor_product_sku": marker(pair.sku),
        "third_party_product": PORTAL_NAME,
        "notes": NOTE,
        "is_active": True,
    }


def _against(pair, licence, quantity, policy):
    """The row bringing an existing portal licence to `quantity`."""
    licence_id = licence["id"]
    count = int(licence.get("count") or 0)
    active = licence.get("is_active") is not False

    def row(action, new, message, payload=None):
        return Row(pair, action, count, new, licence_id, message, payload, policy)

    if quantity > 0:
        if not active:
            payload = {"id": licence_id, "count": quantity, "is_active": True}
            return row(Action.UPDATE, quantity, f"Reactivated, {count} → {quantity}.", payload)
        if count == quantity:
            return row(Action.UNCHANGED, quantity, f"Already {count} in Halo.")
        return row(
            Action.UPDATE, quantity, f"{count} → {quantity}.", {"id": licence_id, "count": quantity}
        )
    if policy == RemovalPolicy.LEAVE:
        return row(Action.LEAVE, count, f"Count is 0; the removal policy leaves it at {count}.")
    if policy == RemovalPolicy.DEACTIVATE:
        if not active:
            return row(Action.UNCHANGED, count, "Already inactive in Halo.")
        return row(
            Action.DEACTIVATE,
            count,
            f"Count is 0: deactivated (removal policy); its count stays {count}.",
            {"id": licence_id, "is_active": False},
        )
    if count == 0:
        return row(Action.UNCHANGED, 0, "Already 0 in Halo.")
    return row(
        Action.ZERO, 0, f"Count is 0: {count} → 0 (removal policy).", {"id": licence_id, "count": 0}
    )


@dataclass(frozen=True)
class Rules:
    """What decides whether a row is written now or held for staff approval."""

    dry_run: bool = False
    hold_all: bool = False  # the tenant approves scheduled runs first
    hold_percent: int | None = None
    hold_units: int | None = None
    # Rows approved in an earlier run, {pair key: (action, new count)}; None: not an approval.
    approved: dict | None = field(default=None)


def decide(rows, rules):
    """Give every row its outcome; rows left with outcome '' are for the runner to write.

    Skipped rows fail (a broken mapping, duplicate licences) unless the pair is simply not
    mapped; rows with nothing to write are done; the rest are written, previewed or held.
    """
    for row in rows:
        if row.outcome:
            continue
        if row.action == Action.SKIP:
            row.outcome = Outcome.FAILED
        elif not row.writes:
            row.outcome = Outcome.DONE
        elif reason := _hold_reason(row, rules):
            row.outcome, row.message = Outcome.HELD, f"{row.message} {reason}"
        else:
            row.approved = rules.approved is not None
            row.outcome = Outcome.PREVIEW if rules.dry_run else ""
    return rows


def _hold_reason(row, rules):
    if rules.approved is not None:
        wanted = rules.approved.get(row.key)
        if wanted == (row.action, row.new):
            return ""
        if wanted:
            return (
                f"Changed since it was approved ({wanted[0]} to {wanted[1]}): review and "
                "approve it again."
            )
        return "Not part of the approval: approve it to write it."
    if rules.hold_all:
        return "Waiting for approval: this tenant approves scheduled syncs before writing."
    return swing_reason(row, rules.hold_percent, rules.hold_units)


def swing_reason(row, percent, units):
    """Why a count moves too far to write without approval, or ''.

    A row is held when it moves by more than `percent` % *and* by more than `units` (a
    blank limit is ignored; with neither, nothing is held). A new licence moves from 0.
    """
    if percent is None and units is None:
        return ""
    before = row.previous or 0
    after = 0 if row.action == Action.DEACTIVATE else (row.new or 0)
    moved = abs(after - before)
    if units is not None and moved <= units:
        return ""
    if percent is not None and before and moved * 100 <= percent * before:
        return ""
    change = f"{(after - before) * 100 / before:+.0f}%" if before else "from nothing"
    limits = " and ".join(
        text
        for text in (
            f"{percent}%" if percent is not None else "",
            f"{units} units" if units is not None else "",
        )
        if text
    )
    return (
        f"Held: the count moves {before} → {after} ({change}), more than the {limits} "
        "allowed without approval."
    )
