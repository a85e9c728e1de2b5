"""The billing sync screens: mapping suggestions, Sync now, run page, approval, results."""

import csv
import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django_q.brokers import get_broker

from integrations.billing_sync import tasks
from integrations.billing_sync.models import (
    BillingSyncRun,
    HaloClientRecord,
    OrganisationMapping,
    ProductMapping,
    SyncResult,
)
from portal.health import tenant_health
from portal.models import Membership
from tests.billing_sync.conftest import take_queued
from tests.conftest import make_staff

TASK = "integrations.billing_sync.tasks.execute_run"


@pytest.fixture
def owner(world):
    get_broker().purge_queue()
    user = make_staff("owner", world.tenant, Membership.Role.OWNER)
    client = world.client = _client(user)
    world.user = user
    return client


def _client(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def run_queued(world):
    """What the worker does: run every queued billing sync task."""
    for task in take_queued(TASK):
        tasks.execute_run(*task["args"])


def test_refresh_and_accept_suggestions_in_bulk(world, owner):
    changelist = reverse("admin:billing_sync_organisationmapping_changelist")
    refreshed = owner.post(reverse("admin:billing_sync_refresh"), HTTP_REFERER=changelist)
    assert refreshed.status_code == 302 and refreshed.url == changelist
    for task in take_queued("integrations.billing_sync.tasks.refresh_halo"):  # the worker
        tasks.refresh_halo(*task["args"])
    assert HaloClientRecord.objects.filter(tenant=world.tenant, inactive=True).exists()
    page = owner.get(reverse("admin:billing_sync_organisationmapping_suggestions"))
    suggestions = page.context["suggestions"]
    reasons = {s.subject.external_ref: s.reason for s in suggestions}
    assert reasons["NW-1001"] == "CFVendorCustomerId = NW-1001"
    assert reasons["BY-1008"] == "same name"  # Halo spells it "Blue  Yonder AIRLINES"
    assert reasons["AL-1006"] == "same name"
    assert len(reasons) == 8
    accepted = [
        f"{s.subject.pk}:{s.record.pk}" for s in suggestions if s.subject.external_ref != "TT-1004"
    ]
    owner.post(page.wsgi_request.path, {"accept": accepted})
    mapped = OrganisationMapping.objects.filter(tenant=world.tenant)
    assert mapped.count() == 7
    again = owner.get(reverse("admin:billing_sync_organisationmapping_suggestions"))
    assert [s.subject.external_ref for s in again.context["suggestions"]] == ["TT-1004"]
    products = owner.get(reverse("admin:billing_sync_productmapping_suggestions"))
    assert {s.reason for s in products.context["suggestions"]} == {
        f"SKU {sku}" for sku in ("EDR-STD", "MDR-PRO", "BKP-1TB", "EML-SEC", "SAT-USR")
    }
    # The picker searches the cached Halo clients of this tenant only.
    found = owner.get(
        reverse("admin:autocomplete"),
        {
            "app_label": "billing_sync",
            "model_name": "organisationmapping",
            "field_name": "halo_client",
            "term": "contoso",
        },
    ).json()
    assert {r["text"].split(" (#")[0] for r in found["results"]} == {
        "Contoso Dental",
        "Contoso Pharmaceuticals",
    }


def test_mapping_to_a_client_already_taken_is_a_form_error(world, owner):
    world.map_all()
    taken = OrganisationMapping.objects.get(organisation__external_ref="NW-1001")
    free = world.org("CD-1002")
    OrganisationMapping.objects.filter(organisation=free).delete()
    response = owner.post(
        reverse("admin:billing_sync_organisationmapping_add"),
        {"organisation": free.pk, "halo_client": taken.halo_client_id, "removal_policy": ""},
    )
    assert response.status_code == 200
    assert "already mapped to this Halo client" in response.content.decode()


def test_sync_now_queues_returns_at_once_and_refuses_a_second(world, owner):
    world.map_all()
    world.set_counts(world.every_pair())
    response = owner.post(reverse("admin:billing_sync_billingsyncrun_sync_now"))
    run = BillingSyncRun.objects.get(tenant=world.tenant)
    assert response.status_code == 302
    assert response.url == reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk])
    assert run.status == BillingSyncRun.Status.QUEUED and run.requested_by == world.user
    page = owner.get(response.url)
    assert b'http-equiv="refresh"' in page.content  # follows progress while it runs
    second = owner.post(reverse("admin:billing_sync_billingsyncrun_sync_now"), follow=True)
    assert "already queued" in second.content.decode()
    assert BillingSyncRun.objects.filter(tenant=world.tenant).count() == 1
    run_queued(world)
    run.refresh_from_db()
    assert run.status == BillingSyncRun.Status.SUCCEEDED
    page = owner.get(response.url).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert "40 create" in page and "Halo requests" in page
    assert world.halo_counts() == world.wanted()


