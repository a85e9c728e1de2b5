"""Invoice sync's schedules: new data hourly, what is owed twice a day, stuck deliveries."""

from django_q.models import Schedule

from portal.schedules import register

register(
    "invoice_sync.fetch_new",
    "integrations.invoice_sync.tasks.sync_all",
    args="'new'",
    schedule_type=Schedule.HOURLY,
    repeats=-1,
)
register(
    "invoice_sync.fetch_unpaid",
    "integrations.invoice_sync.tasks.sync_all",
    args="'unpaid'",
    schedule_type=Schedule.MINUTES,
    minutes=12 * 60,
    repeats=-1,
)
register(
    "invoice_sync.requeue_stuck_deliveries",
    "integrations.invoice_sync.tasks.requeue_stuck_deliveries",
    schedule_type=Schedule.MINUTES,
    minutes=10,
    repeats=-1,
)
