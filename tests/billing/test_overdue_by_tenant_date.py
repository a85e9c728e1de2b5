"""Overdue is decided by the tenant's date, as the ageing is: on the pay page's status, in
the invoice list's filter and in the account page's statement alike (a tenant far east of
the server is a day ahead of it for most of the day)."""

from datetime import UTC, date, datetime

import pytest
from django.utils import timezone

from billing.models import Invoice
from tests import factories

pytestmark = pytest.mark.django_db
NOON_UTC = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 2 Dec, 02:00 in Kiritimati (UTC+14)


@pytest.fixture
def far_east(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOON_UTC)
    tenant = factories.tenant("kiritimati")
    tenant.time_zone = "Pacific/Kiritimati"
    tenant.save()
    return tenant


def test_an_invoice_due_on_the_servers_today_is_overdue_on_the_tenants(far_east):
    due = factories.invoice(far_east, due_date=date(2026, 12, 1), amount_due=50, total=50)
    tenant_today = timezone.localdate(timezone=far_east.tz)
    assert tenant_today == date(2026, 12, 2) and timezone.localdate() == date(2026, 12, 1)

    assert Invoice.objects.get(pk=due.pk).status_label == "Overdue"
    assert list(Invoice.objects.overdue(tenant_today)) == [due]
    assert list(Invoice.objects.overdue()) == []  # the server's date: not yet