def test_preview_then_approve_selected_then_all_through_the_admin(world, owner):
    world.map_all()
    world.set_counts(world.every_pair())
    owner.post(reverse("admin:billing_sync_billingsyncrun_preview"))
    run_queued(world)
    preview = BillingSyncRun.objects.get(tenant=world.tenant)
    assert preview.status == BillingSyncRun.Status.PREVIEWED
    page = owner.get(reverse("admin:billing_sync_billingsyncrun_change", args=[preview.pk]))
    assert page.context["can_approve"] and page.context["attention_count"] == 40
    chosen = list(preview.results.values_list("pk", flat=True)[:2])
    approve = reverse("admin:billing_sync_billingsyncrun_approve", args=[preview.pk])
    owner.post(approve, {"rows": chosen, "selected": "1", "confirm": "yes"})
    run_queued(world)
    assert len(world.portal_licences()) == 2
    owner.post(approve, {"all": "1", "confirm": "yes"})
    run_queued(world)
    assert world.halo_counts() == world.wanted()
    last = BillingSyncRun.objects.filter(tenant=world.tenant).first()
    assert last.trigger == BillingSyncRun.Trigger.APPROVAL and last.approves == preview


def test_viewer_sees_runs_but_cannot_start_or_approve(world, owner):
    world.map_all()
    world.set_counts(world.every_pair())
    preview = world.sync(BillingSyncRun.Trigger.PREVIEW, dry_run=True)
    viewer = _client(make_staff("viewer", world.tenant, Membership.Role.VIEWER))
    page = viewer.get(reverse("admin:billing_sync_billingsyncrun_change", args=[preview.pk]))
    assert page.status_code == 200 and not page.context["can_approve"]
    assert viewer.post(reverse("admin:billing_sync_billingsyncrun_sync_now")).status_code == 403
    approve = reverse("admin:billing_sync_billingsyncrun_approve", args=[preview.pk])
    assert viewer.post(approve, {"all": "1", "confirm": "yes"}).status_code == 403
    assert BillingSyncRun.objects.count() == 1


def test_results_filter_and_export_csv(world, owner):
    world.map_all()
    world.set_counts(world.every_pair())
    run = world.sync()
    url = reverse("admin:billing_sync_syncresult_changelist")
    listed = owner.get(
        url, {"run__id__exact": run.pk, "product__id__exact": world.product("EDR-STD").pk}
    )
    assert listed.status_code == 200 and listed.context["cl"].result_count == 8
    outcome = owner.get(url, {"outcome": "failed"})
    assert outcome.context["cl"].result_count == 0
    ids = list(run.results.values_list("pk", flat=True))
    export = owner.post(url, {"action": "export_csv", "_selected_action": ids})
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert len(rows) == 40 and rows[0]["action"] == "create" and rows[0]["licence_id"]


