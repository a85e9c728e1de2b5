"""Invoicing fixtures: a branded tenant, invoices of both sources, PDF text, and a Halo
simulator over HTTP with the demo catalogue mapped (for export and the Halo PDF source)."""

import io
from datetime import date
from decimal import Decimal

import pytest
from pypdf import PdfReader

from billing.models import Invoice, InvoiceLine
from integrations.billing_sync.models import (
    OrganisationMapping,
    ProductMapping,
    UsageSubmission,
)
from integrations.billing_sync.runner import refresh_from_halo
from integrations.halo import HaloClient
from portal import demo
from portal.models import ApiToken, Organisation, Product, Tenant
from tests import factories
from tests.halo.conftest import make_connection


def branded_tenant(slug, **fields):
    return Tenant.objects.create(
        name=f"Tenant {slug}",
        slug=slug,
        display_name=f"{slug.title()} IT Services Ltd",
        address="Unit 4, Riverside Works\nLeeds LS1 4AB",
        support_email=f"billing@{slug}.example",
        **fields,
    )


@pytest.fixture
def tenant(db):
    return branded_tenant("alpha")


def halo_invoice(tenant, lines=None, **fields):
    """A Halo invoice as invoice sync stores it (Halo's amounts, lines in Halo's order)."""
    lines = lines if lines is not None else [factories.invoice_line()]
    net = sum(line.quantity * line.unit_price for line in lines)
    tax = sum(line.quantity * line.unit_price * line.tax_rate / 100 for line in lines)
    total = (net + tax).quantize(Decimal("0.01"))
    defaults = {
        "customer": factories.customer(tenant, name="Northwind Traders"),
        "invoice_date": date(2026, 11, 1),
        "due_date": date(2026, 12, 1),
        "currency": "GBP",
        "total": total,
        "tax_total": tax.quantize(Decimal("0.01")),
        "amount_due": total,
    }
    invoice = factories.invoice(tenant, **(defaults | fields))
    for position, line in enumerate(lines):
        line.invoice, line.position = invoice, position
        line.net_amount = (line.quantity * line.unit_price).quantize(Decimal("0.01"))
    InvoiceLine.objects.bulk_create(lines)
    return Invoice.objects.get(pk=invoice.pk)


def pdf_pages(content):
    """The text of each page, as pypdf extracts it."""
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def pdf_text(content):
    return "\n".join(pdf_pages(content))


def pdf_secret(tenant):
    return ApiToken.issue(tenant, ApiToken.Purpose.PDF, "Halo PDF link")[1]


@pytest.fixture(autouse=True)
def _fast_halo(settings):
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 2
    settings.HALO_CONNECT_TIMEOUT = 2
    settings.HALO_READ_TIMEOUT = 2
    settings.INVOICE_PDF_HALO_BUDGET = 1


@pytest.fixture
def world(db, sim):
    """A tenant connected to the simulator, the demo catalogue mapped to its clients and
    items (as staff accept the suggestions), every pair counted, 20 % VAT."""
    tenant = branded_tenant("alpha")
    connection = make_connection(sim, tenant)
    organisations = [
        Organisation.objects.create(tenant=tenant, name=name, external_ref=ref)
        for name, ref in demo.ORGANISATIONS
    ]
    products = [
        Product.objects.create(tenant=tenant, name=name, sku=sku, unit_price=Decimal(price))
        for name, sku, price in demo.PRODUCTS
    ]
    refresh_from_halo(tenant, HaloClient(connection))
    for model in (OrganisationMapping, ProductMapping):
        model.objects.bulk_create(
            model(tenant=tenant, **{model.SUBJECT_FIELD: s.subject, model.RECORD_FIELD: s.record})
            for s in model.objects.suggestions(tenant)
        )
    rows = [
        (organisation, product, 1 + (i * 7 + j * 3) % 30)
        for i, organisation in enumerate(organisations)
        for j, product in enumerate(products)
    ]
    UsageSubmission.objects.record(tenant, rows, source=UsageSubmission.Source.ADMIN)
    factories.invoicing_settings(tenant, tax_rate=Decimal(20), tax_label="VAT")
    return tenant
