"""Account-page tests: the test processor on, tasks inline, a customer with invoices of every
kind relative to the tenant's today."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.accounts import links
from billing.models import Invoice
from tests import factories


@pytest.fixture(autouse=True)
def _accounts_settings(settings, tasks_inline):
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.PORTAL_BASE_URL = "https://portal.example.com"


@pytest.fixture
def today(personas):
    return timezone.localdate(timezone=personas.tenant_a.tz)


def invoice(tenant, customer, days_overdue=None, amount="100.00", **fields):
    """An invoice of `customer`; `days_overdue` sets the due date that many days before the
    tenant's today (negative: due in the future) and leaves it open."""
    today = timezone.localdate(timezone=tenant.tz)
    amount = Decimal(amount)
    values = {
        "customer": customer,
        "total": amount,
        "amount_due": amount,
        "currency": "GBP",
        "invoice_date": today - timedelta(days=(days_overdue or 0) + 30),
        "due_date": today - timedelta(days=days_overdue or 0),
    } | fields
    return factories.invoice(tenant, **values)


def paid(tenant, customer, amount="80.00", **fields):
    return invoice(
        tenant,
        customer,
        amount=amount,
        amount_due=0,
        amount_paid=Decimal(amount),
        payment_status=Invoice.PaymentStatus.PAID,
        **fields,
    )


def account_url(customer):
    return links.account_path(customer)