def test_admin_home_shows_last_run_and_failures(world, owner):
    world.map_all()
    world.set_counts(world.every_pair())
    never = {row.label: row for row in tenant_health(world.tenant)}["Last billing sync"]
    assert never.status == "idle"
    item = ProductMapping.objects.get(product__sku="MDR-PRO").halo_item
    world.sim.control.records("Item", [{"id": item.halo_id, "inactive": True}])
    world.sync()
    rows = {row.label: row for row in tenant_health(world.tenant)}
    assert rows["Last billing sync"].status == "error"
    assert rows["Last billing sync"].text.startswith("8 pair(s) failed")
    assert (
        rows["Billing mappings"].status == "error" and "1 broken" in rows["Billing mappings"].text
    )
    home = owner.get(reverse("admin:index")).content.decode()
    assert "Last billing sync" in home and "8 pair(s) failed" in home


def test_failed_run_emails_the_owners(world, owner, mailoutbox):
    world.map_all()
    world.set_counts(world.every_pair())
    client = OrganisationMapping.objects.get(organisation__external_ref="NW-1001").halo_client
    world.sim.control.records("Client", [{"id": client.halo_id, "inactive": True}])
    run = world.sync()
    [mail] = mailoutbox
    assert mail.to == ["owner@example.com"] and "5 pair(s) failed" in mail.body
    assert reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk]) in mail.body
    world.settings.email_owners = False
    world.settings.save()
    world.sync()
    assert len(mailoutbox) == 1


def test_sync_billing_command_prints_a_summary_and_fails_on_failed_pairs(world, capsys):
    world.map_all()
    world.set_counts(world.every_pair())
    call_command("sync_billing", world.tenant.slug, "--dry-run")
    out = capsys.readouterr().out
    assert "Preview ready" in out and "Create" in out and "40" in out
    assert BillingSyncRun.objects.get().dry_run and world.licence_writes() == 0
    call_command("sync_billing", world.tenant.slug)
    assert world.halo_counts() == world.wanted()
    client = OrganisationMapping.objects.get(organisation__external_ref="NW-1001").halo_client
    world.sim.control.records("Client", [{"id": client.halo_id, "inactive": True}])
    with pytest.raises(CommandError) as failed:
        call_command("sync_billing", world.tenant.slug)
    assert failed.value.returncode == 1
    assert "FAILED: Northwind Traders / EDR-STD" in capsys.readouterr().out
    BillingSyncRun.objects.claim(world.tenant, trigger=BillingSyncRun.Trigger.MANUAL)
    with pytest.raises(CommandError) as busy:
        call_command("sync_billing", world.tenant.slug)
    assert busy.value.returncode == 2 and "already queued" in str(busy.value)
    BillingSyncRun.objects.filter(tenant=world.tenant).update(
        status=BillingSyncRun.Status.INTERRUPTED
    )
    world.connection.billing_sync = False
    world.connection.save()
    with pytest.raises(CommandError) as could_not:
        call_command("sync_billing", world.tenant.slug)
    assert could_not.value.returncode == 3


def test_settings_page_shows_the_next_scheduled_sync(world, owner):
    from integrations.billing_sync.models import BillingSyncSettings

    url = reverse("admin:billing_sync_billingsyncsettings_change", args=[world.settings.pk])
    form = {
        "client_match_field": "CFVendorCustomerId",
        "removal_policy": "zero",
        "schedule": "daily",
        "schedule_hour": "2",
        "schedule_day": "1",
        "email_owners": "on",
    }
    assert owner.post(url, form).status_code == 302
    page = owner.get(url).content.decode()
    assert "02:00 Europe/London" in page  # the next scheduled sync, in the tenant's zone
    assert BillingSyncSettings.objects.get(pk=world.settings.pk).schedule == "daily"
    # One row per tenant: Add opens it.
    assert owner.get(reverse("admin:billing_sync_billingsyncsettings_add"))["Location"] == url


def test_result_rows_name_organisation_product_and_licence(world):
    world.map_all()
    world.set_counts(world.every_pair())
    run = world.sync()
    row = run.results.get(organisation__external_ref="NW-1001", product__sku="EDR-STD")
    assert row.halo_client_name == "Northwind Traders" and row.licence_id
    assert row.outcome == SyncResult.Outcome.DONE and row.message.startswith("New licence")
