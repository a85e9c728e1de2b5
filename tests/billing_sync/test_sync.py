"""Billing sync against the Halo simulator over HTTP: the issue's required behaviours."""

import pytest
from django.utils import timezone

from integrations.billing_sync import engine, runner
from integrations.billing_sync.models import (
    BillingSyncRun,
    OrganisationMapping,
    ProductMapping,
    RemovalPolicy,
    SyncResult,
)
from tests import factories
from tests.billing_sync.conftest import World, actions

Action, Outcome, Status = SyncResult.Action, SyncResult.Outcome, BillingSyncRun.Status


def client_id(world, ref):
    return OrganisationMapping.objects.get(organisation__external_ref=ref).halo_client.halo_id


def licence_of(world, ref, sku):
    [found] = world.portal_licences()[(client_id(world, ref), sku)]
    return found


def test_first_run_creates_one_licence_per_pair(mapped):
    assert OrganisationMapping.objects.filter(tenant=mapped.tenant).count() == 8
    run = mapped.sync()
    assert run.status == Status.SUCCEEDED, run.error
    assert actions(run) == {Action.CREATE: 40}
    assert mapped.halo_counts() == mapped.wanted()
    assert run.halo_requests == sum(run.halo_calls.values()) == 4
    assert run.halo_calls["POST /SoftwareLicence"] == 1  # 40 licences in one array
    created = licence_of(mapped, "NW-1001", "EDR-STD")
    assert created["vendor_product_sku"] == "hpp:EDR-STD"
    assert created["product_sku"] == "EDR-STD"
    assert created["name"] == "Endpoint Protection"  # the mapped Halo item's name
    assert created["type"] == 1


def test_rerun_makes_zero_writes(mapped):
    mapped.sync()
    writes = mapped.licence_writes()
    run = mapped.sync()
    assert run.status == Status.SUCCEEDED
    assert actions(run) == {Action.UNCHANGED: 40}
    assert mapped.licence_writes() == writes
    assert "POST /SoftwareLicence" not in run.halo_calls


def test_changed_counts_update_only_those_licences(mapped):
    mapped.sync()
    before = {r["id"]: r for r in mapped.licences()}
    mapped.set_counts({("NW-1001", "EDR-STD"): 99, ("CD-1002", "BKP-1TB"): 3})
    run = mapped.sync()
    assert actions(run) == {Action.UPDATE: 2, Action.UNCHANGED: 38}
    assert run.halo_calls["POST /SoftwareLicence"] == 1
    after = {r["id"]: r for r in mapped.licences()}
    changed = {
        (r["client_id"], r["vendor_product_sku"]) for i, r in after.items() if r != before[i]
    }
    assert changed == {
        (client_id(mapped, "NW-1001"), "hpp:EDR-STD"),
        (client_id(mapped, "CD-1002"), "hpp:BKP-1TB"),
    }
    assert mapped.halo_counts() == mapped.wanted()
    updated = run.results.get(action=Action.UPDATE, product_sku="EDR-STD")
    assert updated.new == 99 and updated.previous != 99 and updated.licence_id


def test_removal_policies(mapped):
    mapped.sync()
    ProductMapping.objects.filter(product__sku="BKP-1TB").update(removal_policy=RemovalPolicy.LEAVE)
    mapped.settings.removal_policy = RemovalPolicy.DEACTIVATE
    mapped.settings.save()
    OrganisationMapping.objects.filter(organisation__external_ref="NW-1001").update(
        removal_policy=RemovalPolicy.ZERO
    )
    kept = licence_of(mapped, "CD-1002", "BKP-1TB")
    mapped.set_counts(
        {
            ("NW-1001", "EDR-STD"): 0,  # the organisation's own policy: zero
            ("CD-1002", "EDR-STD"): 0,  # the tenant's: deactivate
            ("CD-1002", "BKP-1TB"): 0,  # the product's: leave
        }
    )
    run = mapped.sync()
    assert actions(run) == {
        Action.ZERO: 1,
        Action.DEACTIVATE: 1,
        Action.LEAVE: 1,
        Action.UNCHANGED: 37,
    }
    zeroed = licence_of(mapped, "NW-1001", "EDR-STD")
    assert (zeroed["count"], zeroed["is_active"]) == (0, True)
    deactivated = licence_of(mapped, "CD-1002", "EDR-STD")
    assert deactivated["is_active"] is False and deactivated["count"] > 0
    assert licence_of(mapped, "CD-1002", "BKP-1TB") == kept
    # A count back above 0 reactivates the licence.
    mapped.set_counts({("CD-1002", "EDR-STD"): 4})
    mapped.sync()
    back = licence_of(mapped, "CD-1002", "EDR-STD")
    assert (back["count"], back["is_active"]) == (4, True)


