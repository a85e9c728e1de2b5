import json
from datetime import timedelta

from django.conf import settings as conf
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from billing.models import Invoice
from billing.payments import autopay, display, tasks
from billing.payments.models import (
    AutoPayAttempt,
    AutoPaySkip,
    HaloOutbox,
    PayLinkAlert,
    Payment,
    PaymentAllocation,
    PaymentEvent,
    PaymentSettings,
    ProcessorEvent,
    SavedPaymentMethod,
)
from billing.payments.processors import ProcessorError
from portal.admin_base import (
    ReadOnlyTenantAdmin,
    SingletonSettingsAdmin,
    TenantScopedAdmin,
    TenantScopedForm,
    secret_field,
)
from portal.job_pages import ObjectActionsMixin
from portal.jobs import enqueue


class PaymentSettingsForm(TenantScopedForm):
    stripe_secret_key = secret_field(
        "Stripe secret key",
        "sk_live_… (or sk_test_… to try it out), or a restricted rk_ key. Stored encrypted, "
        "never shown again; leave blank to keep the stored key.",
    )
    stripe_webhook_secret = secret_field(
        "Stripe webhook signing secret",
        "whsec_…, from a Stripe webhook endpoint pointing at the URL below with the events "
        "checkout.session.*, payment_intent.* and charge.refunded. Stored encrypted.",
    )

    class Meta:
        model = PaymentSettings
        fields = [
            "processor",
            "use_halo_pdf",
            "pdf_fallback",
            "allow_partial",
            "halo_pay_buttons",
            "pay_unknown_invoices",
            "link_check",
            "halo_payment_method",
            "autopay_hour",
            "autopay_charge_on",
            "autopay_retry_days",
            "autopay_max_attempts",
        ]

    def clean(self):
        cleaned = super().clean()
        key, hook = cleaned.get("stripe_secret_key"), cleaned.get("stripe_webhook_secret")
        if key and not key.startswith(("sk_live_", "sk_test_", "rk_live_", "rk_test_")):
            self.add_error("stripe_secret_key", "A Stripe secret key starts with sk_ or rk_.")
        if hook and not hook.startswith("whsec_"):
            self.add_error("stripe_webhook_secret", "A signing secret starts with whsec_.")
        if cleaned.get("processor") == PaymentSettings.Processor.STRIPE:
            if not (key or self.instance.stripe_secret_key_encrypted):
                self.add_error("stripe_secret_key", "Stripe needs its secret key.")
            if not (hook or self.instance.stripe_webhook_secret_encrypted):
                self.add_error(
                    "stripe_webhook_secret",
                    "Stripe needs the signing secret: payments are confirmed by its webhook.",
                )
        return cleaned

    def save(self, commit=True):
        self.instance.set_stripe_secrets(
            self.cleaned_data.get("stripe_secret_key", ""),
            self.cleaned_data.get("stripe_webhook_secret", ""),
        )
        return super().save(commit)


