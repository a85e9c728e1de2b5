"""Invoice sync runs count only real changes (issue 15: a re-read of unchanged invoices
said "updated 24"). Against the Halo simulator over HTTP."""

from billing.models import Invoice
from integrations.invoice_sync import webhooks
from integrations.invoice_sync.models import WebhookDelivery
from tests.invoice_sync.conftest import sync

EVENT = "invoice updated"


def unpaid_ids(sim):
    return [r["id"] for r in sim.control.state("Invoice") if r["paymentstatus"] == 0]


def test_rereading_unchanged_invoices_updates_nothing(sim, tenant):
    sync(tenant, "initial")
    unpaid = unpaid_ids(sim)
    assert len(unpaid) > 2

    run = sync(tenant, "unpaid")  # every unpaid invoice read again, none changed

    assert (run.invoices_created, run.invoices_updated) == (0, 0)


def test_only_the_invoices_that_changed_count_as_updated(sim, tenant):
    sync(tenant, "initial")
    first, second, *_ = unpaid_ids(sim)
    sim.control.records("Invoice", {"id": first, "reference": "Revised March services"})
    [line, *others] = next(r for r in sim.control.state("Invoice") if r["id"] == second)["lines"]
    lines = [line | {"qty_order": line["qty_order"] + 1}, *others]
    sim.control.records("Invoice", {"id": second, "lines": lines})

    run = sync(tenant, "unpaid")

    assert run.invoices_updated == 2
    assert Invoice.objects.get(halo_id=first).reference == "Revised March services"
    stored = Invoice.objects.get(halo_id=second).lines.order_by("position").first()
    assert stored.quantity == line["qty_order"] + 1


def test_a_webhook_for_an_unchanged_invoice_is_processed_not_ignored(sim, tenant):
    sync(tenant, "initial")
    invoice_id = unpaid_ids(sim)[0]
    delivery = WebhookDelivery.objects.create(
        tenant=tenant, delivery_id="d-1", event=EVENT, object_id=str(invoice_id), payload={}
    )

    webhooks.process(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PROCESSED, delivery.error
