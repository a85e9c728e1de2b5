"""The planning engine on its own: pairs + Halo's licences → rows (no database, no HTTP)."""

from integrations.billing_sync import engine
from integrations.billing_sync.engine import Pair, Rules
from integrations.billing_sync.models import RemovalPolicy, SyncResult

Action, Outcome = SyncResult.Action, SyncResult.Outcome


def pair(quantity=5, sku="EDR-STD", client_id=7, **fields):
    defaults = {
        "organisation_id": 1,
        "organisation_name": "Northwind",
        "product_id": 2,
        "sku": sku,
        "client_id": client_id,
        "client_name": "Northwind Traders",
        "licence_name": "Endpoint Protection",
        "quantity": quantity,
    }
    return Pair(**(defaults | fields))


def licence(id, count, sku="EDR-STD", client_id=7, owned=True, **fields):
    record = {"id": id, "client_id": client_id, "count": count, "is_active": True, "name": sku}
    if owned:
        record["vendor_product_sku"] = engine.marker(sku)
    return record | fields


def plan_one(p, licences=(), **options):
    rows = engine.plan([p], list(licences), **options)
    assert len(rows) == 1, rows
    return rows[0]


def test_missing_licence_is_created_with_the_portal_marker():
    row = plan_one(pair(12))
    assert (row.action, row.previous, row.new) == (Action.CREATE, None, 12)
    assert row.payload == {
        "client_id": 7,
        "type": 1,
        "name": "Endpoint Protection",
        "count": 12,
        "product_sku": "EDR-STD",
        "vendor_product_sku": "hpp:EDR-STD",
        "third_party_product": "Halo Partner Portal",
        "notes": engine.NOTE,
        "is_active": True,
    }


def test_equal_count_writes_nothing_and_different_count_sends_only_the_count():
    assert plan_one(pair(5), [licence(3, 5)]).payload is None
    row = plan_one(pair(9), [licence(3, 5)])
    assert (row.action, row.previous, row.new, row.licence_id) == (Action.UPDATE, 5, 9, 3)
    assert row.payload == {"id": 3, "count": 9}


def test_marker_is_matched_case_insensitively_and_by_client():
    found = licence(3, 5, vendor_product_sku="HPP:edr-std")
    assert plan_one(pair(5), [found]).action == Action.UNCHANGED
    elsewhere = engine.plan([pair(5)], [licence(4, 5, client_id=8)])
    assert [(r.action, r.pair.client_id) for r in elsewhere] == [
        (Action.CREATE, 7),
        (Action.ZERO, 8),
    ]


def test_hand_made_licence_is_never_written_even_with_the_same_sku_and_name():
    hand_made = licence(9, 40, owned=False, product_sku="EDR-STD", name="Endpoint Protection")
    row = plan_one(pair(3), [hand_made])
    assert row.action == Action.CREATE and row.payload["count"] == 3
    assert "#9" in row.message and "leaves it alone" in row.message
    # And never removed: it is nobody's orphan.
    assert engine.plan([], [hand_made]) == []


def test_inactive_licence_is_reactivated():
    row = plan_one(pair(4), [licence(3, 4, is_active=False)])
    assert row.action == Action.UPDATE
    assert row.payload == {"id": 3, "count": 4, "is_active": True}


def test_removal_policies_when_the_count_drops_to_zero():
    existing = [licence(3, 6)]
    zero = plan_one(pair(0), existing)
    assert (zero.action, zero.new, zero.payload) == (Action.ZERO, 0, {"id": 3, "count": 0})
    off = plan_one(pair(0, policy=RemovalPolicy.DEACTIVATE), existing)
    assert (off.action, off.payload) == (Action.DEACTIVATE, {"id": 3, "is_active": False})
    leave = plan_one(pair(0, policy=RemovalPolicy.LEAVE), existing)
    assert (leave.action, leave.payload) == (Action.LEAVE, None)
    # Already removed: nothing more to write.
    assert plan_one(pair(0), [licence(3, 0)]).action == Action.UNCHANGED
    gone = [licence(3, 6, is_active=False)]
    assert plan_one(pair(0, policy=RemovalPolicy.DEACTIVATE), gone).action == Action.UNCHANGED
    # No licence and nothing to bill: nothing is created.
    assert plan_one(pair(0)).action == Action.UNCHANGED


