"""Scheduled billing syncs on the ledger: what ends a slot, what retries it, and that the
owners hear of each incident once (review of issue 14)."""

import pytest

from integrations.billing_sync import runner
from integrations.billing_sync.models import BillingSyncRun, OrganisationMapping
from portal import ledger
from portal.models import Membership
from tests.billing_sync.test_continuation import slot_now, small_window  # noqa: F401
from tests.conftest import make_staff


@pytest.fixture
def owner(mapped):
    return make_staff("owner", mapped.tenant, Membership.Role.OWNER)


@pytest.mark.django_db
def test_a_slot_ended_by_a_permanent_cause_tells_the_owners(mapped, owner, mailoutbox):
    mapped.connection.billing_sync = False  # switched off on the connection: NotConnected
    mapped.connection.save()
    row = slot_now(mapped.tenant)
    ledger.work(row.pk)
    row.refresh_from_db()
    assert row.status == "error" and row.attempts == 1  # not retried: it cannot get better
    [mail] = mailoutbox
    assert mail.to == ["owner@example.com"] and "Billing sync is switched off" in mail.body


@pytest.mark.django_db
def test_pairs_halo_refuses_end_the_slot_failed_instead_of_retrying_all_day(
    mapped, owner, mailoutbox
):
    client = OrganisationMapping.objects.get(organisation__external_ref="NW-1001").halo_client
    mapped.sim.control.records("Client", [{"id": client.halo_id, "inactive": True}])
    row = slot_now(mapped.tenant)
    ledger.work(row.pk)
    row.refresh_from_db()
    # Halo refused these licences (a record error): another attempt re-reads all of Halo
    # and is refused the same, every half hour until the deadline.
    assert row.status == "failed" and row.attempts == 1 and row.will_retry is None
    [mail] = mailoutbox
    assert "5 pair(s) failed" in mail.body


@pytest.mark.django_db
def test_a_slot_that_first_found_the_tenant_busy_still_emails_its_first_failure(
    mapped, owner, mailoutbox, monkeypatch, settings
):
    busy, _ = BillingSyncRun.objects.claim(mapped.tenant, trigger=BillingSyncRun.Trigger.MANUAL)
    row = slot_now(mapped.tenant)
    ledger.work(row.pk)
    row.refresh_from_db()
    assert row.status == "queued" and "still going" in row.error and not mailoutbox
    busy.start()
    busy.finish(BillingSyncRun.Status.SUCCEEDED)  # the Sync now ends
    settings.HALO_RETRY_BUDGET_SECONDS = 0.2
    mapped.sim.control.add_fault(kind="500", path="SoftwareLicence", method="POST", times=10**5)
    monkeypatch.setattr(ledger, "clock", lambda: row.not_before)
    ledger.work(row.pk)  # a 5xx storm: pairs fail, retried later
    row.refresh_from_db()
    assert row.status == "queued" and row.attempts == 2
    [mail] = mailoutbox  # the incident's one email
    assert "pair(s) failed" in mail.body and "Will retry at" in mail.body


@pytest.mark.django_db
def test_an_answer_lost_just_before_the_window_is_spent_is_looked_up_not_resent(
    sim,
    small_window,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    """Halo created an array's licences but its answer was lost, and the window ran out
    before the run could look them up: the continuation asks Halo before writing them."""
    from integrations.billing_sync.models import SyncResult
    from tests import factories
    from tests.billing_sync.conftest import World
    from tests.billing_sync.test_continuation import run_until_done

    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())  # 40 pairs: 8 arrays of 5, 8 requests a window
    sim.control.add_fault(kind="drop_after", path="SoftwareLicence", method="POST")
    unsettled = []
    keep = runner._row_state
    monkeypatch.setattr(
        runner, "_row_state", lambda r, u: unsettled.append(u) or keep(r, u), raising=True
    )
    row = slot_now(world.tenant)
    parts = run_until_done(row, small_window, [])
    assert parts > 1 and row.status == "succeeded"
    assert sum(unsettled) == 5  # the lost array's rows went to the continuation unsettled
    assert world.halo_counts() == world.wanted()  # one licence per pair: none sent twice
    run = BillingSyncRun.objects.get(tenant=world.tenant)
    assert run.results.count() == 40
    assert not run.results.filter(licence_id=None, action=SyncResult.Action.CREATE).exists()


@pytest.mark.django_db
def test_a_slot_given_up_after_its_worker_died_three_times_tells_the_owners(
    mapped, owner, mailoutbox, settings
):
    """Each attempt's run was only interrupted (no pair failed): the owners still hear,
    once, that today's sync did not complete, rather than nothing at all."""
    from datetime import timedelta

    from django.utils import timezone

    from portal.models import ScheduledRun

    row = slot_now(mapped.tenant)
    for _ in range(ledger.MAX_UNEXPECTED):
        claimed = ledger.claim()  # a worker takes the slot and starts its run ...
        assert claimed is not None and claimed.pk == row.pk
        run, _ = BillingSyncRun.objects.claim(
            mapped.tenant, trigger=BillingSyncRun.Trigger.SCHEDULE
        )
        run.start()
        ledger.note(claimed, run=run.pk)
        # ... and dies with it: neither the slot nor the run beats again.
        silent = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS + 5)
        ScheduledRun.objects.filter(pk=row.pk).update(heartbeat=silent)
        BillingSyncRun.objects.filter(pk=run.pk).update(heartbeat=silent)
        ledger.sweep(timezone.now())
    row.refresh_from_db()
    run.refresh_from_db()
    assert row.status == "error" and "stopped 3 times" in row.error
    assert run.status == BillingSyncRun.Status.INTERRUPTED and not run.failed
    [mail] = mailoutbox
    assert mail.to == ["owner@example.com"] and "not completed" in mail.subject
    assert "stopped 3 times" in mail.body and f"/billingsyncrun/{run.pk}/" in mail.body
    ledger.sweep(timezone.now())  # nothing more to tell
    assert len(mailoutbox) == 1
