"""The admin home's rows for invoicing: portal invoices, and how invoice PDFs are served."""

from datetime import timedelta

from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone

from billing.invoicing.models import PdfServed, PdfVersion, PortalInvoice
from portal.health import HealthRow, provider
from portal.models import ApiToken


@provider
def portal_invoices(tenant):
    invoices = PortalInvoice.objects.filter(tenant=tenant)
    if not invoices.exists():
        return []  # this tenant bills from Halo only
    url = reverse("admin:invoicing_portalinvoice_changelist")
    failed = invoices.issued().exclude(export_error="").count()
    drafts = invoices.drafts().count()
    if failed:
        return [HealthRow("Portal invoices", "error", f"{failed} exports to Halo failed", url)]
    if drafts:
        return [
            HealthRow(
                "Portal invoices",
                "warn",
                f"{drafts} draft{pluralize(drafts)} to review and issue",
                url,
            )
        ]
    issued = invoices.issued()
    text = f"{issued.count()} issued, {issued.exclude(exported_at=None).count()} in Halo"
    return [HealthRow("Portal invoices", "ok", text, url)]


@provider
def invoice_pdfs(tenant):
    served = PdfServed.objects.filter(invoice__tenant=tenant)
    fallbacks = (
        served.exclude(fallback_reason="")
        .filter(last_served__gte=timezone.now() - timedelta(days=1))
        .count()
    )
    if fallbacks:
        url = reverse("admin:invoicing_pdfserved_changelist") + "?fallback=yes"
        text = f"{fallbacks} served from a fallback source in 24 hours"
        return [HealthRow("Invoice PDFs", "warn", text, url)]
    tokens = ApiToken.objects.usable().filter(tenant=tenant, purpose=ApiToken.Purpose.PDF)
    if not tokens.exists():
        url = reverse("admin:portal_apitoken_add") + "?purpose=pdf&name=Halo+PDF+link"
        text = "No PDF secret yet: create one for Halo to fetch invoice PDFs"
        return [HealthRow("Invoice PDFs", "idle", text, url)]
    versions = PdfVersion.objects.filter(invoice__tenant=tenant).count()
    url = reverse("admin:invoicing_invoicepdf_changelist")
    return [HealthRow("Invoice PDFs", "ok", f"{versions} PDF versions stored", url)]