def test_licence_of_a_removed_mapping_gets_the_remembered_or_default_policy():
    orphan = licence(3, 6, client_name="Old Client")
    rows = engine.plan([], [orphan], default_policy=RemovalPolicy.ZERO)
    assert [(r.action, r.licence_id, r.pair.sku) for r in rows] == [(Action.ZERO, 3, "EDR-STD")]
    assert rows[0].message.startswith(engine.NOT_SYNCED)
    remembered = engine.plan(
        [], [orphan], remembered_policy=lambda ids: dict.fromkeys(ids, RemovalPolicy.DEACTIVATE)
    )
    assert remembered[0].action == Action.DEACTIVATE
    # Nothing to write (left, or already 0): no row at all.
    assert engine.plan([], [orphan], default_policy=RemovalPolicy.LEAVE) == []
    assert engine.plan([], [licence(3, 0)]) == []


def test_broken_mapping_fails_its_pair_and_protects_its_licences():
    broken = pair(9, problem="Halo client “Northwind” (#7) is inactive in Halo.")
    row = plan_one(broken, [licence(3, 5)])
    assert (row.action, row.payload, row.previous) == (Action.SKIP, None, 5)
    engine.decide([row], Rules())
    assert row.outcome == Outcome.FAILED and "inactive" in row.message
    other = licence(4, 2, sku="BKP-1TB")
    assert engine.plan([], [other], protected=lambda key: key[0] == 7) == []


def test_unmapped_pair_is_listed_and_its_old_licence_removed():
    unmapped = pair(4, client_id=None, unmapped="Northwind is not mapped.")
    row = plan_one(unmapped)
    engine.decide([row], Rules())
    assert (row.action, row.outcome) == (Action.SKIP, Outcome.SKIPPED)
    product_unmapped = pair(4, unmapped="Endpoint Protection is not mapped.")
    row = plan_one(product_unmapped, [licence(3, 4)])
    assert (row.action, row.new) == (Action.ZERO, 0)
    assert engine.plan([pair(0, client_id=None, unmapped="x")], []) == []


def test_two_portal_licences_for_one_pair_are_reported_and_no_third_is_made():
    row = plan_one(pair(5), [licence(3, 5), licence(8, 1)])
    assert (row.action, row.payload) == (Action.SKIP, None)
    assert "ids 3, 8" in row.message
    engine.decide([row], Rules())
    assert row.outcome == Outcome.FAILED


def test_deleted_licences_do_not_count():
    assert plan_one(pair(5), [licence(3, 5, deleted=True)]).action == Action.CREATE


def test_decide_previews_holds_and_passes_rows():
    rows = engine.plan([pair(5, sku="A"), pair(5, sku="B")], [licence(3, 5, sku="A")])
    engine.decide(rows, Rules(dry_run=True))
    assert [r.outcome for r in rows] == [Outcome.DONE, Outcome.PREVIEW]
    rows = engine.plan([pair(5, sku="B")], [])
    engine.decide(rows, Rules(hold_all=True))
    assert rows[0].outcome == Outcome.HELD and "approves scheduled" in rows[0].message
    rows = engine.plan([pair(5, sku="B")], [])
    engine.decide(rows, Rules())
    assert rows[0].outcome == ""  # for the runner to write


def test_threshold_needs_both_percentage_and_units_to_be_exceeded():
    def held(previous, new, percent, units):
        row = plan_one(pair(new), [licence(3, previous)] if previous is not None else [])
        return bool(engine.swing_reason(row, percent, units))

    assert held(10, 30, 50, 5)  # +200 %, +20 units
    assert not held(10, 14, 50, 5)  # +40 %
    assert not held(1, 4, 50, 5)  # +300 % but only 3 units
    assert held(100, 0, 50, None)  # -100 %
    assert held(None, 500, None, 100)  # a new licence moves from 0
    assert not held(10, 30, None, None)
    row = plan_one(pair(0, policy=RemovalPolicy.DEACTIVATE), [licence(3, 80)])
    assert "80 → 0" in engine.swing_reason(row, 50, 10)


def test_approval_writes_only_rows_still_as_approved():
    rows = engine.plan([pair(9, sku="A"), pair(9, sku="B"), pair(9, sku="C")], [])
    approved = {
        engine.pair_key(7, "a"): (Action.CREATE, 9),
        engine.pair_key(7, "b"): (Action.CREATE, 4),  # the count changed since approval
    }
    engine.decide(rows, Rules(approved=approved, hold_percent=1, hold_units=1))
    assert [r.outcome for r in rows] == ["", Outcome.HELD, Outcome.HELD]
    assert rows[0].approved
    assert "approve it again" in rows[1].message
    assert "Not part of the approval" in rows[2].message
