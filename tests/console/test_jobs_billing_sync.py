"""The billing sync job page: its state from real runs, its buttons, Retry failed pairs."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.billing_sync import runner
from integrations.billing_sync.models import (
    BillingSyncRun,
    BillingSyncSettings,
    ProductMapping,
    SyncResult,
    UsageCount,
    UsageSubmission,
)
from tests.billing_sync.conftest import actions

PAGE = reverse("admin:job_billing_sync")


def break_item(world, sku, inactive=True):
    """Deactivate (or reactivate) in Halo the item `sku` is mapped to."""
    item = ProductMapping.objects.get(tenant=world.tenant, product__sku=sku).halo_item
    world.sim.control.records("Item", [{"id": item.halo_id, "inactive": inactive}])


@pytest.fixture
def half_failed(mapped):
    """A first sync in which the 8 MDR-PRO pairs failed (its Halo item is inactive)."""
    break_item(mapped, "MDR-PRO")
    run = mapped.sync()
    assert run.status == BillingSyncRun.Status.FAILED and run.failed == 8
    return mapped


def test_retry_writes_only_the_pairs_whose_latest_result_failed(half_failed):
    world = half_failed
    before = world.halo_counts()
    assert not any(sku == "MDR-PRO" for _, sku in before)
    # Meanwhile other counts moved: a full sync would write them, a retry must not.
    moved = {pair: q + 5 for pair, q in world.wanted().items() if pair[1] == "EDR-STD"}
    world.set_counts(moved)
    break_item(world, "MDR-PRO", inactive=False)
    failed = SyncResult.objects.failed_pairs(world.tenant)
    assert len(failed) == 8

    retry, active = runner.retry_failed(world.tenant, background=False)
    retry.refresh_from_db()

    assert active is None and retry.trigger == BillingSyncRun.Trigger.RETRY
    assert retry.status == BillingSyncRun.Status.SUCCEEDED
    assert actions(retry) == {"create": 8}
    assert {(r.organisation_id, r.product_id) for r in retry.results.all()} == failed
    after = world.halo_counts()
    wanted = world.wanted()
    for pair, count in after.items():
        if pair[1] == "MDR-PRO":
            assert count == wanted[pair]  # written now
        else:
            assert count == before[pair]  # untouched, EDR-STD's new counts included
    assert all(after[pair] != q for pair, q in moved.items())
    assert SyncResult.objects.failed_pairs(world.tenant) == set()
    # Nothing failed any more: no retry starts.
    assert runner.retry_failed(world.tenant, background=False) == (None, None)
    # The next full sync still plans every pair, and writes the moved ones.
    full = world.sync()
    assert actions(full)["update"] == len(moved)
    assert world.halo_counts() == world.wanted()


def test_a_pair_fixed_by_a_later_full_sync_is_not_retried(half_failed):
    break_item(half_failed, "MDR-PRO", inactive=False)
    half_failed.sync()
    assert SyncResult.objects.failed_pairs(half_failed.tenant) == set()


def test_previews_do_not_change_a_pairs_latest_result(half_failed):
    preview = half_failed.sync(BillingSyncRun.Trigger.PREVIEW, dry_run=True)
    assert preview.results.filter(outcome=SyncResult.Outcome.FAILED).count() == 8
    break_item(half_failed, "MDR-PRO", inactive=False)
    half_failed.sync(BillingSyncRun.Trigger.PREVIEW, dry_run=True)  # would write them now
    assert len(SyncResult.objects.failed_pairs(half_failed.tenant)) == 8


# -- the page -----------------------------------------------------------------------------


def test_page_shows_settings_schedule_mappings_and_last_run(half_failed, owner):
    world = half_failed
    settings = BillingSyncSettings.for_tenant(world.tenant)
    settings.schedule, settings.schedule_hour = settings.Schedule.DAILY, 3
    settings.hold_percent = 50
    settings.save()
    page = owner.get(PAGE)
    assert page.status_code == 200
    text = page.content.decode()
    last = BillingSyncRun.objects.get(tenant=world.tenant)
    assert page.context["last"] == last and page.context["failed_pairs"] == 8
    assert "Daily at 03:00 Europe/London" in text
    assert "03:00 (Europe/London)" in page.context["next_run"]
    assert "Moving by more than 50%" in text
    assert reverse("admin:billing_sync_billingsyncsettings_change", args=[settings.pk]) in text
    assert "1 broken product mapping(s)" in text
    assert "Retry 8 failed pairs" in text
    assert reverse("admin:billing_sync_billingsyncrun_retry_failed") in text


def test_state_per_pair_latest_count_licence_and_result(half_failed, owner):
    world = half_failed
    page = owner.get(PAGE)
    pairs = page.context["pairs"]["page"]
    assert pairs.paginator.count == 40
    by_pair = {(c.organisation.external_ref, c.product.sku): c for c in pairs}
    created = by_pair[("NW-1001", "EDR-STD")]
    licence = world.portal_licences()
    halo_client = created.organisation.halo_mapping.halo_client.halo_id
    assert created.halo_licence_id == licence[(halo_client, "EDR-STD")][0]["id"]
    assert created.latest.outcome == SyncResult.Outcome.DONE
    failed = by_pair[("NW-1001", "MDR-PRO")]
    assert failed.latest.outcome == SyncResult.Outcome.FAILED and failed.halo_licence_id is None
    assert "inactive in Halo" in failed.latest.message
    # Filter and search.
    only_failed = owner.get(PAGE, {"outcome": "failed"}).context["pairs"]["page"]
    assert {c.product.sku for c in only_failed} == {"MDR-PRO"} and len(only_failed) == 8
    searched = owner.get(PAGE, {"q": "NW-1001"}).context["pairs"]["page"]
    assert {c.organisation.external_ref for c in searched} == {"NW-1001"}
    assert len(searched) == 5


def test_state_is_the_latest_real_result_after_a_retry(half_failed, owner):
    world = half_failed
    break_item(world, "MDR-PRO", inactive=False)
    runner.retry_failed(world.tenant, background=False)
    page = owner.get(PAGE, {"q": "NW-1001"}).context["pairs"]["page"]
    states = {c.product.sku: c.latest for c in page}
    retry = BillingSyncRun.objects.filter(tenant=world.tenant).first()
    assert states["MDR-PRO"].run == retry and states["MDR-PRO"].outcome == "done"
    assert states["EDR-STD"].run != retry  # its latest result is still the first sync's
    assert owner.get(PAGE, {"outcome": "failed"}).context["pairs"]["page"].paginator.count == 0


def test_five_thousand_pairs_page_in_constant_queries(mapped, owner):
    """5,000 pairs with two runs of results: the page's queries do not grow with them."""
    world = mapped
    from portal.models import Organisation

    orgs = Organisation.objects.bulk_create(
        Organisation(tenant=world.tenant, name=f"Bulk {i:04d}", external_ref=f"B-{i:04d}")
        for i in range(992)
    )
    products = list(world.tenant.products.all())
    UsageCount.objects.bulk_create(
        UsageCount(tenant=world.tenant, organisation=o, product=p, quantity=1)
        for o in orgs
        for p in products
    )
    assert UsageCount.objects.filter(tenant=world.tenant).count() == 5000
    for _ in range(2):
        run = BillingSyncRun.objects.create(
            tenant=world.tenant, trigger="command", status=BillingSyncRun.Status.FAILED
        )
        SyncResult.objects.bulk_create(
            SyncResult(
                run=run,
                organisation_id=c.organisation_id,
                product_id=c.product_id,
                organisation_name="x",
                product_sku="x",
                action="update",
                outcome="failed",
                message="Halo said no.",
            )
            for c in UsageCount.objects.filter(tenant=world.tenant)
        )

    def queries(params):
        with CaptureQueriesContext(connection) as captured:
            response = owner.get(PAGE, params)
        assert response.status_code == 200
        return len(captured), response

    few, _ = queries({"q": "NW-1001"})
    many, response = queries({"page": "7"})
    filtered, failed = queries({"outcome": "failed", "page": "100"})
    assert response.context["pairs"]["page"].paginator.count == 5000
    assert len(response.context["pairs"]["page"]) == 50
    assert failed.context["pairs"]["page"].paginator.count == 5000
    assert many == few == filtered
    assert response.context["failed_pairs"] == 5000


