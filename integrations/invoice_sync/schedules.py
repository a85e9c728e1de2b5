"""Invoice sync's jobs on the durable run ledger (`portal.ledger`): new data hourly, what
is owed twice a day, and a sweep for webhook deliveries left waiting.

Each tenant's slots are offset by a minute of its own (its id modulo 60), so a fleet of
thousands does not call Halo all at once on the hour.
"""

from datetime import UTC, datetime, timedelta

from portal import ledger

FETCH_NEW, FETCH_UNPAID = "invoice_fetch_new", "invoice_fetch_unpaid"
#: A slot that finds the tenant's previous sync still going waits this long.
BUSY_RETRY = timedelta(minutes=2)


def subjects():
    """Every tenant with an active Halo connection that has invoice sync on."""
    from portal.models import Tenant

    tenants = Tenant.objects.filter(
        halo_connections__active=True, halo_connections__invoice_sync=True
    ).distinct()
    return [(pk, pk) for pk in tenants.values_list("pk", flat=True)]


def every_hours(hours):
    def next_slot(tenant_id, after):
        offset = timedelta(minutes=tenant_id % 60)
        start = (after - offset).astimezone(UTC)
        base = datetime(start.year, start.month, start.day, tzinfo=UTC)
        slot = base + timedelta(hours=(start.hour // hours) * hours) + offset
        while slot <= after:
            slot += timedelta(hours=hours)
        return slot

    return next_slot


def run_slot(kind):
    def run(row):
        from integrations.invoice_sync import runner
        from integrations.invoice_sync.models import InvoiceSyncRun

        run = runner.run_sync(row.tenant, kind, InvoiceSyncRun.Trigger.SCHEDULE)
        ledger.note(row, run=run.pk)
        summary = f"{run}: {run.get_status_display()}"
        if run.status == InvoiceSyncRun.Status.SKIPPED:
            raise ledger.RetryLater(run.error, at=row.not_before + BUSY_RETRY)
        if run.status == InvoiceSyncRun.Status.ERROR:
            failure = getattr(run, "failure", None)
            if getattr(failure, "transient", False):
                raise ledger.RetryLater(run.error, summary=summary)
            return InvoiceSyncRun.Status.ERROR, f"{summary}: {run.error}"
        return run.status, summary

    return run


def requeue_stuck(row):
    from integrations.invoice_sync import tasks

    return f"{tasks.requeue_stuck_deliveries()} tenant(s) drained"


def release_stale_runs():
    from integrations.invoice_sync.models import InvoiceSyncRun

    return InvoiceSyncRun.objects.release_stale()


ledger.release_stale_with_sweep(release_stale_runs)
ledger.register(
    ledger.Job(
        name=FETCH_NEW,
        label="Invoice sync: fetch new data",
        run=run_slot("new"),
        next_slot=every_hours(1),
        subjects=subjects,
        retry_for=timedelta(hours=1),
    )
)
ledger.register(
    ledger.Job(
        name=FETCH_UNPAID,
        label="Invoice sync: fetch unpaid invoices",
        run=run_slot("unpaid"),
        next_slot=every_hours(12),
        subjects=subjects,
    )
)
ledger.register(
    ledger.Job(
        name="invoice_stuck_deliveries",
        label="Invoice sync: webhook deliveries left waiting",
        run=requeue_stuck,
        next_slot=ledger.every(10),
        retry_for=timedelta(minutes=10),
    )
)