def test_deleted_mapping_applies_its_own_removal_policy(mapped):
    mapping = OrganisationMapping.objects.get(organisation__external_ref="TT-1004")
    mapping.removal_policy = RemovalPolicy.DEACTIVATE
    mapping.save()
    mapped.sync()
    tailspin = mapping.halo_client.halo_id
    mapping.delete()
    ProductMapping.objects.get(product__sku="SAT-USR").delete()  # the tenant's policy: zero
    run = mapped.sync()
    owned = mapped.portal_licences()
    assert all(not owned[(tailspin, sku)][0]["is_active"] for sku in engine_skus(mapped))
    sat = [found[0] for (client, sku), found in owned.items() if sku == "SAT-USR"]
    assert all(r["count"] == 0 for r in sat if r["client_id"] != tailspin)
    assert run.results.filter(action=Action.DEACTIVATE).count() == 5
    assert run.results.filter(action=Action.ZERO).count() == 7  # SAT-USR, Tailspin's excepted
    # Tailspin's counts are listed as not mapped (not skipped silently).
    skipped = run.results.filter(outcome=Outcome.SKIPPED)
    assert set(skipped.values_list("organisation_name", flat=True)) == {"Tailspin Toys"}
    assert "not mapped to a Halo client" in skipped.first().message
    unmapped_product = run.results.get(organisation_name="Northwind Traders", product_sku="SAT-USR")
    assert (
        unmapped_product.action == Action.ZERO
        and "not mapped to a Halo item" in unmapped_product.message
    )
    assert mapped.sync().counts.get(Action.DEACTIVATE) is None  # done once


def engine_skus(world):
    return [p.sku for p in world.tenant.products.all()]


def test_hand_made_licences_are_never_touched(mapped):
    hand_made = [r for r in mapped.licences() if engine.owned_sku(r) is None]
    assert any(r.get("product_sku") == "EDR-STD" for r in hand_made)  # the demo's trap
    mapped.sync()
    mapped.set_counts({(ref, sku): 0 for ref, sku in mapped.every_pair()})
    OrganisationMapping.objects.filter(organisation__external_ref="WW-1005").delete()
    mapped.sync()
    still = {r["id"]: r for r in mapped.licences()}
    assert all(still[r["id"]] == r for r in hand_made)
    first = BillingSyncRun.objects.filter(tenant=mapped.tenant).order_by("pk").first()
    note = first.results.get(organisation__external_ref="WW-1005", product_sku="EDR-STD")
    assert "made by hand" in note.message


def test_drift_marks_the_mapping_broken_and_skips_its_pairs(mapped):
    mapped.sync()
    northwind = client_id(mapped, "NW-1001")
    mapped.sim.control.records("Client", [{"id": northwind, "inactive": True}])
    item = ProductMapping.objects.get(product__sku="MDR-PRO").halo_item.halo_id
    mapped.sim.session().delete(f"{mapped.sim.api_url}/Item/{item}", timeout=5).raise_for_status()
    before = mapped.portal_licences()
    mapped.set_counts({("NW-1001", "EDR-STD"): 77, ("CD-1002", "EDR-STD"): 66})
    run = mapped.sync()
    assert run.status == Status.FAILED
    failed = run.results.filter(outcome=Outcome.FAILED)
    assert failed.count() == 5 + 7  # Northwind's pairs, and MDR-PRO's of the others
    assert all(r.action == Action.SKIP for r in failed)
    message = failed.get(organisation__external_ref="NW-1001", product_sku="EDR-STD").message
    assert "is inactive in Halo" in message and "reactivate" in message
    gone = failed.get(organisation__external_ref="CD-1002", product_sku="MDR-PRO").message
    assert "no longer exists in Halo" in gone
    assert mapped.portal_licences()[(northwind, "EDR-STD")] == before[(northwind, "EDR-STD")]
    assert licence_of(mapped, "CD-1002", "EDR-STD")["count"] == 66
    assert OrganisationMapping.objects.get(organisation__external_ref="NW-1001").problem
    # Fixed in Halo: the next run picks it up.
    mapped.sim.control.records("Client", [{"id": northwind, "inactive": False}])
    mapped.sync()
    assert licence_of(mapped, "NW-1001", "EDR-STD")["count"] == 77


