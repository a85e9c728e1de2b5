"""Demo step: invoice sync settings, an auto-pay rule, and an initial sync for the worker.

Nothing here calls Halo: the simulator may not run yet when `manage.py demo` does, so the
initial sync is queued and runs once `devstack` has started the worker.
"""

from billing.models import AutoPayRule, InvoiceNumberField
from integrations.halo_sim.state import CONTRACT_SUBTYPES
from integrations.invoice_sync import tasks
from integrations.invoice_sync.models import InvoiceSyncSettings, SyncState
from integrations.models import HaloConnection
from portal.demo import register
from portal.jobs import enqueue

AUTOPAY_SUBTYPE = "Managed Services"


@register
def invoice_sync(context):
    tenant = context.tenant
    InvoiceSyncSettings.objects.get_or_create(
        tenant=tenant, defaults={"number_field": InvoiceNumberField.THIRD_PARTY}
    )
    subtype_id = next(k for k, name in CONTRACT_SUBTYPES.items() if name == AUTOPAY_SUBTYPE)
    AutoPayRule.objects.get_or_create(
        tenant=tenant, halo_subtype_id=subtype_id, defaults={"subtype_name": AUTOPAY_SUBTYPE}
    )
    context.notes.append(f"Invoice sync: auto-pay on for '{AUTOPAY_SUBTYPE}' agreements")
    connected = HaloConnection.objects.for_feature(tenant, "invoice_sync")
    if connected and not SyncState.for_tenant(tenant).initial_completed:
        enqueue(tasks.sync_tenant, tenant.pk, "initial", "demo")
        context.notes.append("Invoice sync: initial sync queued for the worker")
