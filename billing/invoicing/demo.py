"""Demo step: invoicing settings, last month's billing run (all but one invoice issued, so
there is a draft to review), a one-off charge, and a PDF secret for trying the PDF API."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from billing.invoicing import tasks
from billing.invoicing.models import BillingRun, InvoicingSettings, OneOffCharge
from portal.demo import register
from portal.jobs import enqueue
from portal.models import ApiToken

PAYMENT_INSTRUCTIONS = """Bank transfer to Acme IT Services Ltd
Sort code 20-45-77 · Account 43917265
Please quote the invoice number as your reference."""


@register
def invoicing(context):
    tenant = context.tenant
    InvoicingSettings.objects.get_or_create(
        tenant=tenant,
        defaults={
            "tax_rate": Decimal("20"),
            "tax_label": "VAT",
            "payment_instructions": PAYMENT_INSTRUCTIONS,
        },
    )
    period_end = timezone.localdate(timezone=tenant.tz).replace(day=1) - timedelta(days=1)
    run, created = BillingRun.objects.get_or_create(
        tenant=tenant,
        period_start=period_end.replace(day=1),
        defaults={"period_end": period_end, "created_by": context.user},
    )
    if created:
        OneOffCharge.objects.create(
            tenant=tenant,
            organisation=tenant.organisations.order_by("name").first(),
            description="Onboarding: device enrolment and policy setup",
            quantity=12,
            unit_price=Decimal("15.00"),
            created_by=context.user,
        )
        run.build_drafts()
        drafts = run.invoices.drafts().order_by("organisation__name")
        issued = drafts.exclude(pk=drafts.last().pk).issue(context.user)
        enqueue(tasks.render_pdfs, [d.invoice_id for d in issued])
    context.notes.append(
        f"Invoicing: {run} with {run.invoices.issued().count()} issued invoices and "
        f"{run.invoices.drafts().count()} draft to review (Invoicing › Portal invoices)"
    )
    if not ApiToken.objects.filter(tenant=tenant, purpose=ApiToken.Purpose.PDF).exists():
        _, secret = ApiToken.issue(tenant, ApiToken.Purpose.PDF, "Halo PDF link", context.user)
        context.notes.append(
            f"Invoice PDF API secret (shown once): {secret} — try "
            f"curl -H 'Authorization: Bearer {secret}' "
            "http://127.0.0.1:8000/api/v1/invoices/INV-000001/pdf -o invoice.pdf"
        )
