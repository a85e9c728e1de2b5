"""django-q2 entry points of invoice sync (scheduled in `schedules.py`)."""

from django.core.cache import cache

from integrations.invoice_sync import runner, webhooks
from integrations.invoice_sync.models import ActionLimit, InvoiceSyncRun, WebhookDelivery
from portal.jobs import enqueue
from portal.models import Tenant

#: At most this many deliveries per drain task; a longer queue gets another task.
DRAIN_BATCH = 500


def queue_drain(tenant_id):
    """Make sure a task will apply the tenant's received deliveries. Queued only when none
    is waiting, so a burst of deliveries costs one task (and one write each), not one each.
    Should the broker lose it, `requeue_stuck_deliveries` catches up."""
    if cache.add(f"invoice_sync:drain:{tenant_id}", True, timeout=60):
        enqueue(drain_deliveries, tenant_id)


def drain_deliveries(tenant_id):
    """Apply the tenant's received deliveries in arrival order."""
    cache.delete(f"invoice_sync:drain:{tenant_id}")  # deliveries from now on queue another
    received = WebhookDelivery.objects.filter(
        tenant_id=tenant_id, status=WebhookDelivery.Status.RECEIVED
    ).order_by("pk")
    batch = list(received.values_list("pk", flat=True)[:DRAIN_BATCH])
    for delivery_id in batch:
        webhooks.process(delivery_id)
    if len(batch) == DRAIN_BATCH:
        queue_drain(tenant_id)
    return len(batch)


def requeue_stuck_deliveries():
    """Drain tenants whose deliveries wait too long (the broker was down, a task was lost)."""
    stuck = WebhookDelivery.objects.stuck().values_list("tenant_id", flat=True).distinct()
    tenant_ids = list(stuck)
    for tenant_id in tenant_ids:
        enqueue(drain_deliveries, tenant_id)
    return len(tenant_ids)


def sync_tenant(tenant_id, kind, trigger="schedule", claimed_at=None):
    """One sync; a manual one that did not succeed gives its rate-limit slot back
    (`claimed_at`), so staff can try again after fixing the cause."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return None
    run = runner.run_sync(tenant, kind, trigger)
    if claimed_at is not None and run.status != InvoiceSyncRun.Status.SUCCEEDED:
        ActionLimit.release(tenant, kind, claimed_at)
    return run.status
