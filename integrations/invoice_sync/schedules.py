"""Invoice sync's jobs on the durable run ledger (`portal.ledger`): new data hourly, what
is owed twice a day, and a sweep for webhook deliveries left waiting.

Each tenant's slots are offset by a minute of its own (its id modulo 60), so a fleet of
thousands does not call Halo all at once on the hour.
"""

from datetime import UTC, datetime, timedelta

from portal import ledger

FETCH_NEW, FETCH_UNPAID = "invoice_fetch_new", "invoice_fetch_unpaid"
#: How a slot ends without completing.
FAILING = (ledger.RunStatus.ERROR, ledger.RunStatus.FAILED)
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


def tell_owners(row, text):
    """A scheduled fetch that ended without completing (a permanent cause, or retried until
    its deadline) emails the tenant's owners, once per incident: while the slots before it
    failed too, they were told already. A slot still retrying tells nothing yet (False):
    one blip in an hourly fetch is not worth an email."""
    from django.conf import settings
    from django.core.mail import send_mail
    from django.urls import reverse

    from portal.models import ScheduledRun

    if row.status not in FAILING:
        return False
    before = (
        ScheduledRun.objects.finished()
        .filter(tenant=row.tenant_id, job=row.job, slot__lt=row.slot)
        .order_by("-slot")
        .first()
    )
    if before is not None and before.status in FAILING and before.notified:
        return True  # the same incident goes on: told when it began
    recipients = row.tenant.owner_emails()
    if not recipients:
        return False
    label = ledger.jobs()[row.job].label
    page = settings.PORTAL_BASE_URL + reverse("admin:job_invoice_sync")
    send_mail(
        f"{label} for {row.tenant.name}: not completed",
        f"The scheduled run did not complete. {text}\n\n"
        "Until it does, invoices, customers and what is owed in the portal may be out of "
        "date, and so are pay pages, reminders and auto-pay, which work from them. The next "
        f"slot tries again as usual; you will not get another email while it keeps failing.\n\n"
        f"See the runs, and start one now, at:\n{page}\n",
        None,
        recipients,
        fail_silently=True,
    )
    return True


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
        on_failure=tell_owners,
    )
)
ledger.register(
    ledger.Job(
        name=FETCH_UNPAID,
        label="Invoice sync: fetch unpaid invoices",
        run=run_slot("unpaid"),
        next_slot=every_hours(12),
        subjects=subjects,
        on_failure=tell_owners,
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
