"""The read-only invoice and customer admin, the auto-pay rules, health rows and demo step."""

from datetime import timedelta
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

from billing.models import AutoPayRule, Contract, Invoice, InvoiceLine
from integrations.invoice_sync.models import InvoiceSyncRun, InvoiceSyncSettings, SyncState
from portal import demo
from tests import factories
from tests.halo.conftest import make_connection
from tests.invoice_sync.conftest import sync

INVOICES = "admin:billing_invoice_changelist"


def listed(client, **params):
    page = client.get(reverse(INVOICES), params)
    assert page.status_code == 200
    return {invoice.halo_id for invoice in page.context["cl"].result_list}


def test_invoice_filters(personas):
    tenant = personas.tenant_a
    today = timezone.localdate()
    rule = factories.autopay_rule(tenant)
    unpaid = factories.invoice(tenant, due_date=today + timedelta(days=5))
    overdue = factories.invoice(tenant, due_date=today - timedelta(days=1))
    partly = factories.invoice(tenant, payment_status="partly_paid", autopay_rule=rule)
    paid = factories.invoice(tenant, payment_status="paid", amount_due=Decimal(0))
    voided = factories.invoice(tenant, voided=True)
    deleted = factories.invoice(tenant, deleted_in_halo=True)
    client = personas.client(personas.owner_a)

    assert listed(client, status="unpaid") == {unpaid.halo_id, overdue.halo_id, partly.halo_id}
    assert listed(client, status="overdue") == {overdue.halo_id}
    assert listed(client, status="paid") == {paid.halo_id}
    assert listed(client, status="voided") == {voided.halo_id}
    assert listed(client, status="deleted") == {deleted.halo_id}
    assert listed(client, autopay="yes") == {partly.halo_id}
    assert overdue.halo_id in listed(client, autopay="no")


def test_invoice_detail_shows_its_lines_read_only(personas):
    invoice = factories.invoice(personas.tenant_a, reference="March services")
    InvoiceLine.objects.create(invoice=invoice, description="Endpoint Protection", quantity=12)
    client = personas.client(personas.owner_a)
    page = client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    content = page.content.decode()
    assert "Endpoint Protection" in content and "March services" in content
    assert 'name="_save"' not in content
    assert client.get(reverse("admin:billing_invoice_add")).status_code == 403


def test_autopay_rule_offers_the_subtypes_halo_uses_and_flags_invoices(personas):
    tenant = personas.tenant_a
    Contract.objects.create(tenant=tenant, halo_id=9, subtype_id=1, subtype_name="Managed Services")
    Contract.objects.create(tenant=personas.tenant_b, halo_id=9, subtype_id=3, subtype_name="B's")
    invoice = factories.invoice(tenant, contract_halo_id=9, contract_subtype_id=1)
    client = personas.client(personas.owner_a)
    url = reverse("admin:billing_autopayrule_add")

    choices = dict(client.get(url).context["adminform"].form.fields["halo_subtype_id"].choices)
    assert choices == {1: "Managed Services (1)"}

    assert client.post(url, {"halo_subtype_id": 1, "enabled": "on"}).status_code == 302
    rule = AutoPayRule.objects.get(tenant=tenant)
    assert rule.subtype_name == "Managed Services"
    invoice.refresh_from_db()
    assert invoice.autopay_rule == rule


def test_customers_list_their_unpaid_invoices(personas):
    customer = factories.customer(personas.tenant_a, name="Contoso Dental")
    factories.invoice(personas.tenant_a, customer=customer)
    factories.invoice(personas.tenant_a, customer=customer, payment_status="paid")
    page = personas.client(personas.owner_a).get(
        reverse("admin:billing_customer_changelist"), {"q": "contoso"}
    )
    [row] = page.context["cl"].result_list
    assert row.unpaid_count == 1


def test_health_rows_follow_the_last_run_and_the_webhook(personas):
    tenant = personas.tenant_a
    client = personas.client(personas.owner_a)
    home = client.get(reverse("admin:index")).content.decode()
    assert "Not run yet" in home and "Not registered" in home

    run = factories.sync_run(tenant)
    run.finish(InvoiceSyncRun.Status.ERROR, error="Halo denied permission to list invoices")
    assert "Halo denied permission" in client.get(reverse("admin:index")).content.decode()

    factories.sync_run(tenant).finish(InvoiceSyncRun.Status.SUCCEEDED)
    factories.invoice(tenant)
    settings_row = InvoiceSyncSettings.for_tenant(tenant)
    settings_row.webhook_registered = timezone.now()
    settings_row.save()
    home = client.get(reverse("admin:index")).content.decode()
    assert "1 invoices, 1 unpaid" in home and "no delivery yet" in home


def test_demo_step_sets_up_invoice_sync_and_queues_the_initial_sync(
    sim, db, django_capture_on_commit_callbacks, queued
):
    from integrations.invoice_sync import demo as invoice_demo

    tenant = demo.ensure_tenant()
    make_connection(sim, tenant)
    context = demo.DemoContext(tenant=tenant, user=None, halo_url=sim.base_url)
    with django_capture_on_commit_callbacks(execute=True):
        invoice_demo.invoice_sync(context)
        invoice_demo.invoice_sync(context)  # idempotent

    settings_row = InvoiceSyncSettings.objects.get(tenant=tenant)
    assert settings_row.number_field == "third_party"
    assert AutoPayRule.objects.get(tenant=tenant).subtype_name == "Managed Services"
    assert queued[0] == (
        "integrations.invoice_sync.tasks.sync_tenant",
        tenant.pk,
        "initial",
        "demo",
    )

    # What the worker then does: Managed Services invoices come in flagged.
    sync(tenant, "initial")
    assert Invoice.objects.filter(tenant=tenant, autopay_rule__isnull=False).exists()
    assert SyncState.objects.get(tenant=tenant).initial_completed
    with django_capture_on_commit_callbacks(execute=True):
        invoice_demo.invoice_sync(context)
    assert len(queued) == 2  # nothing more once the initial sync has completed
