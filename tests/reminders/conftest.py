"""Reminders tests: a tenant with reminders on, invoices due on chosen days, and a clock
passed in (`at(day, hour)` in the tenant's time zone), never the wall clock."""

from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing.reminders.models import ReminderSettings
from tests import factories

BASE_URL = "https://portal.example.com"


@pytest.fixture(autouse=True)
def _reminder_settings(settings):
    settings.PORTAL_BASE_URL = BASE_URL
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.DEFAULT_FROM_EMAIL = "Halo Partner Portal <portal@example.com>"


@pytest.fixture
def tenant(db):
    tenant = factories.tenant("acme")
    tenant.display_name = "Acme IT"
    tenant.support_email = "billing@acme.example"
    tenant.accent_colour = "#7A1FA2"
    tenant.time_zone = "Europe/London"
    tenant.save()
    ReminderSettings.objects.create(tenant=tenant, enabled=True)
    return tenant


#: The due date of the invoices in these tests: any fixed day works, the clock is passed in.
DUE = timezone.localdate() + timedelta(days=10)


def at(day, hour=10, minute=0, tz="Europe/London"):
    """An instant on `day` (a date, or days from DUE) at `hour` in the time zone `tz`."""
    if isinstance(day, int):
        day = DUE + timedelta(days=day)
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(tz))


def open_invoice(tenant, due=DUE, amount="120.00", **fields):
    if "customer" in fields:
        customer = fields.pop("customer")
    else:
        customer = factories.customer(tenant, billing_first_name="Dana", billing_last_name="Lee")
    amount = Decimal(amount)
    fields = {
        "customer": customer,
        "total": amount,
        "amount_due": amount,
        "currency": "GBP",
        "invoice_date": due - timedelta(days=30),
        "due_date": due,
    } | fields
    return factories.invoice(tenant, **fields)