@admin.register(PaymentSettings)
class PaymentSettingsAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    form = PaymentSettingsForm
    list_display = ["__str__", "processor", "processor_status", "halo_pay_buttons", "allow_partial"]
    readonly_fields = ["pay_link", "stripe_webhook_url", "processor_status", "autopay_forecast"]
    actions = ["add_pay_links"]
    fieldsets = [
        (
            "Processor",
            {
                "fields": [
                    "processor",
                    "processor_status",
                    "stripe_secret_key",
                    "stripe_webhook_secret",
                    "stripe_webhook_url",
                ]
            },
        ),
        (
            "Pay links",
            {"fields": ["pay_link", "link_check", "halo_pay_buttons", "pay_unknown_invoices"]},
        ),
        ("Recording in Halo", {"fields": ["halo_payment_method"]}),
        ("Pay page", {"fields": ["allow_partial", "use_halo_pdf", "pdf_fallback"]}),
        (
            "Auto-pay",
            {
                "fields": [
                    "autopay_forecast",
                    "autopay_hour",
                    "autopay_charge_on",
                    "autopay_retry_days",
                    "autopay_max_attempts",
                ]
            },
        ),
    ]

    @method_decorator(sensitive_post_parameters("stripe_secret_key", "stripe_webhook_secret"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        return (
            super().has_add_permission(request)
            and tenant is not None
            and not PaymentSettings.objects.filter(tenant=tenant).exists()
        )

    # -- read-only fields -----------------------------------------------------------------
    @admin.display(description="Link for Halo's invoice email")
    def pay_link(self, obj):
        if obj.pk is None:
            return "Shown once saved."
        return format_html(
            '<code class="once-secret">{}</code><div class="help">Paste into the invoice email '
            "template in Halo (Configuration &gt; Email &gt; Email Templates): Halo puts in the "
            "invoice's number as it sends the email. Matches the invoice number setting of "
            "Invoice sync.</div>",
            obj.pay_link_template(),
        )

    @admin.display(description="Stripe webhook URL")
    def stripe_webhook_url(self, obj):
        return obj.stripe_webhook_url() if obj.pk else "Shown once saved."

    @admin.display(description="Status")
    def processor_status(self, obj):
        processor = obj.processor_impl()
        if reason := processor.unavailable_reason():
            return f"✗ {reason}"
        if not processor.takes_real_money:
            return "Test mode: demo cards only, no real money is taken."
        return "✓ Live" if processor.is_live else "✓ Stripe test mode (sk_test_ key)"

    @admin.display(description="Forecast")
    def autopay_forecast(self, obj):
        url = reverse("admin:payments_paymentsettings_autopay_forecast")
        return format_html('<a href="{}">What the next auto-pay run charges and skips</a>', url)

    # -- actions --------------------------------------------------------------------------
    @admin.action(description="Add payment links to open invoices", permissions=["change"])
    def add_pay_links(self, request, queryset):
        for settings in queryset.select_related("tenant"):
            enqueue(tasks.add_pay_links, settings.tenant_id)
            self.message_user(
                request,
                f"{settings.tenant}: writing pay links into Halo for every unpaid invoice that "
                "lacks one, in batches; see the Halo outbox.",
            )

    # -- auto-pay forecast ----------------------------------------------------------------
    def get_urls(self):
        forecast = self.admin_site.admin_view(require_http_methods(["GET", "POST"])(self.forecast))
        return [
            path("autopay-forecast/", forecast, name="payments_paymentsettings_autopay_forecast"),
            *super().get_urls(),
        ]

    def forecast(self, request):
        """What the next run will charge and skip, with a Skip button per invoice."""
        tenant = request.access.tenant
        if tenant is None or not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            self.require_edit(request)
            invoice = self.get_object_or_404(request, request.POST.get("invoice"), Invoice.objects)
            if request.POST.get("do") == "skip":
                AutoPaySkip.objects.get_or_create(
                    invoice=invoice,
                    defaults={
                        "tenant": tenant,
                        "reason": request.POST.get("reason", "")[:200],
                        "created_by": request.user,
                    },
                )
                self.message_user(request, f"Invoice {invoice.display_number()} is skipped.")
            else:
                AutoPaySkip.objects.filter(invoice=invoice).delete()
                self.message_user(request, f"Invoice {invoice.display_number()} is back in.")
            return redirect(request.path)
        settings = PaymentSettings.for_tenant(tenant)
        day = autopay.next_run(settings, timezone.now())
        plans = autopay.plan(tenant, day)
        rows = [
            {
                "plan": plan,
                "number": plan.invoice.display_number(),
                "amount": display.money(
                    plan.amount or plan.invoice.amount_due, plan.invoice.currency, tenant
                ),
                "skipped": hasattr(plan.invoice, "autopay_skip"),
            }
            for plan in plans
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Auto-pay forecast",
            "tenant": tenant,
            "day": display.day(day, tenant),
            "hour": settings.autopay_hour,
            "charges": [row for row in rows if row["plan"].charges],
            "skips": [row for row in rows if not row["plan"].charges],
            "can_edit": self.has_edit_permission(request),
        }
        return TemplateResponse(request, "admin/payments/autopay_forecast.html", context)


class ReadOnlyInline(admin.TabularInline):
    """A payment's own rows, shown to whoever may view the payment: the payment admin has
    already found it in the active tenant (inlines would otherwise ask for Django model
    permissions, which tenant staff do not hold, and show nothing)."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        return self.admin_site._registry[self.parent_model].has_view_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PaymentEventInline(ReadOnlyInline):
    model = PaymentEvent
    fields = ["at", "from_status", "to_status", "source", "detail", "processor_event"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: list types differ


class PaymentAllocationInline(ReadOnlyInline):
    """A payment for several invoices: each invoice's share, what was refunded of it (newest
    first) and whether Halo has it."""

    model = PaymentAllocation
    fields = ["position", "invoice", "amount", "refunded_amount", "recorded"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: list types differ
    verbose_name = "invoice paid"
    verbose_name_plural = "invoices paid (allocated oldest first; refunds reverse the newest first)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice__tenant")


@admin.register(Payment)
class PaymentAdmin(ObjectActionsMixin, ReadOnlyTenantAdmin):
    list_display = [
        "created",
        "invoice_ref",
        "money",
        "status",
        "kind",
        "processor",
        "recorded",
        "payer_email",
    ]
    list_filter = ["status", "kind", "processor"]
    search_fields = ["invoice_ref", "=reference", "payer_email", "=public_id"]
    date_hierarchy = "created"
    inlines = [PaymentAllocationInline, PaymentEventInline]
    fields = [
        ("invoice", "invoice_ref"),
        ("amount", "currency"),
        ("status", "kind", "processor"),
        ("reference", "checkout_session"),
        ("failure_code", "failure_message"),
        ("card_brand", "card_last4"),
        ("payer_email", "client_ip"),
        ("save_method", "consent_text"),
        ("created", "succeeded_at", "recorded"),
        "receipt",
    ]
    readonly_fields = ["receipt"]
    actions = ["refund"]
    object_actions = ["refund"]  # a button on the payment's page too

    @admin.display(description="Amount", ordering="amount")
    def money(self, obj):
        money = display.money(obj.amount, obj.currency, obj.tenant)
        if obj.refunded_amount and obj.status != Payment.Status.REFUNDED:
            refunded = display.money(obj.refunded_amount, obj.currency, obj.tenant)
            return f"{money} ({refunded} refunded)"
        return money

    @admin.action(description="Refund in full", permissions=["edit"])
    def refund(self, request, queryset):
        """What is left of each succeeded payment goes back to the payer; Halo follows. Asks
        first, on a page stating each amount and what it undoes in Halo."""
        if request.POST.get("post") != "yes":
            return self.confirm_refund(request, queryset)
        done, problems = 0, []
        for payment in queryset.filter(status=Payment.Status.SUCCEEDED).select_related("tenant"):
            processor = PaymentSettings.for_tenant(payment.tenant).processor_impl(payment.processor)
            try:
                outcome = processor.refund(payment, payment.net_amount)
            except ProcessorError as error:
                problems.append(f"{payment.invoice_ref}: {error}")
                continue
            if outcome is not None:
                payment.apply(outcome, source=PaymentEvent.Source.SYSTEM)
            done += 1
        skipped = queryset.exclude(status=Payment.Status.SUCCEEDED).count()
        if done:
            self.message_user(
                request,
                f"{done} payment(s) refunded or sent to the processor to refund; Halo's "
                "invoices follow through the Halo outbox.",
            )
        if skipped:
            self.message_user(
                request, f"{skipped} skipped: only succeeded payments can be refunded.", "warning"
            )
        for problem in problems:
            self.message_user(request, f"Not refunded: {problem}", messages.ERROR)

    def confirm_refund(self, request, queryset):
        refundable = list(
            queryset.filter(status=Payment.Status.SUCCEEDED).select_related("tenant", "invoice")
        )
        rows = []
        for payment in refundable:

            def money(amount, payment=payment):
                return display.money(amount, payment.currency, payment.tenant)

            shares = [
                {"number": a.invoice.display_number(), "amount": money(a.net_amount)}
                for a in payment.allocations.select_related("invoice__tenant")
                if a.net_amount > 0
            ]
            rows.append(
                {
                    "payment": payment,
                    "amount": money(payment.net_amount),
                    "paid": money(payment.amount),
                    "shares": shares,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Refund payments in full?",
            "rows": rows,
            "skipped": queryset.exclude(status=Payment.Status.SUCCEEDED).count(),
            "queryset": refundable,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/payments/payment/refund_confirmation.html", context)

    @admin.display(description="Customer's page")
    def receipt(self, obj):
        return format_html('<a href="{0}">{0}</a>', obj.get_absolute_url())

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("tenant")


@admin.register(HaloOutbox)
class HaloOutboxAdmin(ReadOnlyTenantAdmin):
    """What the portal owes Halo; failed rows say what Halo answered and can be retried."""

    in_sidebar = False  # a reference list: reached from its job page

    list_display = ["created", "kind", "subject", "status", "attempts", "next_try", "error"]
    list_filter = ["status", "kind"]
    fields = [
        ("kind", "status"),
        ("payment", "invoice"),
        "url",
        ("attempts", "next_attempt"),
        "last_error",
        ("created", "delivered", "halo_id"),
    ]
    actions = ["retry_now"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("payment", "invoice__tenant")

    @admin.display(description="For")
    def subject(self, obj):
        if obj.payment_id:
            return (
                f"{obj.payment.amount} {obj.payment.currency} on invoice {obj.payment.invoice_ref}"
            )
        return f"Invoice {obj.invoice.display_number()}" if obj.invoice else ""

    @admin.display(description="Next attempt", ordering="next_attempt")
    def next_try(self, obj):
        return obj.next_attempt if obj.status == HaloOutbox.Status.PENDING else "–"

    @admin.display(description="Last error")
    def error(self, obj):
        return obj.last_error[:160] + ("…" if len(obj.last_error) > 160 else "")

    @admin.action(description="Retry now", permissions=["edit"])
    def retry_now(self, request, queryset):
        ids = [row.pk for row in queryset if row.retry()]
        if ids:
            enqueue(tasks.deliver_outbox, ids)
        self.message_user(request, f"{len(ids)} queued to be sent to Halo again.")


@admin.register(SavedPaymentMethod)
class SavedPaymentMethodAdmin(ReadOnlyTenantAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = ["__str__", "customer", "processor", "active", "consented_at", "consent_email"]
    list_filter = ["active", "processor"]
    search_fields = ["customer__name", "consent_email", "last4"]
    fields = [
        ("customer", "processor", "active"),
        ("brand", "last4"),
        ("reference", "processor_customer"),
        "consent_text",
        ("consented_at", "consent_email", "consent_ip"),
        ("source_payment", "source_setup", "covers_from"),
        "revoked",
    ]
    actions = ["revoke"]

    @admin.action(description="Revoke: stop charging these cards", permissions=["edit"])
    def revoke(self, request, queryset):
        methods = list(queryset.filter(active=True))
        for method in methods:
            method.revoke()
        self.message_user(request, f"{len(methods)} saved cards revoked.", messages.SUCCESS)


class AutoPaySkipForm(TenantScopedForm):
    class Meta:
        model = AutoPaySkip
        fields = ["invoice", "reason"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "invoice" in self.fields:
            self.fields["invoice"].queryset = self.fields["invoice"].queryset.filter(
                autopay_rule__isnull=False
            )


@admin.register(AutoPaySkip)
class AutoPaySkipAdmin(TenantScopedAdmin):
    """Invoices staff took out of auto-pay; delete a row to put its invoice back."""

    in_sidebar = False  # a reference list: reached from its job page

    form = AutoPaySkipForm
    list_display = ["invoice", "reason", "created_by", "created"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            obj.tenant = obj.invoice.tenant
        super().save_model(request, obj, form, change)


@admin.register(AutoPayAttempt)
class AutoPayAttemptAdmin(ReadOnlyTenantAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = ["day", "invoice", "payment", "outcome"]
    list_filter = ["day"]
    fields = ["day", "invoice", "payment", "outcome", "note"]
    readonly_fields = ["outcome"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice__tenant", "payment")


@admin.register(ProcessorEvent)
class ProcessorEventAdmin(ReadOnlyTenantAdmin):
    """Every processor webhook event whose signature checked, with what became of it: filter
    by state for the ones waiting for their payment (deferred) or needing staff (failed:
    unreadable, with the reason)."""

    in_sidebar = False  # a reference list: reached from its job page

    list_display = ["received", "state", "type", "event_id", "payment", "outcome"]
    list_filter = ["state", "type"]
    search_fields = ["=event_id", "=reference"]
    fields = [
        ("event_id", "type", "received"),
        ("state", "outcome"),
        ("payment", "reference", "refunded_total"),
        "pretty_payload",
    ]
    readonly_fields = ["pretty_payload"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("payment")

    @admin.display(description="Payload")
    def pretty_payload(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))


@admin.register(PayLinkAlert)
class PayLinkAlertAdmin(ReadOnlyTenantAdmin):
    """Incidents of pay-link lookups that look like someone guessing invoice numbers (see
    `billing.payments.enumeration`); the tenant's owners were emailed when each opened."""

    in_sidebar = False  # a reference list: reached from its job page

    list_display = ["started", "last_seen", "state", "reason", "address_list"]
    list_filter = ["is_open"]
    fields = [
        ("started", "last_seen", "state"),
        "reason",
        ("tenant_misses", "address_list"),
        ("emailed", "emailed_to"),
        "advice",
    ]
    readonly_fields = ["state", "address_list", "advice"]

    @admin.display(description="State", ordering="is_open")
    def state(self, obj):
        quiet = timedelta(seconds=conf.PAYMENTS_ALERT_QUIET)
        if obj.is_open and obj.last_seen > timezone.now() - quiet:
            return "Ongoing"
        return "Ended"

    @admin.display(description="Addresses (most misses in one window)")
    def address_list(self, obj):
        ranked = sorted(obj.addresses.items(), key=lambda item: -item[1])
        return ", ".join(f"{address} ({misses})" for address, misses in ranked) or "–"

    @admin.display(description="What to do")
    def advice(self, obj):
        url = reverse("admin:payments_paymentsettings_changelist")
        return format_html(
            "Lookups are limited per client address. To make a guessed invoice number show "
            'nothing, choose a question under “Ask before showing a pay page” in <a href="{}">'
            "Payment settings</a>.",
            url,
        )
