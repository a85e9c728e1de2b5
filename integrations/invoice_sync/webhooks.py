"""Halo's webhook: registering it in Halo, and applying the deliveries it sends.

Deliveries are stored by the endpoint (`views.py`) and applied here on the worker. A
delivery carries the whole changed record, which the writer applies only when it is not
older than the portal's copy: Halo repeats and reorders deliveries, and neither may undo
newer data. A delivery without its record makes the worker read the record from Halo.
"""

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from integrations.halo import HaloError, HaloNotFound
from integrations.invoice_sync.engine import active_connection
from integrations.invoice_sync.models import WebhookDelivery
from integrations.invoice_sync.store import Writer

#: The events the portal subscribes to (the contract's names).
EVENTS = ("invoice created", "invoice updated", "invoice paid", "client updated")
WEBHOOK_NAME = "Halo Partner Portal: invoices and clients"


def webhook_url(tenant):
    return settings.PORTAL_BASE_URL + reverse("invoice_sync:halo-webhook", args=[tenant.slug])


def register(sync_settings, client):
    """Create or update (found by URL) the tenant's webhook in Halo with new credentials;
    the old ones stop working once Halo has the new ones."""
    url = webhook_url(sync_settings.tenant)
    username, password = sync_settings.new_webhook_credentials()
    record = {
        "name": WEBHOOK_NAME,
        "url": url,
        "method": "POST",
        "active": True,
        "authentication_type": 1,
        "basic_username": username,
        "basic_password": password,
        "events": [{"name": event} for event in EVENTS],
    }
    existing = next((hook for hook in client.list_webhooks() if hook.get("url") == url), None)
    if existing:
        record["id"] = existing["id"]
    saved = client.upsert_webhook(record)
    sync_settings.webhook_halo_id = str(saved.get("id") or "")
    sync_settings.webhook_registered = timezone.now()
    sync_settings.save()
    return saved


def process(delivery_id):
    """Apply one stored delivery; idempotent, so a repeated task changes nothing."""
    delivery = WebhookDelivery.objects.select_related("tenant").get(pk=delivery_id)
    if delivery.status in (WebhookDelivery.Status.PROCESSED, WebhookDelivery.Status.IGNORED):
        return delivery
    kind = delivery.event.split(" ", 1)[0]
    if delivery.event not in EVENTS:
        delivery.settle(
            WebhookDelivery.Status.IGNORED, f"Invoice sync does not use “{delivery.event}” events."
        )
        return delivery
    connection = active_connection(delivery.tenant)
    writer = Writer(delivery.tenant, connection.client() if connection else None)
    try:
        _apply(writer, kind, delivery)
    except HaloError as error:
        delivery.settle(WebhookDelivery.Status.FAILED, str(error))
        return delivery
    if (
        writer.counts["customers_saved"]
        or writer.counts["invoices_deleted"]
        or (writer.counts["invoices_created"] + writer.counts["invoices_updated"])
    ):
        delivery.settle(WebhookDelivery.Status.PROCESSED)
    else:
        delivery.settle(
            WebhookDelivery.Status.IGNORED,
            "Not applied: older than the portal's copy (Halo delivered it late), or an "
            "invoice dated before the created-since date.",
        )
    return delivery


def _apply(writer, kind, delivery):
    record = delivery.payload.get(kind)
    if not isinstance(record, dict) or not record.get("id"):
        if writer.client is None:
            raise HaloError(
                attempted=f"read {kind} {delivery.object_id}: the delivery has no {kind} and "
                "the tenant has no active Halo connection with invoice sync on"
            )
        try:
            record = (writer.client.get_invoice if kind == "invoice" else writer.client.get_client)(
                delivery.object_id
            )
        except HaloNotFound:
            if kind == "invoice":
                writer.mark_deleted([delivery.object_id])
                return
            raise
    if kind == "invoice":
        writer.prepare([record])
        writer.invoices([record])
    else:
        writer.customers([record])
