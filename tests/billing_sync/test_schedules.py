"""Schedules fire at the tenant's local hour across DST changes, and a missed run runs once."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from integrations.billing_sync import schedules
from integrations.billing_sync.models import BillingSyncRun, BillingSyncSettings
from portal import ledger
from portal.models import ScheduledRun
from tests import factories
from tests.billing_sync.conftest import World


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def sync_settings(zone, **fields):
    tenant = factories.tenant(f"t{abs(hash((zone, *fields.values()))) % 10**8}")
    tenant.time_zone = zone
    tenant.save()
    return BillingSyncSettings.objects.create(tenant=tenant, **fields)


def next_slots_during(settings, since):
    """The slot next after some moment from `since` until now: one slot, unless one came
    due meanwhile (then either), so the answer does not hang on how fast the test ran."""
    return {schedules.next_slot(settings, since), schedules.next_slot(settings, timezone.now())}


def slots(settings, after, n):
    found = []
    for _ in range(n):
        after = schedules.next_slot(settings, after)
        found.append(after)
    return found


DAILY = {"schedule": "daily", "schedule_hour": 2}


@pytest.mark.django_db
def test_daily_two_am_london_follows_british_summer_time():
    london = sync_settings("Europe/London", **DAILY)
    assert slots(london, utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 2),  # GMT
        utc(2026, 3, 29, 1),  # the clocks went forward at 01:00 UTC: 02:00 BST
        utc(2026, 3, 30, 1),
    ]
    assert slots(london, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 2), utc(2026, 10, 26, 2)]


@pytest.mark.django_db
def test_daily_two_am_new_york_across_both_changes():
    new_york = sync_settings("America/New_York", **DAILY)
    assert slots(new_york, utc(2026, 3, 6, 12), 3) == [
        utc(2026, 3, 7, 7),  # 02:00 EST
        utc(2026, 3, 8, 7),  # 02:00 does not exist that day: 03:00 EDT, the same instant
        utc(2026, 3, 9, 6),  # 02:00 EDT
    ]
    assert slots(new_york, utc(2026, 10, 31, 12), 2) == [utc(2026, 11, 1, 7), utc(2026, 11, 2, 7)]


@pytest.mark.django_db
def test_monthly_on_a_day_or_the_last_day():
    fifteenth = sync_settings("Europe/London", schedule="monthly", schedule_day=15, schedule_hour=6)
    assert slots(fifteenth, utc(2026, 1, 20), 2) == [utc(2026, 2, 15, 6), utc(2026, 3, 15, 6)]
    last = sync_settings("Australia/Sydney", schedule="monthly", schedule_day=0, schedule_hour=23)
    assert slots(last, utc(2026, 1, 31, 13), 2) == [
        utc(2026, 2, 28, 12),  # 23:00 AEDT (UTC+11)
        utc(2026, 3, 31, 12),
    ]


@pytest.mark.django_db
def test_the_ledger_plans_the_next_slot_as_the_settings_say():
    before = timezone.now()
    settings = sync_settings("America/New_York", **DAILY)
    [row] = ScheduledRun.objects.filter(job=schedules.JOB)  # planned when the settings were saved
    assert row.tenant_id == settings.tenant_id and row.slot in next_slots_during(settings, before)
    ledger.tick()
    assert ScheduledRun.objects.filter(job=schedules.JOB).count() == 1
    settings.schedule_hour = 5
    settings.save()
    [row] = ScheduledRun.objects.filter(job=schedules.JOB)
    assert timezone.localtime(row.slot, settings.tenant.tz).hour == 5
    settings.schedule = "off"
    settings.save()
    assert not ScheduledRun.objects.filter(job=schedules.JOB).exists()


@pytest.mark.django_db(transaction=True)
def test_a_missed_slot_runs_once_through_the_ledger_and_the_next_is_planned(sim, queued):
    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    world.settings.schedule, world.settings.schedule_hour = "daily", 2
    world.settings.save()
    three_days_ago = timezone.now() - timedelta(days=3)
    ScheduledRun.objects.filter(job=schedules.JOB).update(
        slot=three_days_ago,
        not_before=three_days_ago,
        deadline=three_days_ago + timedelta(hours=12),
    )
    ledger.tick()
    ledger.tick()
    sent = [args for path, *args in queued if path == "portal.ledger.work"]
    assert len(sent) == 1  # once, not once per missed day
    before = timezone.now()
    assert ledger.work(*sent[0]) == "succeeded"  # what the worker does with it
    run = BillingSyncRun.objects.get(tenant=world.tenant)
    assert (
        run.trigger == BillingSyncRun.Trigger.SCHEDULE
        and run.status == BillingSyncRun.Status.SUCCEEDED
    )
    assert world.halo_counts() == world.wanted()
    upcoming = ScheduledRun.objects.get(job=schedules.JOB, status="queued")
    assert upcoming.slot in next_slots_during(world.settings, before)
    assert timezone.localtime(upcoming.slot, world.tenant.tz).hour == 2
