"""Delivering what the portal owes Halo, from the `HaloOutbox`, until it lands.

A payment the processor took is never lost: its row waits (retried with backoff) while Halo
is down, the connection is missing or the invoice has not arrived yet, and fails for staff
only on an answer that will not change by itself (Halo refusing the data). Creates are
keyed by (invoice_id, thirdpartyid), and a row tried before is first looked up in Halo, so
a response lost on the way back, or a worker killed mid-call, never records a payment twice.
"""

import logging
from decimal import Decimal
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import Invoice
from billing.payments.models import (
    NOT_IN_HALO,
    REFUNDED_AFTER_SENDING,
    REFUNDED_FIRST,
    HaloOutbox,
    Payment,
    PaymentSettings,
    PayPage,
    invoice_for_ref,
)
from integrations.halo import HaloClient, HaloError
from integrations.invoice_sync.store import Writer, to_halo
from integrations.models import HaloConnection

log = logging.getLogger(__name__)

NO_CONNECTION = (
    "No active Halo connection with Payments switched on: turn it on under Halo connections."
)


def connection_for(tenant_id):
    return HaloConnection.objects.for_feature(tenant_id, "payments")


def deliver(ids=None):
    """Deliver due rows (only `ids`, when given), per tenant; answers how many landed."""
    rows = HaloOutbox.objects.due().select_related(
        "tenant", "payment__invoice", "invoice", "allocation__invoice"
    )
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    landed = 0
    for tenant_id, group in groupby(rows.order_by("tenant_id", "created"), lambda r: r.tenant_id):
        claimed = [row for row in group if row.claim()]
        if not claimed:
            continue
        connection = connection_for(tenant_id)
        if connection is None:
            for row in claimed:
                row.defer(NO_CONNECTION)
            continue
        client = HaloClient(connection)
        for row in claimed:
            if row.kind in _PAYMENT_WRITES:
                landed += _attempt(row, _PAYMENT_WRITES[row.kind], client, row)
        links = [row for row in claimed if row.kind == HaloOutbox.Kind.PAY_LINK]
        for start in range(0, len(links), settings.HALO_BATCH_SIZE):
            landed += _write_pay_links(client, links[start : start + settings.HALO_BATCH_SIZE])
    return landed


def _attempt(row, func, *args):
    """`func(*args)`'s count of rows landed; a failure defers or fails the row instead."""
    try:
        return func(*args)
    except Waiting as waiting:
        row.defer(waiting)
        return 0
    except HaloError as error:
        row.fail(error) if error.permanent else row.defer(error)
        return 0
    except Exception as error:
        log.exception("Halo outbox row %s failed", row.pk)
        row.defer(f"Unexpected error: {type(error).__name__}: {error}")
        return 0


# -- payments -------------------------------------------------------------------------------


def _record_payment(client, row):
    """One `InvoicePayment`: a payment's, or one invoice's share of a payment for several
    (`row.allocation`), keyed alike by (invoice, the charge's reference): the shares of
    one charge land on different invoices."""
    invoice = (row.allocation.invoice if row.allocation else row.payment.invoice) or _match_unknown(
        row.payment
    )
    if invoice is None:
        raise Waiting(
            f"No invoice {row.payment.invoice_ref} in the portal yet: the payment is recorded "
            "in Halo once invoice sync brings that invoice."
        )
    sent_before = row.sent is not None
    payment = claim_payment_write(row)
    if payment is None:
        return 0
    recorded = payment if row.allocation is None else payment.allocations.get(pk=row.allocation_id)
    record = {
        "invoice_id": invoice.halo_id,
        "amount": float(recorded.net_amount),
        "date": to_halo(payment.succeeded_at or payment.created),
        "thirdpartyid": payment.halo_reference(),
    }
    if method := PaymentSettings.for_tenant(payment.tenant).halo_payment_method:
        record["method"] = method
    saved = (sent_before and _already_in_halo(client, record)) or (
        client.create_invoice_payments([record])[0]
    )
    current = _read_back(client, invoice)
    with transaction.atomic():
        if current is not None:
            Writer(invoice.tenant, client).invoices([current])
        recorded.mark_recorded(locally=current is None)
        row.succeed(saved.get("id", ""))
    return 1


def _record_refund(client, row):
    """Make Halo's record of the payment what is left of it: deleted when refunded in
    full, its amount lowered when in part. Waits for the payment's own row, which may
    still land it in Halo; looks the record up by its natural key, so it is idempotent."""
    payment = row.payment
    recording = payment.outbox_rows.filter(
        kind=HaloOutbox.Kind.PAYMENT, status=HaloOutbox.Status.PENDING, allocation=row.allocation
    )
    if recording.exists():
        raise Waiting("The payment is still on its way to Halo: its refund follows it.")
    # A payment for several invoices: this row corrects one invoice's share of it.
    kept = payment
    if row.allocation is not None:
        kept = payment.allocations.select_related("invoice").get(pk=row.allocation_id)
    invoice = kept.invoice
    key = {"invoice_id": invoice.halo_id, "thirdpartyid": payment.halo_reference()}
    existing = _already_in_halo(client, key)
    if existing is None:
        row.drop(NOT_IN_HALO)
        return 0
    if kept.net_amount <= 0:
        client.delete("InvoicePayment", existing["id"])
    elif Decimal(str(existing.get("amount", 0))) != kept.net_amount:
        update = {"id": existing["id"], "amount": float(kept.net_amount)}
        client.create_invoice_payments([update], natural_key=None)
    current = _read_back(client, invoice)
    with transaction.atomic():
        if current is not None:
            Writer(invoice.tenant, client).invoices([current])
        row.succeed(existing["id"])
    return 1


