"""Export issued portal invoices to Halo: created once, updated after, PDF attached.

Idempotent at every step. The Halo id is stored after the create, and line ids with it, so
exporting again updates the same invoice and lines. Before a first create Halo is searched
for the invoice's number (`thirdpartyinvoicenumber`), so an invoice created by an export
that died before storing the id is adopted, not duplicated; within one call the client's
natural key covers a lost answer. The PDF is uploaded only when this version is not attached
yet and Halo holds no attachment of the same name; the version it replaces is removed.
"""

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

from billing.invoicing.models import InvoicingSettings, PdfServed
from billing.invoicing.pdfs import HALO_INVOICE_ATTACHMENT, PdfUnavailable, resolve_pdf
from billing.models import InvoiceLine
from integrations.billing_sync.models import OrganisationMapping, ProductMapping
from integrations.halo import HaloClient, HaloError, HaloNotFound
from integrations.halo.records import linked_item_id
from integrations.models import HaloConnection

log = logging.getLogger(__name__)

NATURAL_KEY = ("client_id", "thirdpartyinvoicenumber")


class ExportError(Exception):
    """The invoice cannot be exported until staff fix something (the message says what)."""


@dataclass(frozen=True)
class ExportResult:
    created: bool  # a new Halo invoice (else an update)
    attached: bool  # a PDF was uploaded


def export_invoices(invoices):
    """Export `PortalInvoice`s (`exportable()` ones) per tenant; each records its outcome.
    Answers counts: created, updated, attached, failed."""
    counts = Counter()
    by_tenant = {}
    for details in invoices:
        by_tenant.setdefault(details.tenant_id, []).append(details)
    for batch in by_tenant.values():
        connection = HaloConnection.objects.for_feature(batch[0].tenant, "invoice_sync")
        client = HaloClient(connection) if connection else None
        for details in batch:
            try:
                if client is None:
                    raise ExportError(
                        "No active Halo connection with invoice sync switched on: add one "
                        "under Halo connections."
                    )
                result = export_invoice(details, client)
            except (ExportError, HaloError) as error:
                log.warning("Export of %s to Halo failed: %s", details, error)
                details.record_export(exported=False, error=str(error))
                counts["failed"] += 1
                continue
            except Exception as error:  # one invoice's bug must not stop the others
                log.exception("Export of %s to Halo crashed", details)
                details.record_export(
                    exported=False,
                    error=f"The export stopped on an unexpected error ({type(error).__name__}); "
                    "the details are in the worker log. Export it again once it is fixed.",
                )
                counts["failed"] += 1
                continue
            counts["created" if result.created else "updated"] += 1
            if result.attached:
                counts["attached"] += 1
    return counts


def export_invoice(details, client):
    """Create or update the Halo invoice of one issued `PortalInvoice`, then attach its PDF
    when the tenant's setting says so. Raises ExportError or HaloError."""
    if details.is_draft:
        raise ExportError(f"{details} is a draft: issue it before exporting it.")
    if details.credit_note_of_id:
        raise ExportError(
            f"{details} stays in the portal: Halo takes no negative invoices, so exporting "
            f"{details.credit_note_of} again voids it there instead."
        )
    invoice = details.invoice
    record = _halo_record(details, client)
    created = invoice.halo_id is None
    if created and (existing := _find_in_halo(client, record)):
        _adopt(invoice, existing)
        record = _halo_record(details, client)
        created = False
    [saved] = client.upsert_invoices([record], natural_key=NATURAL_KEY)
    _store_ids(invoice, saved)
    attached, error = False, ""
    if InvoicingSettings.for_tenant(details.tenant).attach_pdf_on_export:
        try:
            attached = _attach_pdf(details, client)
        except PdfUnavailable as unavailable:
            error = f"Exported, but the PDF was not attached: {unavailable}"
    details.record_export(exported=True, error=error)
    return ExportResult(created=created, attached=attached)


def attachment_filename(details, version):
    """One name per PDF version, so an upload whose answer was lost is found by name."""
    suffix = f" v{version.number}" if version.number > 1 else ""
    return f"Invoice {details.number}{suffix}.pdf"


