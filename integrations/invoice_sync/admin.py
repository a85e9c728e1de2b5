import json

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.text import Truncator

from integrations.halo import HaloClient, HaloError, web_budget
from integrations.invoice_sync import tasks, webhooks
from integrations.invoice_sync.models import (
    ActionLimit,
    InvoiceSyncRun,
    InvoiceSyncSettings,
    SyncState,
    WebhookDelivery,
)
from integrations.models import HaloConnection
from portal.admin_base import ReadOnlyTenantAdmin, SingletonSettingsAdmin, TenantScopedAdmin
from portal.jobs import enqueue

FETCH_ACTIONS = ("fetch_new", "fetch_unpaid")


def _when(moment, tenant):
    return f"{moment.astimezone(tenant.tz):%d %b %Y %H:%M} ({tenant.time_zone})"


def start_fetch(sync_settings, action):
    """Start a manual fetch (`ActionLimit.Action`) on the worker, within its rate limit.
    Answers `(message level, what happened)`; the changelist action and the job page's
    buttons both come here."""
    tenant, label = sync_settings.tenant, ActionLimit.Action(action).label
    if not sync_settings.is_primary:
        return messages.WARNING, (
            f"{tenant}: Halo is a secondary integration, so {label} is not offered; "
            "the hourly schedule and webhooks keep invoices current."
        )
    if HaloConnection.objects.for_feature(tenant, "invoice_sync") is None:
        return messages.ERROR, NO_CONNECTION.format(tenant=tenant)
    allowed, next_allowed = ActionLimit.claim(tenant, action)
    if not allowed:
        return messages.WARNING, (
            f"{tenant}: {label} ran recently. It can run again from {_when(next_allowed, tenant)}."
        )
    claimed_at = next_allowed - ActionLimit.INTERVALS[action]
    enqueue(tasks.sync_tenant, tenant.pk, action, "manual", claimed_at)
    return messages.SUCCESS, (
        f"{tenant}: {label} started in the background; see Sync runs. If it fails, "
        "it can be started again at once."
    )


def register_webhook_in_halo(sync_settings, budget=None):
    """Create or update the tenant's webhook in Halo, within the page's Halo budget.
    Answers `(message level, what happened)`, like `start_fetch`."""
    tenant = sync_settings.tenant
    connection = HaloConnection.objects.for_feature(tenant, "invoice_sync")
    if connection is None:
        return messages.ERROR, NO_CONNECTION.format(tenant=tenant)
    try:
        webhooks.register(sync_settings, HaloClient(connection, budget=budget or web_budget()))
    except HaloError as error:
        if error.transient and (error.method, error.endpoint) == ("POST", "/Webhook"):
            error.note(
                "Register it again: Halo may hold the webhook with credentials the "
                "portal did not keep, and would have its deliveries refused until then."
            )
        return messages.ERROR, f"{tenant}: {error}"
    return messages.SUCCESS, (
        f"{tenant}: webhook registered in Halo for {', '.join(webhooks.EVENTS)}, "
        f"posting to {webhooks.webhook_url(tenant)} with new credentials."
    )


NO_CONNECTION = "{tenant}: no active Halo connection with invoice sync switched on."
#: The run list fits a 1366 px laptop with its status and error columns.
FIT_LISTS = forms.Media(css={"all": ["portal/fit_lists.css"]})


