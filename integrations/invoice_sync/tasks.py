"""django-q2 entry points of invoice sync (scheduled in `schedules.py`)."""

from django.db import transaction
from django_q.conf import Conf
from django_q.tasks import async_task

from integrations.invoice_sync import engine, webhooks
from integrations.invoice_sync.models import WebhookDelivery
from portal.models import Tenant


def queue(func, *args):
    """Queue a task with the current transaction. On the database broker the queue row
    commits with it: one commit (one fsync) per webhook delivery, and never a delivery stored
    without its task. Other brokers get it once committed; should that fail, the delivery
    waits for `requeue_stuck_deliveries`."""
    if Conf.ORM:
        async_task(func, *args)
    else:
        transaction.on_commit(lambda: async_task(func, *args), robust=True)


def sync_tenant(tenant_id, kind, trigger="schedule"):
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    return tenant and engine.run_sync(tenant, kind, trigger).status


def sync_all(kind):
    """One task per tenant with invoice sync on, so a slow tenant holds up no other."""
    tenants = Tenant.objects.filter(
        halo_connections__active=True, halo_connections__invoice_sync=True
    ).values_list("pk", flat=True)
    for tenant_id in tenants:
        async_task("integrations.invoice_sync.tasks.sync_tenant", tenant_id, kind)


def process_delivery(delivery_id):
    return webhooks.process(delivery_id).status


def requeue_stuck_deliveries():
    """Deliveries stored while the broker was down, or whose task was lost."""
    for delivery_id in WebhookDelivery.objects.stuck().values_list("pk", flat=True):
        async_task("integrations.invoice_sync.tasks.process_delivery", delivery_id)
