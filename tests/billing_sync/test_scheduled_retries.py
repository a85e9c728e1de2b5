"""A scheduled billing sync that meets a Halo 5xx storm is retried by the ledger until it
passes, and the owners hear of it once, not once per attempt."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.billing_sync.models import BillingSyncRun
from portal import ledger
from portal.models import Membership, ScheduledRun
from tests.billing_sync.test_continuation import slot_now
from tests.conftest import make_staff


@pytest.fixture
def owner(world):
    """An owner of the tenant: who a failed sync emails."""
    return make_staff("owner", world.tenant, Membership.Role.OWNER)


def test_a_5xx_storm_is_retried_until_it_passes_with_one_email(
    world, owner, mailoutbox, monkeypatch
):
    world.map_all()
    world.set_counts(world.every_pair())
    world.sim.control.add_fault(kind="500", path="SoftwareLicence", method="POST", times=10_000)
    row = slot_now(world.tenant)
    ledger.work(row.pk)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("queued", 1) and "Will retry at" in row.error
    [mail] = mailoutbox
    assert mail.to == ["owner@example.com"] and "Will retry at" in mail.body

    monkeypatch.setattr(ledger, "clock", lambda: row.not_before)
    ledger.work(row.pk)  # the storm goes on: retried again, told nobody again
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("queued", 2) and len(mailoutbox) == 1

    world.sim.control.clear_faults()
    monkeypatch.setattr(ledger, "clock", lambda: row.not_before)
    ledger.work(row.pk)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("succeeded", 3)
    assert world.halo_counts() == world.wanted()
    assert len(mailoutbox) == 1
    last = BillingSyncRun.objects.filter(tenant=world.tenant).latest()
    assert last.status == BillingSyncRun.Status.SUCCEEDED and row.checkpoint["run"] == last.pk


def test_a_permanent_cause_ends_the_slot_at_once_with_its_reason(world, owner, mailoutbox):
    world.connection.active = False
    world.connection.save()
    row = slot_now(world.tenant)
    ledger.work(row.pk)
    row.refresh_from_db()
    assert row.status == "error" and row.attempts == 1
    assert "no active Halo connection" in row.summary
    [mail] = mailoutbox
    assert "could not run" in mail.subject


def test_a_resumed_slot_takes_over_the_run_its_dead_attempt_left(world, owner):
    """The sweeper gave the slot to this worker: the run the dead attempt started is
    released at once, not after its own heartbeat goes stale, and the slot completes."""
    world.map_all()
    world.set_counts(world.every_pair())
    now = timezone.now()
    orphan, _ = BillingSyncRun.objects.claim(world.tenant, trigger=BillingSyncRun.Trigger.SCHEDULE)
    orphan.start()  # its worker was killed just after; its heartbeat is still fresh
    row = ScheduledRun.objects.create(
        tenant=world.tenant,
        job="billing_sync",
        slot=now,
        not_before=now,
        deadline=now + timedelta(hours=12),
        attempts=1,
        checkpoint={"run": orphan.pk},
    )
    ledger.work(row.pk)
    row.refresh_from_db()
    orphan.refresh_from_db()
    assert row.status == "succeeded" and orphan.status == BillingSyncRun.Status.INTERRUPTED
    assert world.halo_counts() == world.wanted()
