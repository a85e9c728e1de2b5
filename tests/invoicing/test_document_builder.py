"""What the PDF says, read back with pypdf: numbers, dates, lines and totals of both sources,
page breaks, determinism, non-Latin text, the pay link setting and the version key."""

import re
from datetime import date
from decimal import Decimal

import pytest

from billing.invoicing.document_builder import (
    RELATED,
    build_document,
    document_key,
    line_rows,
    source_fingerprint,
)
from billing.invoicing.models import InvoicingSettings
from billing.invoicing.pdfs import resolve_pdf, store_portal_pdf
from billing.models import Invoice
from billing.pdf import render_invoice_pdf
from portal.models import Organisation
from tests import factories
from tests.invoicing.conftest import halo_invoice, pdf_pages, pdf_text


def render(invoice):
    invoicing = InvoicingSettings.for_tenant(invoice.tenant)
    return render_invoice_pdf(build_document(invoice, invoicing, line_rows(invoice)))


def test_portal_invoice_pdf_shows_its_number_dates_lines_and_totals(tenant):
    factories.invoicing_settings(tenant, tax_rate=Decimal(20), tax_label="VAT")
    organisation = factories.organisation(tenant, name="Contoso Dental", external_ref="CD-1002")
    details = factories.portal_invoice(
        tenant,
        organisation=organisation,
        lines=[
            factories.invoice_line(quantity=Decimal(42)),
            factories.invoice_line(
                code="BKP-1TB", description="Cloud Backup 1TB", unit_price=Decimal("12.00")
            ),
            factories.invoice_line(
                code="",
                description="Onboarding: device enrolment",
                quantity=Decimal(12),
                unit_price=Decimal("15.00"),
                start_date=None,
                end_date=None,
            ),
        ],
    )
    invoice = details.invoice
    text = pdf_text(resolve_pdf(invoice, "admin").content)

    assert details.number == "INV-000001"
    assert text.count("INV-000001") >= 3  # facts, slip, footers
    for expected in (
        "Contoso Dental",
        "CD-1002",
        f"Invoice date\n{invoice.invoice_date:%-d %b %Y}",
        f"Due date\n{invoice.due_date:%-d %b %Y}",
        "1 Oct – 31 Oct 2026",
        "Endpoint Protection",
        "Cloud Backup 1TB",
        "Onboarding: device enrolment",
        "Recurring services\n£225.00",  # 42 x 4.50 + 3 x 12.00
        "One-off charges\n£180.00",
        "VAT at 20% on £405.00\n£81.00",
        "Total due\n£486.00",
    ):
        assert expected in text, expected
    assert invoice.total == Decimal("486.00") and invoice.tax_total == Decimal("81.00")
    assert "Amount due\n£486.00" in text


def test_halo_invoice_is_rendered_from_its_synced_data_in_the_same_layout(tenant):
    invoice = halo_invoice(
        tenant,
        lines=[
            factories.invoice_line(
                code="MDR-PRO", description="Managed Detection & Response", quantity=Decimal(7)
            ),
            factories.invoice_line(
                code="CREDIT",
                description="Goodwill credit",
                quantity=Decimal(1),
                unit_price=Decimal("-10.00"),
                start_date=None,
                end_date=None,
            ),
        ],
        third_party_number="AC-2026-0042",
        amount_paid=Decimal("10.00"),
    )
    factories.invoice_sync_settings(tenant, number_field="third_party")
    text = pdf_text(render(invoice))

    for expected in (
        "Invoice number\nAC-2026-0042",
        "Northwind Traders",
        "Invoice date\n1 Nov 2026",
        "Due date\n1 Dec 2026",
        "Managed Detection & Response",
        "Goodwill credit",
        "Recurring services\n£31.50",
        "Credits\n-£10.00",
        "Total due\n£25.80",  # 21.50 net + 20 % of 31.50 - 2.00 on the credit
        "Amount already paid\n-£10.00",
    ):
        assert expected in text, expected
    assert "Amount due\n£15.80" in text


def test_long_invoices_repeat_the_header_and_carry_subtotals_across_pages(tenant):
    lines = [
        factories.invoice_line(description=f"Seat licence {n:03d}", unit_price=Decimal(n))
        for n in range(1, 301)
    ]
    pages = pdf_pages(render(halo_invoice(tenant, lines=lines)))
    ledger = [page for page in pages if "Unit price" in page]
    summary = [page for page in pages[1:] if page not in ledger]

    assert len(ledger) >= 3 and len(summary) >= 2
    for number, page in enumerate(pages, 1):
        assert f"Page {number} of {len(pages)}" in page
    for page in summary:
        assert "Service\nSKU\nCategory\nQuantity\nAmount" in page  # header on every page
    carried, brought = [], []
    for page in ledger:
        assert "Description\nPeriod\nQty\nUnit price\nTax\nAmount" in page
        if match := re.search(r"Carried forward\n£([\d,.]+)\n£([\d,.]+)", page):
            carried.append(match.groups())
        if match := re.search(r"Brought forward\n£([\d,.]+)\n£([\d,.]+)", page):
            brought.append(match.groups())
    assert carried and carried == brought  # each page opens with what the last one closed on
    net = sum(3 * n for n in range(1, 301))
    assert f"Total\n£{net * 0.2:,.2f}\n£{net:,.2f}" in ledger[-1]