def _read_back(client, invoice):
    """Halo's invoice after a payment changed it, or None (the next sync brings it)."""
    try:
        return client.get_invoice(invoice.halo_id)
    except HaloError:
        return None


def claim_payment_write(row):
    """The payment as it stands, with the row marked sent, under the payment's row lock (a
    refund takes it too, so it either sees the row sent or is seen here); None when it is
    refunded in full (a refund row then removes whatever an earlier try left in Halo)."""
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(pk=row.payment_id)
        net = payment.net_amount
        if row.allocation_id is not None:  # one invoice's share of a payment for several
            net = payment.allocations.get(pk=row.allocation_id).net_amount
        if payment.status != Payment.Status.SUCCEEDED or net <= 0:
            row.drop(REFUNDED_FIRST if row.sent is None else REFUNDED_AFTER_SENDING)
            return None
        if row.sent is None:
            row._set(sent=timezone.now())
    return payment


def _match_unknown(payment):
    """An unknown-invoice payment's invoice, once invoice sync has brought it."""
    invoice = invoice_for_ref(payment.tenant, payment.invoice_ref)
    if invoice is not None and invoice.halo_id is not None:
        type(payment).objects.filter(pk=payment.pk).update(invoice=invoice)
        payment.invoice = invoice
        return invoice
    return None


def _already_in_halo(client, record):
    """The payment Halo holds for this record's natural key (an earlier try landed)."""
    for existing in client.list_invoice_payments(invoice_id=record["invoice_id"]):
        if str(existing.get("thirdpartyid") or "") == record["thirdpartyid"]:
            return existing
    return None


class Waiting(Exception):
    """Nothing can be sent yet; try again later."""


_PAYMENT_WRITES = {HaloOutbox.Kind.PAYMENT: _record_payment, HaloOutbox.Kind.REFUND: _record_refund}


# -- pay links ------------------------------------------------------------------------------


def queue_pay_links(tenant):
    """Queue a pay link for every unpaid Halo invoice not carrying its link yet (idempotent:
    invoices with the link, or a row on the way, are left alone); answers how many."""
    invoices = list(
        Invoice.objects.filter(tenant=tenant)
        .unpaid()
        .exclude(halo_id=None)
        .select_related("tenant")
    )
    pages = PayPage.objects.for_invoices(invoices)
    waiting = set(
        HaloOutbox.objects.filter(
            tenant=tenant,
            kind=HaloOutbox.Kind.PAY_LINK,
            status__in=[HaloOutbox.Status.PENDING, HaloOutbox.Status.FAILED],
        ).values_list("invoice_id", flat=True)
    )
    rows = []
    for invoice in invoices:
        url = pages[invoice.pk].public_url()
        if invoice.pay_link_url != url and invoice.pk not in waiting:
            rows.append(
                HaloOutbox(tenant=tenant, kind=HaloOutbox.Kind.PAY_LINK, invoice=invoice, url=url)
            )
    HaloOutbox.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def link_portal_invoices(tenant):
    """Give unpaid invoices the portal issued itself (not in Halo) their pay link, which
    their PDFs print when the tenant's invoicing settings ask for it."""
    invoices = list(
        Invoice.objects.filter(tenant=tenant, source=Invoice.Source.PORTAL, posted=True)
        .unpaid()
        .filter(halo_id=None)
        .select_related("tenant")
    )
    pages = PayPage.objects.for_invoices(invoices)
    linked = 0
    for invoice in invoices:
        if invoice.pay_link_url != (url := pages[invoice.pk].public_url()):
            linked += Invoice.objects.filter(pk=invoice.pk).update(pay_link_url=url)
    return linked


def _write_pay_links(client, rows):
    """One POST for the batch; when Halo refuses it, each row alone, so one bad invoice
    cannot hold back the rest."""
    records = [
        {"id": row.invoice.halo_id, "generic_online_invoice_payment_url": row.url} for row in rows
    ]
    try:
        client.upsert_invoices(records)
    except HaloError as error:
        if error.permanent and len(rows) > 1:
            return sum(_write_pay_links(client, [row]) for row in rows)
        for row in rows:
            row.fail(error) if error.permanent else row.defer(error)
        return 0
    with transaction.atomic():
        for row in rows:
            Invoice.objects.filter(pk=row.invoice_id).update(pay_link_url=row.url)
            row.succeed(row.invoice.halo_id)
    return len(rows)
