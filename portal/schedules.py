"""django-q2 schedules the portal needs, created idempotently after every migrate.

Only fleet plumbing lives here: the durable run ledger's tick (`portal.ledger`, which runs
every feature's scheduled jobs), the worker heartbeat and counter purging. `register`
names a schedule; `ensure_schedules()` creates or updates each by its unique name, so
running it twice (or on every deploy) never duplicates one, and deletes the schedules of
earlier versions (`RETIRED`), whose jobs now run on the ledger.
"""

from typing import Any

from django.utils import timezone
from django_q.models import Schedule

_registered: dict[str, dict[str, Any]] = {}

#: Names (or name prefixes ending in ".") of schedules earlier versions created.
RETIRED = (
    "billing_sync.arm_all",
    "billing_sync.tenant.",
    "invoice_sync.fetch_new",
    "invoice_sync.fetch_unpaid",
    "invoice_sync.requeue_stuck_deliveries",
    "payments.deliver_outbox",
    "payments.add_pay_links",
    "payments.autopay",
    "payments.close_stale_payments",
    "reminders.send",
)


def register(name, func, **fields):
    _registered[name] = {"func": func, **fields}


def ensure_schedules():
    for name in RETIRED:
        lookup = {"name__startswith": name} if name.endswith(".") else {"name": name}
        Schedule.objects.filter(**lookup).delete()
    for name, fields in _registered.items():
        schedule, created = Schedule.objects.get_or_create(
            name=name, defaults={**fields, "next_run": timezone.now()}
        )
        changed = {k: v for k, v in fields.items() if getattr(schedule, k) != v}
        if not created and changed:
            for key, value in changed.items():
                setattr(schedule, key, value)
            schedule.save(update_fields=list(changed))


register(
    "portal.ledger_tick",
    "portal.ledger.tick",
    schedule_type=Schedule.MINUTES,
    minutes=1,
    repeats=-1,
)
register(
    "portal.heartbeat",
    "portal.tasks.heartbeat",
    schedule_type=Schedule.MINUTES,
    minutes=1,
    repeats=-1,
)
register(
    "portal.purge_counters",
    "portal.tasks.purge_counters",
    schedule_type=Schedule.HOURLY,
    repeats=-1,
)