def test_preview_writes_nothing_and_matches_the_real_run(mapped):
    def rows(run):
        return sorted(
            run.results.values_list("halo_client_id", "product_sku", "action", "previous", "new")
        )

    for change in ({}, {("NW-1001", "EDR-STD"): 1, ("TT-1004", "SAT-USR"): 0}):
        mapped.set_counts(change)
        writes = mapped.licence_writes()
        preview = mapped.sync(BillingSyncRun.Trigger.PREVIEW, dry_run=True)
        assert preview.status == Status.PREVIEWED and preview.dry_run
        assert mapped.licence_writes() == writes
        real = mapped.sync()
        assert rows(preview) == rows(real)
        assert set(preview.results.values_list("outcome", flat=True)) <= {
            Outcome.PREVIEW,
            Outcome.DONE,
        }


def test_approval_required_holds_scheduled_runs_until_staff_approve(mapped):
    mapped.settings.approval_required = True
    mapped.settings.save()
    held = mapped.sync(BillingSyncRun.Trigger.SCHEDULE)
    assert held.status == Status.AWAITING_APPROVAL and held.held == 40
    assert mapped.licence_writes() == 0
    chosen = list(held.results.values_list("pk", flat=True)[:3])
    approval, _ = runner.approve(held, chosen, background=False)
    approval.refresh_from_db()
    assert approval.counts == {Action.CREATE: 3, Outcome.HELD: 37}
    assert len(mapped.portal_licences()) == 3
    rest, _ = runner.approve(held, background=False)
    rest.refresh_from_db()
    assert rest.status == Status.SUCCEEDED
    assert mapped.halo_counts() == mapped.wanted()


def test_threshold_holds_big_swings_even_without_approval(mapped):
    mapped.sync()
    mapped.settings.hold_percent, mapped.settings.hold_units = 50, 10
    mapped.settings.save()
    before = licence_of(mapped, "NW-1001", "EDR-STD")["count"]
    mapped.set_counts({("NW-1001", "EDR-STD"): before + 100, ("CD-1002", "EDR-STD"): 2})
    run = mapped.sync()
    assert run.status == Status.AWAITING_APPROVAL
    held = run.results.get(outcome=Outcome.HELD)
    assert (held.product_sku, held.previous, held.new) == ("EDR-STD", before, before + 100)
    assert "more than the 50% and 10 units" in held.message
    assert licence_of(mapped, "NW-1001", "EDR-STD")["count"] == before
    assert licence_of(mapped, "CD-1002", "EDR-STD")["count"] == 2  # small: written
    # Changed again after it was held: approving the old row writes nothing.
    mapped.set_counts({("NW-1001", "EDR-STD"): before + 200})
    stale, _ = runner.approve(run, background=False)
    stale.refresh_from_db()
    assert stale.results.get(outcome=Outcome.HELD).message.endswith("approve it again.")
    assert licence_of(mapped, "NW-1001", "EDR-STD")["count"] == before
    fresh, _ = runner.approve(stale, background=False)
    fresh.refresh_from_db()
    assert fresh.status == Status.SUCCEEDED
    assert licence_of(mapped, "NW-1001", "EDR-STD")["count"] == before + 200


@pytest.mark.parametrize(
    "faults",
    [
        [{"kind": "500", "times": 2}],
        [{"kind": "429", "times": 2}],
        [{"kind": "drop_after", "times": 2}],  # created in Halo, answer lost
        [{"kind": "drop_before", "times": 1}, {"kind": "500", "after": 2}],
    ],
    ids=["500", "429", "lost-answer", "dropped-and-500"],
)
def test_transient_faults_still_end_in_the_exact_state(mapped, monkeypatch, faults):
    monkeypatch.setattr(runner, "BATCH", 10)
    for fault in faults:
        mapped.sim.control.add_fault(path="SoftwareLicence", method="POST", **fault)
    mapped.sim.control.add_fault(kind="500", path="SoftwareLicence", method="GET")
    run = mapped.sync()
    assert run.status == Status.SUCCEEDED, run.error
    assert mapped.halo_counts() == mapped.wanted()  # one licence per pair, exact counts
    mapped.set_counts({("NW-1001", "EDR-STD"): 55, ("CD-1002", "MDR-PRO"): 0})
    for fault in faults:
        mapped.sim.control.add_fault(path="SoftwareLicence", method="POST", **fault)
    assert mapped.sync().status == Status.SUCCEEDED
    assert mapped.halo_counts() == mapped.wanted()