@admin.register(InvoiceSyncSettings)
class InvoiceSyncSettingsAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    list_display = [
        "__str__",
        "halo_role",
        "number_field",
        "created_since",
        "fetch_new_availability",
        "fetch_unpaid_availability",
        "webhook_status",
    ]
    fields = [
        "created_since",
        "number_field",
        "halo_role",
        "sync_position",
        "webhook_url",
        "webhook_status",
    ]
    readonly_fields = ["sync_position", "webhook_url", "webhook_status"]
    actions = ["fetch_new", "fetch_unpaid", "register_webhook"]

    def has_add_permission(self, request):
        tenant = request.access.tenant
        return (
            super().has_add_permission(request)
            and tenant is not None
            and not InvoiceSyncSettings.objects.filter(tenant=tenant).exists()
        )

    def get_actions(self, request):
        """A secondary integration is kept current by the schedule and webhooks only."""
        actions = super().get_actions(request)
        settings = InvoiceSyncSettings.objects.filter(tenant=request.access.tenant).first()
        if settings is not None and not settings.is_primary:
            for name in FETCH_ACTIONS:
                actions.pop(name, None)
        return actions

    # -- columns and read-only fields ---------------------------------------------------
    @admin.display(description="Fetch new data")
    def fetch_new_availability(self, obj):
        return self._availability(obj, ActionLimit.Action.FETCH_NEW)

    @admin.display(description="Fetch unpaid invoices")
    def fetch_unpaid_availability(self, obj):
        return self._availability(obj, ActionLimit.Action.FETCH_UNPAID)

    def _availability(self, obj, action):
        if not obj.is_primary:
            return "Not offered (secondary integration)"
        allowed = ActionLimit.next_allowed(obj.tenant, action)
        return f"Next allowed {_when(allowed, obj.tenant)}" if allowed else "Available now"

    @admin.display(description="Webhook URL")
    def webhook_url(self, obj):
        return webhooks.webhook_url(obj.tenant)

    @admin.display(description="Webhook")
    def webhook_status(self, obj):
        if obj.webhook_registered is None:
            return "Not registered"
        return f"Registered {_when(obj.webhook_registered, obj.tenant)}"

    @admin.display(description="Sync position")
    def sync_position(self, obj):
        state = SyncState.objects.filter(tenant=obj.tenant).first()
        if state is None:
            return "Not synced yet"
        initial = (
            f"Initial sync completed {_when(state.initial_completed, obj.tenant)}"
            if state.initial_completed
            else "Initial sync under way (resumes where it stopped)"
        )
        marks = [
            f"{feed} changed up to {_when(cursor, obj.tenant)}"
            for feed in SyncState.FEEDS
            if (cursor := state.cursor(feed))
        ]
        return format_html("{}<br>{}", initial, "; ".join(marks) or "No data read yet")

    # -- actions ------------------------------------------------------------------------
    @admin.action(
        description="Fetch new data from Halo (at most once an hour)", permissions=["change"]
    )
    def fetch_new(self, request, queryset):
        self._start(request, queryset, ActionLimit.Action.FETCH_NEW)

    @admin.action(
        description="Fetch unpaid invoices from Halo (at most once every 12 hours)",
        permissions=["change"],
    )
    def fetch_unpaid(self, request, queryset):
        self._start(request, queryset, ActionLimit.Action.FETCH_UNPAID)

    def _start(self, request, queryset, action):
        for sync_settings in queryset.select_related("tenant"):
            level, text = start_fetch(sync_settings, action)
            self.message_user(request, text, level)

    @admin.action(description="Register webhook in Halo", permissions=["change"])
    def register_webhook(self, request, queryset):
        """Registering again replaces the webhook's credentials in Halo and here: asked
        first, saying so (a first registration replaces nothing and goes at once)."""
        registered = [s for s in queryset.select_related("tenant") if s.webhook_registered]
        if registered and request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Register the webhook in Halo again?",
                "rows": [
                    {"settings": s, "url": webhooks.webhook_url(s.tenant)} for s in registered
                ],
                "queryset": list(queryset),
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(
                request, "admin/invoice_sync/register_webhook_confirmation.html", context
            )
        budget = web_budget()  # a few Halo calls per tenant, all within the page's budget
        for sync_settings in queryset.select_related("tenant"):
            level, text = register_webhook_in_halo(sync_settings, budget)
            self.message_user(request, text, level)


@admin.register(InvoiceSyncRun)
class InvoiceSyncRunAdmin(ReadOnlyTenantAdmin):
    list_display = [
        "created",
        "kind",
        "trigger",
        "status",
        "invoices_created",
        "invoices_updated",
        "invoices_skipped",
        "invoices_deleted",
        "customers_saved",
        "halo_requests",
        "took",
        "short_error",
    ]
    list_filter = ["kind", "status", "trigger"]
    fields = [
        ("kind", "trigger", "status"),
        ("created", "started", "finished"),
        ("invoices_created", "invoices_updated", "invoices_skipped", "invoices_deleted"),
        ("customers_saved", "contracts_saved"),
        ("pages", "halo_requests"),
        "error",
    ]

    @admin.display(description="Took")
    def took(self, obj):
        return obj.took or "–"

    @property
    def media(self):
        return super().media + FIT_LISTS

    @admin.display(description="Error")
    def short_error(self, obj):
        return Truncator(obj.error).chars(120)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyTenantAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = ["received", "event", "object_id", "status", "error", "delivery_id"]
    list_filter = ["status", "event"]
    search_fields = ["=delivery_id", "=object_id"]
    fields = [
        ("delivery_id", "event", "object_id"),
        ("halo_timestamp", "received", "processed"),
        ("status", "attempts"),
        "error",
        "pretty_payload",
    ]

    @admin.display(description="Payload")
    def pretty_payload(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))