def test_buttons_preview_then_sync_now_then_retry(
    half_failed, owner, tasks_inline, requests_commit
):
    world = half_failed
    page = owner.get(PAGE)
    labels = [b.label for b in page.context["buttons"]]
    assert labels == ["Preview", "Sync now", "Retry 8 failed pairs"]
    owner.post(page.context["buttons"][0].url)
    preview = BillingSyncRun.objects.filter(tenant=world.tenant).first()
    assert preview.dry_run and preview.status == BillingSyncRun.Status.PREVIEWED
    break_item(world, "MDR-PRO", inactive=False)
    response = owner.post(reverse("admin:billing_sync_billingsyncrun_retry_failed"))
    retry = BillingSyncRun.objects.filter(tenant=world.tenant).first()
    assert response.url == reverse("admin:billing_sync_billingsyncrun_change", args=[retry.pk])
    assert retry.trigger == "retry" and retry.status == BillingSyncRun.Status.SUCCEEDED
    assert retry.requested_by == world.user and retry.results.count() == 8
    assert world.halo_counts() == world.wanted()
    nothing = owner.post(reverse("admin:billing_sync_billingsyncrun_retry_failed"), follow=True)
    assert "nothing to retry" in nothing.content.decode()
    assert nothing.redirect_chain[-1][0] == PAGE