def test_rendering_twice_gives_identical_bytes(tenant):
    invoice = factories.portal_invoice(tenant).invoice
    first = render(invoice)
    assert render(Invoice.objects.get(pk=invoice.pk)) == first
    assert b"CreationDate" in first  # dated, but from the invoice, not the clock


def test_non_latin_names_survive_into_the_text(tenant):
    tenant.display_name = "Αθηνά IT Υπηρεσίες"
    tenant.save()
    organisation = factories.organisation(tenant, name="ООО Ромашка", external_ref="RM-1007")
    details = factories.portal_invoice(
        tenant,
        organisation=organisation,
        lines=[factories.invoice_line(description="Резервное копирование · Λογιστική")],
    )
    text = pdf_text(resolve_pdf(details.invoice, "admin").content)
    for name in ("ООО Ромашка", "Αθηνά IT Υπηρεσίες", "Резервное копирование · Λογιστική"):
        assert name in text


@pytest.mark.parametrize("setting", [False, True])
def test_pay_link_is_printed_only_when_the_tenant_turns_it_on(tenant, setting):
    factories.invoicing_settings(tenant, pay_link_in_pdf=setting)
    invoice = halo_invoice(tenant, pay_link_url="https://pay.example/acme/12")
    text = pdf_text(render(invoice))
    assert ("PAY ONLINE" in text) is setting
    assert ("https://pay.example/acme/12" in text) is setting


def test_no_pay_link_once_paid(tenant):
    factories.invoicing_settings(tenant, pay_link_in_pdf=True)
    invoice = halo_invoice(tenant, pay_link_url="https://pay.example/acme/12", amount_due=0)
    assert "PAY ONLINE" not in pdf_text(render(invoice))


def test_the_version_key_follows_the_data_not_its_representation(tenant):
    invoicing = InvoicingSettings.for_tenant(tenant)
    invoice = halo_invoice(tenant)

    def key():
        return document_key(invoice, invoicing, line_rows(invoice))

    first = key()
    [row] = line_rows(invoice)
    same = row._replace(quantity=Decimal("3.00"), unit_price=Decimal("4.5"))
    assert row.quantity.as_tuple() != same.quantity.as_tuple()
    assert document_key(invoice, invoicing, [same]) == first
    invoice.lines.update(quantity=4)
    assert key() != first
    invoice.lines.update(quantity=3)
    invoicing.tax_label = "GST"
    assert key() != first  # the header counts as much as the lines


def test_drafts_render_with_a_draft_label_and_no_number(tenant):
    organisation = Organisation.objects.create(tenant=tenant, name="Fabrikam", external_ref="F1")
    details = factories.portal_invoice(tenant, organisation=organisation, issue=False)
    text = pdf_text(render(details.invoice))
    assert "Draft – not issued" in text and "Invoice number\nDraft" in text


def test_a_changed_invoice_gets_a_new_version_and_keeps_the_old(tenant):
    invoice = halo_invoice(tenant, invoice_date=date(2026, 11, 1))
    first, _ = store_portal_pdf(invoice)
    invoice.lines.update(quantity=5)
    second, created = store_portal_pdf(invoice)
    assert created and second.number == 2 and second.sha256 != first.sha256
    assert "£22.50" in pdf_text(bytes(second.content))
    assert "£13.50" in pdf_text(bytes(first.content))


def test_a_document_reads_nothing_its_fingerprint_does_not_cover(tenant, django_assert_num_queries):
    """`source_fingerprint` hashes the invoice, its RELATED rows and its lines: a document
    built from them must read nothing else, or the PDF API would miss a change there."""
    factories.invoicing_settings(tenant, pay_link_in_pdf=True)
    factories.invoice_sync_settings(tenant)
    original = factories.portal_invoice(tenant)
    credit = original.credit()
    invoices = [original.invoice_id, credit.invoice_id, halo_invoice(tenant).pk]
    for invoice in Invoice.objects.select_related(*RELATED).filter(pk__in=invoices):
        rows = line_rows(invoice)
        with django_assert_num_queries(0):
            build_document(invoice, InvoicingSettings.for_tenant(invoice.tenant), rows)
        assert source_fingerprint(invoice.pk) is not None
    assert source_fingerprint(0) is None