def _halo_record(details, client):
    invoice = details.invoice
    client_id = _halo_client_id(details)
    items = _halo_items(details.tenant)
    lines = []
    unmapped = set()
    for line in invoice.lines.all():
        halo_line = {
            "item_code": line.code,
            "item_shortdescription": line.description,
            "qty_order": float(line.quantity),
            "unit_price": float(line.unit_price),
            "tax_rate": float(line.tax_rate),
        }
        if line.halo_id:
            halo_line["id"] = line.halo_id
        if line.long_description:
            halo_line["item_longdescription"] = line.long_description
        if line.start_date and line.end_date:
            halo_line["startdate"] = line.start_date.isoformat()
            halo_line["enddate"] = line.end_date.isoformat()
        sku = line.code.casefold()
        if sku in items:
            if items[sku] is None:
                unmapped.add(line.code)
            else:
                halo_line["_itemid"] = items[sku]
        lines.append(halo_line)
    if unmapped:
        raise ExportError(
            f"Map {', '.join(sorted(unmapped))} to Halo items (Billing sync › Product "
            "mappings) before exporting."
        )
    record = {
        "client_id": client_id,
        "invoicenumber": details.number,
        "thirdpartyinvoicenumber": details.number,
        "invoice_date": invoice.invoice_date.isoformat(),
        "duedate": invoice.due_date.isoformat(),
        "currency_code": _halo_currency_id(client, invoice.currency),
        "reference": f"Billing period {details.period_start} to {details.period_end}",
        "voided": invoice.voided,
        "lines": lines,
    }
    if invoice.halo_id:
        record["id"] = invoice.halo_id
    return record


def _halo_currency_id(client, code):
    """Halo's id of the invoice's currency: Halo takes a currency id, not an ISO code."""
    currency_id = client.currency_id(code)
    if currency_id is None:
        raise ExportError(
            f"Halo has no {code} currency. Add it in Halo (Configuration › Financial › "
            "Currencies), then export again."
        )
    return currency_id


def _halo_client_id(details):
    mapping = (
        OrganisationMapping.objects.filter(organisation=details.organisation)
        .select_related("halo_client")
        .first()
    )
    if mapping is None:
        raise ExportError(
            f"Map {details.organisation} to a Halo client (Billing sync › Organisation "
            "mappings) before exporting."
        )
    if mapping.problem:
        raise ExportError(mapping.problem)
    return mapping.halo_client.halo_id


def _halo_items(tenant):
    """SKU (case-folded) -> Halo item id for mapped products, None for unmapped ones."""
    items = dict.fromkeys(sku.casefold() for sku in tenant.products.values_list("sku", flat=True))
    for mapping in ProductMapping.objects.filter(tenant=tenant).select_related(
        "product", "halo_item"
    ):
        if mapping.problem:
            raise ExportError(mapping.problem)
        items[mapping.product.sku.casefold()] = mapping.halo_item.halo_id
    return items


def _find_in_halo(client, record):
    """The Halo invoice already carrying this number for this client, or None."""
    number = record["thirdpartyinvoicenumber"]
    found = client.list_invoices(client_id=record["client_id"], search=number, includelines=True)
    return next((r for r in found if r.get("thirdpartyinvoicenumber") == number), None)


def _adopt(invoice, existing):
    """Take over a Halo invoice created by an earlier export: its id and line ids."""
    invoice.halo_id = existing["id"]
    invoice.save(update_fields=["halo_id"])
    _store_line_ids(invoice, existing.get("lines") or [])


def _store_ids(invoice, saved):
    if invoice.halo_id != saved["id"]:
        invoice.halo_id = saved["id"]
        invoice.save(update_fields=["halo_id"])
    _store_line_ids(invoice, saved.get("lines") or [])


def _store_line_ids(invoice, halo_lines):
    lines = list(invoice.lines.all())
    if len(lines) != len(halo_lines):
        return  # not the lines we sent: the next export replaces them
    for line, halo_line in zip(lines, halo_lines, strict=True):
        line.halo_id = halo_line.get("id") or line.halo_id
        line.item_halo_id = linked_item_id(halo_line) or line.item_halo_id
    InvoiceLine.objects.bulk_update(lines, ["halo_id", "item_halo_id"])


def _attach_pdf(details, client):
    """Upload the current PDF unless it is attached already; answers whether it uploaded."""
    resolved = resolve_pdf(details.invoice, PdfServed.Channel.EXPORT, fallback=False)
    version = resolved.version
    if details.attached_pdf_id == version.pk and details.halo_attachment_id:
        return False
    halo_id = details.invoice.halo_id
    filename = attachment_filename(details, version)
    attachments = list(client.list_attachments(type=HALO_INVOICE_ATTACHMENT, unique_id=halo_id))
    same = next((a for a in attachments if a.get("filename") == filename), None)
    attachment = same or client.create_attachment(
        filename, resolved.content, HALO_INVOICE_ATTACHMENT, halo_id
    )
    previous = details.halo_attachment_id
    if previous and previous != int(attachment["id"]):
        with contextlib.suppress(HaloNotFound):
            client.delete("Attachment", previous)  # the superseded version we uploaded
    details.halo_attachment_id, details.attached_pdf = int(attachment["id"]), version
    return same is None
