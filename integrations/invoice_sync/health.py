"""The admin home's rows for invoice sync: the last run, and the Halo webhook."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from integrations.invoice_sync.models import InvoiceSyncRun, WebhookDelivery
from portal.health import HealthRow, provider


@provider
def invoice_sync(tenant):
    url = reverse("admin:invoice_sync_invoicesyncrun_changelist")
    run = tenant.invoice_sync_runs.exclude(status=InvoiceSyncRun.Status.SKIPPED).first()
    if run is None:
        return [HealthRow("Invoice sync", "idle", "Not run yet: it starts with the schedule", url)]
    if run.status == InvoiceSyncRun.Status.RUNNING:
        return [HealthRow("Invoice sync", "ok", f"{run.get_kind_display()} running", url)]
    ago = timesince(run.finished)
    if run.status == InvoiceSyncRun.Status.ERROR:
        return [HealthRow("Invoice sync", "error", f"Failed {ago} ago: {run.error[:200]}", url)]
    invoices, unpaid = tenant.invoices.count(), tenant.invoices.unpaid().count()
    text = f"Synced {ago} ago: {invoices} invoices, {unpaid} unpaid"
    return [HealthRow("Invoice sync", "ok", text, url)]


@provider
def halo_webhook(tenant):
    url = reverse("admin:invoice_sync_webhookdelivery_changelist")
    settings = getattr(tenant, "invoice_sync_settings", None)
    if settings is None or settings.webhook_registered is None:
        text = "Not registered: use Register webhook in Halo on Invoice sync settings"
        return [HealthRow("Halo webhook", "idle", text, url)]
    deliveries = WebhookDelivery.objects.filter(tenant=tenant)
    failed = deliveries.filter(
        status=WebhookDelivery.Status.FAILED, received__gte=timezone.now() - timedelta(days=1)
    ).count()
    if failed:
        return [HealthRow("Halo webhook", "warn", f"{failed} deliveries failed in 24 hours", url)]
    last = deliveries.values_list("received", flat=True).first()
    text = f"Last delivery {timesince(last)} ago" if last else "Registered; no delivery yet"
    return [HealthRow("Halo webhook", "ok", text, url)]
