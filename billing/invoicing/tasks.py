"""django-q2 entry points (queued with `portal.jobs.enqueue`)."""

from billing.invoicing.export import export_invoices
from billing.invoicing.models import PortalInvoice
from billing.invoicing.pdfs import store_portal_pdf
from billing.models import Invoice


def render_pdfs(invoice_ids):
    """Store the current PDF of each invoice, so the first download is served, not rendered."""
    for invoice in Invoice.objects.filter(pk__in=invoice_ids).select_related("tenant"):
        store_portal_pdf(invoice)
    return len(invoice_ids)


def export_to_halo(portal_invoice_ids):
    details = PortalInvoice.objects.exportable().filter(pk__in=portal_invoice_ids)
    counts = export_invoices(details.select_related("tenant", "invoice", "organisation"))
    return dict(counts)
