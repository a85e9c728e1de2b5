"""Each tenant's billing sync slots, on the durable run ledger (`portal.ledger`).

django-q2 computes cron and daily/monthly next runs in the one global TIME_ZONE, so a tenant
in New York and one in London cannot both sync at "02:00 local" across daylight-saving
changes. `next_slot` computes each slot in the tenant's own zone; the ledger's tick keeps
the next slot's row planned, so a slot missed while the portal was down runs once when it
comes back, and a worker that dies mid-run has its slot resumed by the sweeper.
"""

import calendar
from datetime import UTC, datetime, time, timedelta

from portal.ledger import aware_local

JOB = "billing_sync"


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
            slot = aware_local(datetime.combine(day, time(sync_settings.schedule_hour)), zone)
            if slot > after:
                return slot.astimezone(UTC)
        day += timedelta(days=1)
    raise AssertionError("no slot within two months")


def _monthly_day(sync_settings, day):
    last = calendar.monthrange(day.year, day.month)[1]
    return (
        last if sync_settings.schedule_day == sync_settings.LAST_DAY else sync_settings.schedule_day
    )


def subjects():
    """Every tenant whose billing sync is scheduled, with its settings."""
    from integrations.billing_sync.models import BillingSyncSettings

    scheduled = BillingSyncSettings.objects.exclude(schedule=BillingSyncSettings.Schedule.OFF)
    return [(s.tenant_id, s) for s in scheduled.select_related("tenant")]
