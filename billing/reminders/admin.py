"""Reminders in the admin: the tenant's settings with tomorrow's preview, every reminder sent
(and any that need attention), customers' opt-outs, and the staff payment emails."""

from datetime import timedelta

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from billing.models import Customer, Invoice
from billing.payments import display
from billing.reminders import dunning, emails, tasks
from billing.reminders.models import (
    DEFAULT_STEPS,
    PaymentNotice,
    Reminder,
    ReminderOptOut,
    ReminderSettings,
    step_label,
)
from portal.admin_base import (
    ReadOnlyTenantAdmin,
    SingletonSettingsAdmin,
    TenantScopedAdmin,
    TenantScopedForm,
)
from portal.jobs import enqueue

STEPS_ERROR = "Enter whole numbers of days, for example -3, 1, 7, 14."


class StepsField(forms.CharField):
    """The schedule as staff type it: "-3, 1, 7, 14"."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(step) for step in sorted(value))
        return value

    def to_python(self, value):
        text = (super().to_python(value) or "").replace(";", ",")
        try:
            return sorted(int(part) for part in text.replace(" ", ",").split(",") if part)
        except ValueError:
            raise ValidationError(STEPS_ERROR) from None


class ReminderSettingsForm(TenantScopedForm):
    steps = StepsField(
        label="Schedule",
        help_text=ReminderSettings._meta.get_field("steps").help_text
        + f" Default: {', '.join(map(str, DEFAULT_STEPS))}.",
        required=False,
    )

    class Meta:
        model = ReminderSettings
        fields = [
            "enabled",
            "steps",
            "send_hour",
            "from_name",
            "reply_to",
            "payment_notices",
            "payment_notice_to",
            "payment_notice_emails",
        ]
        widgets = {"payment_notice_emails": forms.Textarea(attrs={"rows": 3})}

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("enabled") and not cleaned.get("steps"):
            self.add_error("steps", "Enter at least one day, or switch reminders off.")
        return cleaned


@admin.register(ReminderSettings)
class ReminderSettingsAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    form = ReminderSettingsForm
    list_display = ["__str__", "enabled", "schedule", "send_hour", "payment_notices"]
    readonly_fields = ["preview_link"]
    fieldsets = [
        (
            "Reminders to customers",
            {"fields": ["enabled", "steps", "send_hour", "preview_link"]},
        ),
        ("Sender", {"fields": ["from_name", "reply_to"]}),
        (
            "Payment emails to staff",
            {"fields": ["payment_notices", "payment_notice_to", "payment_notice_emails"]},
        ),
    ]

    def changelist_view(self, request, extra_context=None):
        if request.access.tenant is not None:
            ReminderSettings.for_tenant(request.access.tenant)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        exists = tenant is not None and ReminderSettings.objects.filter(tenant=tenant).exists()
        return super().has_add_permission(request) and not exists

    @admin.display(description="Schedule")
    def schedule(self, obj):
        return ", ".join(step_label(step) for step in obj.sorted_steps()) or "–"

    @admin.display(description="Preview")
    def preview_link(self, obj):
        url = reverse("admin:reminders_remindersettings_preview")
        return format_html('<a href="{}">The reminders that go out tomorrow</a>', url)

    # -- tomorrow's preview ---------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view(require_http_methods(["GET", "POST"])(self.preview))
        return [
            path("preview/", view, name="reminders_remindersettings_preview"),
            *super().get_urls(),
        ]

    def preview(self, request):
        """Tomorrow's reminders (invoice, customer, step, address) and what is skipped and
        why; `?invoice=<id>&step=<days>` shows one email as it will be sent; a POST stops
        reminders for a customer."""
        tenant = request.access.tenant
        if tenant is None:
            self.message_user(request, "Choose a tenant to see its reminders.", "warning")
            return redirect("admin:index")
        if request.method == "POST":
            return self._opt_out(request)
        if "invoice" in request.GET:
            return self._email(request, tenant)
        settings = ReminderSettings.for_tenant(tenant)
        plan = dunning.preview(tenant, timezone.now())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Reminders going out tomorrow",
            "tenant": tenant,
            "settings": settings,
            "preview": plan,
            "tomorrow": display.day(plan.tomorrow, tenant),
            "rows": [self._row(due, tenant) for due in plan.tomorrow_sends],
            "skips": [self._row(due, tenant) for due in plan.tomorrow_skips],
            "today": [self._row(due, tenant) for due in plan.pending_today],
            "waiting": self._waiting(settings, timezone.now()),
            "can_edit": self.has_edit_permission(request),
        }
        return TemplateResponse(request, "reminders/admin/preview.html", context)

    @staticmethod
    def _waiting(settings, now):
        if not settings.enabled:
            return "Reminders are off"
        if settings.day_due(now) is None:
            return f"Goes out from {settings.send_hour}:00"
        return "Goes out with the next run (every 15 minutes)"

    def _row(self, due, tenant):
        invoice = due.invoice
        return {
            "due": due,
            "number": invoice.display_number(),
            "invoice_url": reverse("admin:billing_invoice_change", args=[invoice.pk]),
            "amount": display.money(invoice.amount_due, invoice.currency, tenant),
            "due_date": display.day(invoice.due_date, tenant),
            "email_url": reverse("admin:reminders_remindersettings_preview")
            + f"?invoice={invoice.pk}&step={due.step}",
        }

    def _email(self, request, tenant):
        """One reminder email exactly as it goes out (HTML, or `&format=text`)."""
        invoice = self.get_object_or_404(
            request,
            request.GET.get("invoice"),
            Invoice.objects.select_related("customer", "tenant__invoice_sync_settings"),
        )
        steps = ReminderSettings.for_tenant(tenant).sorted_steps()
        try:
            step = int(request.GET.get("step", ""))
        except ValueError:
            step = None
        if step not in steps or invoice.customer is None or invoice.due_date is None:
            return HttpResponse(
                "No such reminder: the invoice needs a customer and a due date, and the step "
                "must be in the schedule.",
                status=404,
                content_type="text/plain; charset=utf-8",
            )
        due = dunning.Due(
            invoice,
            step,
            invoice.due_date + timedelta(days=step),
            to=invoice.customer.billing_email,
            final=step == steps[-1] and step > 0,
        )
        rendered = emails.render_reminder(due)
        if request.GET.get("format") == "text":
            body = f"Subject: {rendered.subject}\n\n{rendered.text}"
            return HttpResponse(body, content_type="text/plain; charset=utf-8")
        return HttpResponse(rendered.html)

    def _opt_out(self, request):
        tenant = self.require_edit(request)
        if request.POST.get("do") != "opt_out":
            self.message_user(request, "Nothing changed.", "warning")
            return redirect(request.path)
        customer = self.get_object_or_404(request, request.POST.get("customer"), Customer.objects)
        ReminderOptOut.objects.get_or_create(
            customer=customer,
            defaults={
                "tenant": tenant,
                "source": ReminderOptOut.Source.STAFF,
                "created_by": request.user,
            },
        )
        self.message_user(request, f"{customer} gets no more reminders.")
        return redirect(request.path)


@admin.register(Reminder)
class ReminderAdmin(ReadOnlyTenantAdmin):
    list_display = ["day", "invoice_number", "customer", "step_label", "to", "state"]
    list_filter = ["status", "step", "day"]
    search_fields = ["to", "customer__name", "invoice__third_party_number", "=invoice__halo_id"]
    date_hierarchy = "day"
    fields = [
        "invoice",
        "customer",
        ("step", "due_date", "day"),
        "to",
        "state",
        ("claimed_at", "sent_at", "attempts"),
    ]
    readonly_fields = ["state"]
    actions = ["send_again"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("customer", "invoice__tenant__invoice_sync_settings")
        )

    @admin.display(description="Invoice", ordering="invoice")
    def invoice_number(self, obj):
        return obj.invoice.display_number()

    @admin.display(description="Step", ordering="step")
    def step_label(self, obj):
        return obj.step_label

    @admin.display(description="Status", ordering="status")
    def state(self, obj):
        return obj.state

    @admin.action(description="Send again (failed or unconfirmed only)", permissions=["edit"])
    def send_again(self, request, queryset):
        """Staff decide: an unconfirmed reminder may have gone out, so the customer may get
        it twice. Sent ones are never sent again."""
        chosen = list(queryset.need_attention())
        for reminder in chosen:
            enqueue(tasks.send_reminder_again, reminder.pk)
        skipped = queryset.count() - len(chosen)
        if chosen:
            self.message_user(request, f"{len(chosen)} reminder(s) are being sent again.")
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: only failed and unconfirmed reminders are sent again.",
                "warning",
            )


class ReminderOptOutForm(TenantScopedForm):
    class Meta:
        model = ReminderOptOut
        fields = ["customer", "note"]


@admin.register(ReminderOptOut)
class ReminderOptOutAdmin(TenantScopedAdmin):
    """Adding a customer stops their reminders; deleting the row sends them again."""

    in_sidebar = False  # a reference list: reached from its job page

    form = ReminderOptOutForm
    list_display = ["customer", "source", "created", "created_by", "note"]
    list_filter = ["source"]
    search_fields = ["customer__name", "customer__billing_email"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["source", "created", "created_by"]

    def get_fields(self, request, obj=None):
        return ["customer", "note", *(["source", "created", "created_by"] if obj else [])]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, *(["customer"] if obj else [])]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.source, obj.created_by = ReminderOptOut.Source.STAFF, request.user
        super().save_model(request, obj, form, change)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("customer", "created_by")


@admin.register(PaymentNotice)
class PaymentNoticeAdmin(ReadOnlyTenantAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = ["created", "payment", "to", "status", "error"]
    list_filter = ["status"]
    fields = ["payment", "to", "status", "error", "created"]
