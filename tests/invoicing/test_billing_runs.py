"""Billing runs: drafts from usage and one-off charges, gapless numbers at issue, credit notes."""

import threading
from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections

from billing.invoicing.models import BillingRun, InvoiceCounter, OneOffCharge, PortalInvoice
from billing.invoicing.pdfs import PdfUnavailable, resolve_pdf
from billing.models import Invoice
from integrations.billing_sync.models import UsageSubmission
from tests import factories
from tests.invoicing.conftest import pdf_text


def october(tenant):
    return BillingRun.objects.create(
        tenant=tenant, period_start=date(2026, 10, 1), period_end=date(2026, 10, 31)
    )


def count(tenant, organisation, product, quantity):
    UsageSubmission.objects.record(
        tenant, [(organisation, product, quantity)], source=UsageSubmission.Source.ADMIN
    )


@pytest.fixture
def catalogue(tenant):
    factories.invoicing_settings(tenant, tax_rate=Decimal(20))
    edr = factories.product(tenant, name="Endpoint Protection", unit_price=Decimal("4.50"))
    backup = factories.product(tenant, name="Cloud Backup", unit_price=Decimal("12.00"))
    orgs = [factories.organisation(tenant, name=name) for name in ("Bravo", "Alpha", "Charlie")]
    count(tenant, orgs[0], edr, 10)
    count(tenant, orgs[0], backup, 2)
    count(tenant, orgs[1], edr, 3)
    count(tenant, orgs[2], edr, 0)  # nothing to bill
    return orgs, edr, backup


def test_a_run_drafts_one_invoice_per_organisation_from_usage_times_prices(tenant, catalogue):
    (bravo, alpha, _), edr, backup = catalogue
    run = october(tenant)
    assert run.build_drafts() == {"created": 2, "refreshed": 0, "removed": 0}

    drafts = {d.organisation: d for d in run.invoices.select_related("invoice")}
    assert set(drafts) == {alpha, bravo}
    bravo_invoice = drafts[bravo].invoice
    lines = list(bravo_invoice.lines.values_list("code", "quantity", "unit_price", "net_amount"))
    assert lines == [
        (backup.sku, 2, Decimal("12.00"), Decimal("24.00")),
        (edr.sku, 10, Decimal("4.50"), Decimal("45.00")),
    ]
    assert bravo_invoice.total == Decimal("82.80") and bravo_invoice.tax_total == Decimal("13.80")
    assert bravo_invoice.source == Invoice.Source.PORTAL and not bravo_invoice.posted
    assert all(d.is_draft and not d.number and d.sequence is None for d in drafts.values())


def test_one_off_charges_join_the_next_draft_and_rebuilding_follows_usage(tenant, catalogue):
    (bravo, alpha, charlie), edr, _ = catalogue
    charge = factories.one_off_charge(
        tenant, organisation=charlie, description="Onsite visit", unit_price=Decimal("80")
    )
    run = october(tenant)
    run.build_drafts()
    charlie_draft = run.invoices.get(organisation=charlie)
    assert list(charlie_draft.invoice.lines.values_list("description", flat=True)) == [
        "Onsite visit"
    ]
    charge.refresh_from_db()
    assert charge.invoice == charlie_draft.invoice

    count(tenant, alpha, edr, 0)
    count(tenant, bravo, edr, 11)
    assert run.build_drafts() == {"created": 0, "refreshed": 2, "removed": 1}
    assert not run.invoices.filter(organisation=alpha).exists()
    assert run.invoices.get(organisation=bravo).invoice.lines.get(code=edr.sku).quantity == 11
    assert run.invoices.get(organisation=charlie).invoice.lines.count() == 1


def test_numbers_are_allocated_at_issue_in_order_without_gaps(tenant, catalogue):
    run = october(tenant)
    run.build_drafts()
    issued = run.invoices.issue()
    assert [(d.organisation.name, d.number) for d in issued] == [
        ("Alpha", "INV-000001"),
        ("Bravo", "INV-000002"),
    ]
    assert run.invoices.issue() == []  # nothing left to issue, no number spent
    later = factories.portal_invoice(tenant)
    assert later.number == "INV-000003"
    invoice = later.invoice
    assert invoice.invoice_number == invoice.third_party_number == "INV-000003"
    assert invoice.posted and (invoice.due_date - invoice.invoice_date).days == 30


def test_a_failed_issue_spends_no_number(tenant, catalogue, monkeypatch):
    run = october(tenant)
    run.build_drafts()

    def explode(self, *args):
        raise RuntimeError("database went away mid-issue")

    with monkeypatch.context() as patch:
        patch.setattr(PortalInvoice, "_mark_issued", explode)
        with pytest.raises(RuntimeError):
            run.invoices.issue()
    assert InvoiceCounter.objects.filter(tenant=tenant, last_number__gt=0).count() == 0
    assert [d.number for d in run.invoices.issue()] == ["INV-000001", "INV-000002"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_staff_issuing_at_the_same_time_get_consecutive_numbers():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite's shared in-memory test database refuses threads")
    tenant = factories.tenant("race")
    drafts = [factories.portal_invoice(tenant, issue=False) for _ in range(6)]
    barrier = threading.Barrier(3)
    numbers = []

    def issue(batch):
        try:
            barrier.wait()
            numbers.extend(d.sequence for d in PortalInvoice.objects.filter(pk__in=batch).issue())
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=issue, args=([d.pk for d in drafts[i::3]],)) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert InvoiceCounter.objects.get(tenant=tenant).last_number == 6


def test_numbers_are_per_tenant_with_the_tenants_prefix(tenant):
    other = factories.tenant("other")
    factories.invoicing_settings(other, number_prefix="NW/")
    assert factories.portal_invoice(tenant).number == "INV-000001"
    assert factories.portal_invoice(other).number == "NW/000001"


def test_drafts_have_no_pdf_to_serve(tenant):
    draft = factories.portal_invoice(tenant, issue=False)
    with pytest.raises(PdfUnavailable, match="draft"):
        resolve_pdf(draft.invoice, "api")


def test_a_credit_note_cancels_an_issued_invoice(tenant):
    original = factories.portal_invoice(tenant)
    note = original.credit()
    original.refresh_from_db()

    assert original.status == PortalInvoice.Status.CREDITED and original.invoice.voided
    assert note.number == "INV-000002" and note.credit_note_of == original
    assert note.invoice.total == -original.invoice.total
    assert note.invoice.payment_status == Invoice.PaymentStatus.PAID
    with pytest.raises(ValidationError):
        original.credit()
    with pytest.raises(ValidationError):
        note.credit()
    note_text = pdf_text(resolve_pdf(note.invoice, "admin").content)
    assert "Credit note for INV-000001" in note_text and "Credits\n-£13.50" in note_text
    original_text = pdf_text(resolve_pdf(original.invoice, "admin").content)
    assert "Credited by INV-000002" in original_text


def test_overlapping_runs_are_refused(tenant):
    october(tenant)
    overlapping = BillingRun(
        tenant=tenant, period_start=date(2026, 10, 15), period_end=date(2026, 11, 14)
    )
    with pytest.raises(ValidationError, match="billed twice"):
        overlapping.full_clean()


def test_charges_on_issued_invoices_are_locked(tenant, catalogue):
    (bravo, *_), _, _ = catalogue
    charge = factories.one_off_charge(tenant, organisation=bravo)
    run = october(tenant)
    run.build_drafts()
    assert not OneOffCharge.objects.get(pk=charge.pk).is_locked
    run.invoices.issue()
    assert OneOffCharge.objects.get(pk=charge.pk).is_locked