def test_failures_beyond_the_retry_budget_fail_those_pairs_and_the_next_run_converges(
    mapped, monkeypatch, settings
):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.2
    monkeypatch.setattr(runner, "BATCH", 10)
    mapped.sim.control.add_fault(
        kind="500", path="SoftwareLicence", method="POST", after=1, times=100_000
    )
    run = mapped.sync()
    assert run.status == Status.FAILED
    assert run.counts == {Action.CREATE: 10, Outcome.FAILED: 30}
    message = run.results.filter(outcome=Outcome.FAILED).first().message
    assert "Internal Server Error" in message and "POST /SoftwareLicence" in message
    assert "licences" in message  # what was attempted
    mapped.sim.control.clear_faults()
    again = mapped.sync()
    assert again.counts == {Action.UNCHANGED: 10, Action.CREATE: 30}
    assert mapped.halo_counts() == mapped.wanted()


def test_one_bad_pair_fails_alone(mapped, monkeypatch):
    """Halo refuses one licence (400): only its pair fails, the rest of its array lands."""
    monkeypatch.setattr(runner, "BATCH", 16)
    real_payload = engine.create_payload

    def refused_for_fabrikam(pair):
        payload = real_payload(pair)
        if pair.organisation_name == "Fabrikam Legal" and pair.sku == "EML-SEC":
            payload["client_id"] = 999_999  # Halo answers 400: no such client
        return payload

    monkeypatch.setattr(engine, "create_payload", refused_for_fabrikam)
    run = mapped.sync()
    assert run.status == Status.FAILED
    failed = run.results.get(outcome=Outcome.FAILED)
    assert (failed.organisation_name, failed.product_sku) == ("Fabrikam Legal", "EML-SEC")
    assert "Halo rejected the data sent to create licence" in failed.message
    assert "400 on POST /SoftwareLicence" in failed.message
    assert run.counts[Action.CREATE] == 39
    assert len(mapped.portal_licences()) == 39


def test_killed_run_is_taken_over_later_and_converges(mapped, monkeypatch):
    class Killed(BaseException):
        """The worker process dying: nothing after it runs."""

    monkeypatch.setattr(runner, "BATCH", 10)
    real_write = runner.Runner._write_batch
    written = []

    def dies_after_two(self, batch, unknown):
        if len(written) == 2:
            raise Killed
        written.append(batch)
        return real_write(self, batch, unknown)

    monkeypatch.setattr(runner.Runner, "_write_batch", dies_after_two)
    with pytest.raises(Killed):
        mapped.sync()
    monkeypatch.setattr(runner.Runner, "_write_batch", real_write)
    dead = BillingSyncRun.objects.get(tenant=mapped.tenant)
    assert dead.status == Status.RUNNING
    assert len(mapped.portal_licences()) == 20
    # While its heartbeat is fresh it still holds the tenant.
    assert runner.start(mapped.tenant, BillingSyncRun.Trigger.COMMAND) == (None, dead)
    BillingSyncRun.objects.filter(pk=dead.pk).update(
        heartbeat=timezone.now() - timezone.timedelta(hours=1)
    )
    run = mapped.sync()
    assert run.status == Status.SUCCEEDED
    assert run.counts == {Action.UNCHANGED: 20, Action.CREATE: 20}
    assert mapped.halo_counts() == mapped.wanted()
    dead.refresh_from_db()
    assert dead.status == Status.INTERRUPTED and "next run" in dead.error


def test_two_portal_licences_for_a_pair_are_reported_not_tripled(mapped):
    northwind = client_id(mapped, "NW-1001")
    twin = {
        "client_id": northwind,
        "name": "Endpoint Protection",
        "type": 1,
        "count": 3,
        "vendor_product_sku": engine.marker("EDR-STD"),
    }
    mapped.sim.control.records("SoftwareLicence", [twin, twin | {"count": 4}])
    run = mapped.sync()
    row = run.results.get(organisation__external_ref="NW-1001", product_sku="EDR-STD")
    assert (row.action, row.outcome) == (Action.SKIP, Outcome.FAILED)
    assert "delete all but one" in row.message
    assert len(mapped.portal_licences()[(northwind, "EDR-STD")]) == 2
    assert run.counts[Action.CREATE] == 39


