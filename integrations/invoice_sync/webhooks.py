"""Halo's webhook: registering it in Halo, and applying the deliveries it sends.

Deliveries are stored by the endpoint (`views.py`) and applied here on the worker, in
arrival order by one drain task per tenant (`tasks.drain_deliveries`). A delivery carries
the whole changed record, which the writer applies only when it is not
older than the portal's copy: Halo repeats and reorders deliveries, and neither may undo
newer data. A delivery without its record makes the worker read the record from Halo.
"""

import logging

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from integrations.halo import HaloClient, HaloError, HaloNotFound
from integrations.invoice_sync.models import WebhookDelivery
from integrations.invoice_sync.store import Writer
from integrations.models import HaloConnection

log = logging.getLogger(__name__)

#: The events the portal subscribes to (the contract's names).
EVENTS = ("invoice created", "invoice updated", "invoice paid", "client updated")
#: Halo's `Webhook.method` is an integer; 1 is POST (halo-api.md §4, our choice).
WEBHOOK_METHOD_POST = 1
WEBHOOK_NAME = "Halo Partner Portal: invoices and clients"
#: Writer counts that mean a delivery changed something (or found the copy up to date).
APPLIED = ("customers_saved", "invoices_created", "invoices_updated", "invoices_deleted")
NOT_APPLIED = (
    "Not applied: older than the portal's copy (Halo delivered it late), or an invoice dated "
    "before the created-since date."
)


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
        "method": WEBHOOK_METHOD_POST,
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
    if delivery.event not in EVENTS:
        note = f"Invoice sync does not use “{delivery.event}” events."
        delivery.settle(WebhookDelivery.Status.IGNORED, note)
        return delivery
    kind = delivery.event.split(" ", 1)[0]
    connection = HaloConnection.objects.for_feature(delivery.tenant, "invoice_sync")
    writer = Writer(delivery.tenant, HaloClient(connection) if connection else None)
    try:
        # Halo calls first: the transaction below holds the database's write lock.
        record = _record(writer.client, kind, delivery)
        writer.prepare([record] if kind == "invoice" and record else [])
        with transaction.atomic():
            if record is None:
                writer.mark_deleted([delivery.object_id])
            else:
                (writer.invoices if kind == "invoice" else writer.customers)([record])
            if writer.unchanged or any(writer.counts[name] for name in APPLIED):
                delivery.settle(WebhookDelivery.Status.PROCESSED)
            else:
                delivery.settle(WebhookDelivery.Status.IGNORED, NOT_APPLIED)
    except (HaloError, Unusable) as error:
        delivery.settle(WebhookDelivery.Status.FAILED, str(error))
    except Exception as error:
        log.exception("Webhook delivery %s failed", delivery.pk)
        delivery.settle(WebhookDelivery.Status.FAILED, f"{type(error).__name__}: {error}")
    return delivery


class Unusable(Exception):
    """A delivery that cannot be applied as it stands."""


def _record(client, kind, delivery):
    """The changed record: the one delivered, else Halo's (None: Halo deleted the invoice)."""
    record = delivery.payload.get(kind)
    if isinstance(record, dict) and record.get("id"):
        return record
    if client is None:
        raise Unusable(
            f"The delivery carries no {kind}, and without an active Halo connection (with "
            f"invoice sync on) the portal cannot read {kind} {delivery.object_id}."
        )
    try:
        if kind == "invoice":
            return client.get_invoice(delivery.object_id)
        return client.get_client(delivery.object_id)
    except HaloNotFound:
        if kind == "invoice":
            return None
        raise
