"""django-q2 schedules the portal needs, created idempotently after every migrate.

Features register `(name, func, kwargs)` here; `ensure_schedules()` creates or updates each
by its unique name, so running it twice (or on every deploy) never duplicates a schedule.
"""

from typing import Any

from django.utils import timezone
from django_q.models import Schedule

_registered: dict[str, dict[str, Any]] = {}


def register(name, func, **fields):
    _registered[name] = {"func": func, **fields}


def ensure_schedules():
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
