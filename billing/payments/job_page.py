"""The payments page: the processor, pay links in Halo, what the portal still owes Halo
(the outbox), auto-pay's next run, and the recent payments with their refunds."""

from datetime import timedelta

from django.contrib import messages
from django.urls import reverse
from django.utils import timezone

from billing.models import Invoice
from billing.payments import autopay, display, tasks
from billing.payments.models import HaloOutbox, Payment, PaymentSettings
from integrations.models import HaloConnection
from portal.job_pages import Button, JobPage, Link, when
from portal.jobs import enqueue

RECENT_PAYMENTS = 10


class PaymentsPage(JobPage):
    name = "payments"
    route = "payments/"
    title = "Payments"
    template = "admin/jobs/payments.html"
    settings_model = PaymentSettings
    actions = {"add-pay-links/": "add_pay_links"}

    def context(self, request, tenant):
        settings = PaymentSettings.for_tenant(tenant)
        connection = HaloConnection.objects.for_feature(tenant, "payments")
        no_connection = (
            ""
            if connection
            else "No active Halo connection has Payments switched on: payments and pay links "
            "wait in the outbox until one does."
        )
        unpaid = Invoice.objects.filter(tenant=tenant).unpaid().exclude(halo_id=None)
        outbox = HaloOutbox.objects.filter(tenant=tenant)
        outbox_url = reverse("admin:payments_halooutbox_changelist")
        pending = outbox.filter(status=HaloOutbox.Status.PENDING)
        oldest = pending.order_by("created").first()
        payments = (
            Payment.objects.filter(tenant=tenant).select_related("tenant").order_by("-created")
        )
        month = payments.filter(
            status=Payment.Status.SUCCEEDED, succeeded_at__gte=timezone.now() - timedelta(30)
        )
        return {
            "settings": settings,
            "settings_url": reverse("admin:payments_paymentsettings_change", args=[settings.pk]),
            "processor": settings.get_processor_display(),
            "processor_status": self.model_admin.processor_status(settings),
            "settings_rows": [
                ("Partial payments", "Allowed" if settings.allow_partial else "Amount due in full"),
                ("PDF on pay pages", "Halo's" if settings.use_halo_pdf else "The portal's"),
                ("Pay button in Halo", "On" if settings.halo_pay_buttons else "Off"),
            ],
            "pay_link": settings.pay_link_template(),
            "no_connection": no_connection,
            "unpaid": unpaid.count(),
            "linked": unpaid.exclude(pay_link_url="").count(),
            "outbox": {
                "pending": pending.count(),
                "failed": outbox.filter(status=HaloOutbox.Status.FAILED).count(),
                "oldest": when(oldest.created, tenant) if oldest else "",
                "oldest_error": oldest.last_error if oldest else "",
                "pending_url": f"{outbox_url}?status__exact={HaloOutbox.Status.PENDING}",
                "failed_url": f"{outbox_url}?status__exact={HaloOutbox.Status.FAILED}",
            },
            "autopay": {
                "day": display.day(autopay.next_run(settings, timezone.now()), tenant),
                "hour": settings.autopay_hour,
                "rules": tenant.autopay_rules.filter(enabled=True).count(),
                "forecast_url": reverse("admin:payments_paymentsettings_autopay_forecast"),
            },
            "month": month.count(),
            "payments": [
                (payment, display.money(payment.amount, payment.currency, tenant))
                for payment in payments[:RECENT_PAYMENTS]
            ],
            "buttons": [
                Button(
                    "Add payment links to open invoices",
                    self.url("add_pay_links"),
                    disabled="Needs a Halo connection with Payments on." if no_connection else "",
                    primary=True,
                    help="Writes each unpaid Halo invoice's pay-page address into Halo (its "
                    "Pay button), in batches through the outbox; invoices that have it are "
                    "left alone.",
                )
            ],
            "links": [
                Link(
                    "Payments (refund from a payment's page)",
                    reverse("admin:payments_payment_changelist"),
                ),
                Link("Halo outbox", outbox_url),
                Link(
                    "Auto-pay forecast", reverse("admin:payments_paymentsettings_autopay_forecast")
                ),
                Link("Auto-pay attempts", reverse("admin:payments_autopayattempt_changelist")),
                Link("Saved cards", reverse("admin:payments_savedpaymentmethod_changelist")),
                Link("Processor events", reverse("admin:payments_processorevent_changelist")),
                Link("Pay-link alerts", reverse("admin:payments_paylinkalert_changelist")),
                Link("PDFs served", reverse("admin:invoicing_pdfserved_changelist")),
            ],
        }

    def add_pay_links(self, request):
        tenant = self.model_admin.require_edit(request)
        enqueue(tasks.add_pay_links, tenant.pk)
        return self.back(
            request,
            messages.SUCCESS,
            "Writing pay links into Halo for every unpaid invoice that lacks one, in batches; "
            "the Halo outbox shows each.",
        )