def test_no_halo_connection_is_a_clear_run_error(world):
    world.connection.active = False
    world.connection.save()
    run = world.sync()
    assert run.status == Status.ERROR
    assert "no active Halo connection" in run.error


def test_many_refused_licences_stay_inside_the_rate_budget(mapped, monkeypatch):
    monkeypatch.setattr(runner, "BATCH", 10)
    monkeypatch.setattr(runner, "MAX_SPLITS", 3)
    real_payload = engine.create_payload
    monkeypatch.setattr(
        engine, "create_payload", lambda pair: real_payload(pair) | {"client_id": 999_999}
    )
    run = mapped.sync()
    assert run.counts == {Outcome.FAILED: 40}
    # 4 arrays, 3 splits of 2 more requests each: 10 POSTs, not one per licence.
    assert run.halo_calls["POST /SoftwareLicence"] == 4 + 3 * 2
    assert "stops trying them one by one" in run.results.last().message


def test_missing_write_permission_stops_the_run_with_what_to_do(mapped, sim):
    app = sim.control.add_application(
        permissions="read:customers read:items read:softwarelicensing"
    )
    mapped.connection.client_id = app["client_id"]
    mapped.connection.set_secret(app["client_secret"])
    mapped.connection.save()
    run = mapped.sync()
    assert run.status == Status.ERROR
    assert "edit:softwarelicensing" in run.error
    assert run.halo_calls["POST /SoftwareLicence"] == 1  # not once per array or licence
    assert run.counts == {Outcome.FAILED: 40}
    assert run.results.first().message.startswith("Not written: Halo denied permission")


def licence_reads(mapped):
    return mapped.sim.control.requests()["by_endpoint"].get("GET /SoftwareLicence", 0)


def test_halo_answering_only_the_last_record_costs_one_read_per_run(mapped, monkeypatch):
    """halo-api.md §3 variant: a many-record POST answered with the last record only. The
    ids of the others are learned from one read after every array, not per array or client."""
    monkeypatch.setattr(runner, "BATCH", 10)
    mapped.sim.control.variants(post_response="last")
    run = mapped.sync()
    assert run.status == Status.SUCCEEDED, run.error
    assert mapped.halo_counts() == mapped.wanted()
    assert run.halo_calls["POST /SoftwareLicence"] == 4
    assert licence_reads(mapped) == 2  # planning, then one read for every unknown id
    ours = {r["id"] for r in mapped.licences() if r.get("vendor_product_sku")}
    results = run.results.filter(action=Action.CREATE)
    assert results.count() == 40
    assert {r.licence_id for r in results} == ours


def test_lost_answers_to_create_arrays_are_settled_by_one_read(mapped, monkeypatch):
    """Two create arrays whose answer is lost (Halo created them) and one answered 500
    (it did not): one read settles all three, and only the one that did not land is sent
    again. No per-client re-reads, no duplicates."""
    monkeypatch.setattr(runner, "BATCH", 10)
    control = mapped.sim.control
    control.add_fault(kind="drop_after", path="SoftwareLicence", method="POST", times=2)
    control.add_fault(kind="500", path="SoftwareLicence", method="POST", after=1)
    run = mapped.sync()
    assert run.status == Status.SUCCEEDED, run.error
    assert mapped.halo_counts() == mapped.wanted()  # one licence per pair
    assert run.halo_calls["POST /SoftwareLicence"] == 4 + 1  # the 500's array, once more
    assert licence_reads(mapped) == 2  # planning, then one read to settle
    assert all(r.licence_id for r in run.results.filter(action=Action.CREATE))


def test_a_second_tenant_on_the_same_halo_never_removes_the_firsts_licences(mapped, sim):
    """Tenant B's sync sees tenant A's portal licences on clients B does not map: they are
    A's, so no removal policy of B's touches them (B once zeroed all of them)."""
    first = mapped.sync()
    assert first.status == Status.SUCCEEDED
    before = mapped.halo_counts()
    other = World.build(factories.tenant("bravo"), sim)
    other.settings.removal_policy = "zero"
    other.settings.save()
    run = other.sync()
    assert run.status == Status.SUCCEEDED, run.error
    assert mapped.halo_counts() == before
    assert not run.results.exclude(action=Action.SKIP).filter(halo_client_id__isnull=False)
