"""Scheduled invoice fetches that do not complete tell the tenant's owners: once per
incident (not every hour while Halo keeps failing), again after it recovered and broke
anew, and never for a slot that is still retrying."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.invoice_sync import schedules
from portal import ledger
from portal.models import Membership, ScheduledRun
from tests.conftest import make_staff
from tests.halo.conftest import make_connection

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant(personas, sim, settings):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.2
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    make_connection(sim, personas.tenant_a)
    make_staff("admin-a", personas.tenant_a, Membership.Role.ADMIN)  # owners only are told
    return personas.tenant_a


def run_slot(tenant, hours_ago, deadline=timedelta(seconds=30)):
    """A fetch-new slot `hours_ago`, run now; its deadline so near that a retry gives up."""
    slot = timezone.now() - timedelta(hours=hours_ago)
    row = ScheduledRun.objects.create(
        tenant=tenant,
        job=schedules.FETCH_NEW,
        slot=slot,
        not_before=slot,
        deadline=timezone.now() + deadline,
    )
    ledger.work(row.pk)
    row.refresh_from_db()
    return row


def test_one_email_per_incident(tenant, sim, mailoutbox):
    sim.control.add_fault("500", path="Invoice", method="GET", times=10**5)
    first = run_slot(tenant, 4)
    assert first.status == "error" and "Gave up" in first.error
    [mail] = mailoutbox
    assert mail.subject == f"Invoice sync: fetch new data for {tenant.name}: not completed"
    assert mail.to == ["owner-a@example.com"] and "Gave up" in mail.body
    assert "https://portal.example.com/admin/" in mail.body

    assert run_slot(tenant, 3).status == "error"
    assert len(mailoutbox) == 1  # the same incident: told when it began

    sim.control.clear_faults()
    assert run_slot(tenant, 2).status == "succeeded"
    sim.control.add_fault("500", path="Invoice", method="GET", times=10**5)
    assert run_slot(tenant, 1).status == "error"
    assert len(mailoutbox) == 2  # a new incident


def test_a_slot_still_retrying_sends_nothing(tenant, sim, mailoutbox):
    sim.control.add_fault("500", path="Invoice", method="GET", times=10**5)
    row = run_slot(tenant, 1, deadline=timedelta(hours=1))
    assert row.status == "queued" and "Will retry at" in row.error
    assert not mailoutbox and not row.notified  # the give-up, if it comes, will tell
