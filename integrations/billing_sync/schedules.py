"""Each tenant's sync schedule, kept as one django-q2 Schedule named `billing_sync.tenant.<id>`.

django-q2 computes cron and daily/monthly next runs in the one global TIME_ZONE, so a tenant
in New York and one in London cannot both fire at "02:00 local" across daylight-saving
changes. The portal therefore computes each next run itself, in the tenant's zone, and arms
a ONCE schedule for it; the task re-arms it for the following slot before it syncs. A slot
missed during downtime is still pending when the scheduler comes back, so it fires once,
and the re-arm jumps to the next future slot (never one run per missed slot). An hourly
safety net re-arms any schedule lost with a crashed worker.
"""

import calendar
from datetime import UTC, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from portal import schedules as portal_schedules

TASK = "integrations.billing_sync.tasks.scheduled_sync"


def schedule_name(tenant_id):
    return f"billing_sync.tenant.{tenant_id}"


def next_slot(sync_settings, after):
    """The first scheduled instant strictly after `after` (aware), in UTC; None when off."""
    kind = sync_settings.schedule
    if kind == sync_settings.Schedule.OFF:
        return None
    zone = sync_settings.tenant.tz
    local = after.astimezone(zone)
    day = local.date()
    for _ in range(62):  # two months of days always hold a monthly slot
        if kind == sync_settings.Schedule.DAILY or day.day == _monthly_day(sync_settings, day):
            slot = _aware(datetime.combine(day, time(sync_settings.schedule_hour)), zone)
            if slot > after:
                return slot.astimezone(UTC)
        day += timedelta(days=1)
    raise AssertionError("no slot within two months")


def _monthly_day(sync_settings, day):
    last = calendar.monthrange(day.year, day.month)[1]
    return (
        last if sync_settings.schedule_day == sync_settings.LAST_DAY else sync_settings.schedule_day
    )


def _aware(naive, zone):
    """Local wall time → aware. A time skipped by a spring-forward change means the same
    instant an hour later by the new offset (02:00 → 03:00); a repeated time its first."""
    aware = naive.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC).astimezone(zone)


def arm(sync_settings, *, fired=False):
    """Create, move or remove the tenant's schedule to match its settings (idempotent).

    A pending schedule already due (the scheduler was down) is left to fire once, unless
    `fired`: the task calls this as it starts, to arm the next slot after now.
    """
    name = schedule_name(sync_settings.tenant_id)
    with transaction.atomic():
        # Locking waits out the scheduler's own transaction that just fired this schedule.
        current = Schedule.objects.select_for_update().filter(name=name).first()
        now = timezone.now()
        slot = next_slot(sync_settings, now)
        if slot is None:
            if current:
                current.delete()
            return None
        if current and not fired and current.repeats != 0 and current.next_run <= now:
            return current  # a missed slot: let it fire once
        fields = {
            "func": TASK,
            "kwargs": repr({"tenant_id": sync_settings.tenant_id}),
            "schedule_type": Schedule.ONCE,
            "repeats": 1,
            "next_run": slot,
        }
        if current is None:
            return Schedule.objects.create(name=name, **fields)
        if any(getattr(current, key) != value for key, value in fields.items()):
            for key, value in fields.items():
                setattr(current, key, value)
            current.save()
        return current


def arm_all():
    """The safety net: every tenant's schedule matches its settings."""
    from integrations.billing_sync.models import BillingSyncSettings

    for sync_settings in BillingSyncSettings.objects.select_related("tenant"):
        arm(sync_settings)
    known = {
        schedule_name(pk) for pk in BillingSyncSettings.objects.values_list("tenant_id", flat=True)
    }
    Schedule.objects.filter(name__startswith="billing_sync.tenant.").exclude(
        name__in=known
    ).delete()


portal_schedules.register(
    "billing_sync.arm_all",
    "integrations.billing_sync.schedules.arm_all",
    schedule_type=Schedule.HOURLY,
    repeats=-1,
)
