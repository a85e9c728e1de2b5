"""A sync bigger than Halo's rate window pauses and continues on the ledger when the window
frees, until done: every pair written once, nothing re-read, no worker sleeping."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.billing_sync import runner, schedules
from integrations.billing_sync.models import BillingSyncRun
from integrations.halo import HaloClient
from portal import ledger
from portal.models import ScheduledRun
from tests import factories
from tests.billing_sync.conftest import World

WINDOW = 300.0
_starts = itertools.count(1)


class HaloTime:
    """The clock of the client's rate window, moved by hand (and by the client's sleeps)."""

    def __init__(self):
        self.now = 1.9e9 + next(_starts) * 10_000  # apart per test: windows live in the cache

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def small_window(settings, monkeypatch):
    """Halo's budget of 8 requests per window; arrays of 5 licences; the ledger's clock an
    hour ahead, so a continuation is due as soon as the test lets the window pass."""
    settings.HALO_RATE_LIMIT = f"8/{WINDOW:g}"
    monkeypatch.setattr(runner, "BATCH", 5)
    halo_time = HaloTime()
    monkeypatch.setattr(
        runner, "HaloClient", lambda c: HaloClient(c, clock=halo_time, sleep=halo_time.sleep)
    )
    monkeypatch.setattr(ledger, "clock", lambda: timezone.now() + timedelta(hours=1))
    return halo_time


def slot_now(tenant):
    now = timezone.now()
    return ScheduledRun.objects.create(
        tenant=tenant,
        job=schedules.JOB,
        slot=now,
        not_before=now,
        deadline=now + timedelta(hours=12),
    )


def run_until_done(row, halo_time, waits, limit=20):
    """The workers, one window after another; answers the number of parts it took."""
    for part in range(1, limit + 1):
        ledger.work(row.pk)
        row.refresh_from_db()
        if row.status != "queued":
            return part
        assert row.attempts == 0 and row.checkpoint["paused"]  # waiting is not failing
        waits.append((row.not_before - timezone.now()).total_seconds())
        halo_time.now += waits[-1] + 1  # the ledger comes back when the window has room
    raise AssertionError(f"not done after {limit} parts: {row.error or row.summary}")


@pytest.mark.django_db
def test_a_first_sync_larger_than_one_window_completes_in_parts(sim, small_window):
    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())  # 40 pairs: 8 arrays of 5
    sim.control.clear_requests()
    row = slot_now(world.tenant)
    waits = []
    parts = run_until_done(row, small_window, waits)

    assert row.status == "succeeded"
    run = BillingSyncRun.objects.get(tenant=world.tenant)
    assert run.status == BillingSyncRun.Status.SUCCEEDED and run.counts == {"create": 40}
    assert run.results.count() == 40  # each pair once, across the parts
    assert world.halo_counts() == world.wanted()  # one licence per pair
    calls = sim.control.requests()["by_endpoint"]
    assert calls["GET /SoftwareLicence"] == 1  # the plan is read once, not per part
    assert calls["POST /SoftwareLicence"] == 8
    requests = sum(calls.values())
    assert parts == -(-requests // 8)  # ceil(requests / budget) windows
    assert run.halo_requests == requests
    assert row.checkpoint["continuations"] == parts - 1 and row.checkpoint["rows"] is None


@pytest.mark.django_db
def test_while_paused_the_tenant_is_busy_and_the_run_says_why(sim, small_window):
    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    row = slot_now(world.tenant)
    ledger.work(row.pk)
    row.refresh_from_db()
    run = BillingSyncRun.objects.get(tenant=world.tenant)
    assert (
        run.status == BillingSyncRun.Status.QUEUED and "Paused for Halo's rate limit" in run.phase
    )
    assert row.status == "queued" and row.not_before > timezone.now()
    again, active = BillingSyncRun.objects.claim(world.tenant, trigger="manual")
    assert again is None and active == run  # Sync now waits for the paused run


@pytest.mark.django_db
def test_sync_now_that_spends_the_window_continues_on_the_ledger(sim, small_window):
    from integrations.billing_sync import tasks

    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    run, _ = BillingSyncRun.objects.claim(world.tenant, trigger=BillingSyncRun.Trigger.MANUAL)
    tasks.execute_run(run.pk)
    row = ScheduledRun.objects.get(tenant=world.tenant, job=schedules.JOB)
    assert row.checkpoint["run"] == run.pk
    small_window.now += WINDOW
    run_until_done(row, small_window, [])
    run.refresh_from_db()
    assert run.status == BillingSyncRun.Status.SUCCEEDED and run.trigger == "manual"
    assert world.halo_counts() == world.wanted()


@pytest.mark.django_db
def test_pausing_and_continuing_tell_rows_apart_without_comparing_them(
    sim, small_window, monkeypatch
):
    """Linear in the run's rows: a membership test comparing rows field by field made a
    10,000 x 5 tenant's pause take over ten minutes (bench/fleet.py --big-only), past
    RUN_STALE_SECONDS, so the sweeper took the run for dead and the slot started over."""
    from integrations.billing_sync import engine

    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    row = slot_now(world.tenant)
    compared = []

    def eq(self, other):
        compared.append((self, other))
        return self is other

    monkeypatch.setattr(engine.Row, "__eq__", eq)
    parts = run_until_done(row, small_window, [])
    assert parts > 1 and row.status == "succeeded"  # it paused and continued
    assert compared == []
    assert world.halo_counts() == world.wanted()
