"""Payments tests: the test processor on, pay links unthrottled, tasks run inline, and a
Halo simulator over HTTP for what must land in Halo."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import InvoiceLine
from billing.payments.models import PaymentSettings
from billing.payments.processors.test import DECLINE, INSUFFICIENT_FUNDS, SUCCESS
from tests import factories
from tests.halo.conftest import make_connection

__all__ = ["DECLINE", "INSUFFICIENT_FUNDS", "SUCCESS"]


@pytest.fixture(autouse=True)
def _payments_settings(settings):
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.PAYMENTS_LINK_RATE = ""
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 2
    settings.HALO_READ_TIMEOUT = 2


@pytest.fixture(autouse=True)
def _payments_tasks_inline(tasks_inline):
    """Receipts and outbox deliveries run at once in every payments test."""


def connect(tenant, sim, **fields):
    """The tenant connected to the simulator with Payments on."""
    return make_connection(sim, tenant, payments=True, **fields)


@pytest.fixture
def tenant(db):
    tenant = factories.tenant("acme")
    tenant.support_email = "billing@acme.example"
    tenant.save()
    return tenant


def open_invoice(tenant, amount="120.00", **fields):
    """An unpaid invoice with two lines adding up to `amount`."""
    amount = Decimal(amount)
    fields = {
        "customer": fields.pop("customer", None) or factories.customer(tenant),
        "total": amount,
        "tax_total": (amount / 6).quantize(Decimal("0.01")),
        "amount_due": amount,
        "currency": "GBP",
        "invoice_date": timezone.localdate() - timedelta(days=3),
        "due_date": timezone.localdate() + timedelta(days=27),
    } | fields
    invoice = factories.invoice(tenant, **fields)
    InvoiceLine.objects.create(
        invoice=invoice, position=0, description="Managed endpoint protection", quantity=10,
        total=amount - Decimal("20.00"),
    )  # fmt: skip
    InvoiceLine.objects.create(invoice=invoice, position=1, description="Backup", total=20)
    return invoice


def pay_url(invoice):
    from billing.payments.models import PayPage

    return PayPage.for_invoice(invoice).get_absolute_url()


def card_form(page, number=SUCCESS, **extra):
    """The pay page's form as the browser would post it (fresh idempotency key included)."""
    form = page.context["form"]
    data = {"attempt": form["attempt"].value(), "email": "payer@example.com"}
    if "card_number" in form.fields:
        data |= {"card_name": "A Payer", "card_number": number, "card_expiry": "12/39"}
        data["card_cvc"] = "123"
    return data | extra


def settings_for(tenant, **fields):
    settings = PaymentSettings.for_tenant(tenant)
    for name, value in fields.items():
        setattr(settings, name, value)
    settings.save()
    return settings


@pytest.fixture
def browser_client():
    """A client that enforces CSRF like a browser does."""
    return Client(enforce_csrf_checks=True)
