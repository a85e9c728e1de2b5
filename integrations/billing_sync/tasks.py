"""django-q2 entry points (the worker imports them by dotted path)."""

import logging

from integrations.billing_sync import refresh, runner, schedules
from integrations.billing_sync.models import BillingSyncRun, BillingSyncSettings

log = logging.getLogger(__name__)


def execute_run(run_id):
    """A run claimed by Sync now, Preview or an approval, executed on the worker."""
    run = BillingSyncRun.objects.select_related("tenant").get(pk=run_id)
    runner.execute(run)
    return run.status


def scheduled_sync(tenant_id):
    """Fired by the tenant's schedule: arm the next slot first, then sync here."""
    sync_settings = BillingSyncSettings.objects.select_related("tenant").get(tenant_id=tenant_id)
    schedules.arm(sync_settings, fired=True)
    run, active = runner.start(sync_settings.tenant, BillingSyncRun.Trigger.SCHEDULE)
    if run is None:
        log.info("Scheduled billing sync of %s skipped: run %s is active", tenant_id, active)
        return "skipped"
    return run.status


def refresh_halo(tenant_id):
    """Fill the mapping pickers from Halo ("Refresh from Halo", and the demo); the lists
    show how it went."""
    return refresh.run(tenant_id)