def test_approval_asks_first_with_the_units_and_the_money(
    mapped, owner, tasks_inline, requests_commit
):
    world = mapped
    preview = world.sync(BillingSyncRun.Trigger.PREVIEW, dry_run=True)
    page = owner.get(PAGE)
    assert page.context["to_approve"] == preview and page.context["approvable"] == 40
    approve = reverse("admin:billing_sync_billingsyncrun_approve", args=[preview.pk])
    asked = owner.post(approve, {"all": "1"})
    assert asked.status_code == 200 and BillingSyncRun.objects.count() == 1
    facts = dict(asked.context["facts"])
    units = sum(world.wanted().values())
    assert facts["Licences changed in Halo"] == "40"
    assert facts["Units, all pairs together"] == f"+{units}"
    prices = {p.sku: p.unit_price for p in world.tenant.products.all()}
    worth = sum(q * prices[sku] for (_, sku), q in world.wanted().items())
    assert facts["Change per billing period at the products' prices"] == f"£{worth:,.2f}"
    assert "40 create" in asked.context["lead"]
    assert world.portal_licences() == {}  # nothing written yet
    owner.post(approve, {"all": "1", "confirm": "yes"})
    assert world.halo_counts() == world.wanted()


def test_viewer_sees_the_page_but_no_buttons_and_cannot_press_them(half_failed, viewer):
    page = viewer.get(PAGE)
    assert page.status_code == 200 and not page.context["can_edit"]
    assert reverse("admin:billing_sync_billingsyncrun_retry_failed") not in page.content.decode()
    assert viewer.post(reverse("admin:billing_sync_billingsyncrun_retry_failed")).status_code == 403
    assert BillingSyncRun.objects.count() == 1


def test_another_tenant_sees_only_its_own(half_failed, outsider):
    page = outsider.get(PAGE)
    assert page.status_code == 200
    assert page.context["last"] is None and page.context["failed_pairs"] == 0
    assert page.context["pairs"]["page"].paginator.count == 0
    assert "Northwind" not in page.content.decode()
    # Another tenant's run cannot be approved from here.
    run = BillingSyncRun.objects.get()
    approve = reverse("admin:billing_sync_billingsyncrun_approve", args=[run.pk])
    assert outsider.post(approve, {"all": "1", "confirm": "yes"}).status_code == 404


def test_usage_changes_do_not_count_as_results(mapped, owner):
    """A pair counted but never synced shows 'never synced' and filters as such."""
    UsageSubmission.objects.all()  # counts exist, no run yet
    never = owner.get(PAGE, {"outcome": "never"}).context["pairs"]["page"]
    assert never.paginator.count == 40 and all(c.latest is None for c in never)


def test_a_count_changed_since_the_last_sync_shows_what_halo_has(mapped, owner):
    mapped.sync()
    mapped.set_counts({("NW-1001", "EDR-STD"): 99})
    page = owner.get(PAGE, {"q": "NW-1001"})
    pairs = {c.product.sku: c for c in page.context["pairs"]["page"]}
    changed, same = pairs["EDR-STD"], pairs["MDR-PRO"]
    assert changed.quantity == 99 and changed.behind and changed.latest.new != 99
    assert f"Halo: {changed.latest.new}" in page.content.decode()
    assert not same.behind and same.change == f"create {same.quantity}"
