"""The invoice sync page: settings, where the sync stands, the manual fetches with when
each may run next, the Halo webhook and its deliveries, and the last runs."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from integrations.invoice_sync import webhooks
from integrations.invoice_sync.admin import register_webhook_in_halo, start_fetch
from integrations.invoice_sync.models import (
    ActionLimit,
    InvoiceSyncRun,
    InvoiceSyncSettings,
    WebhookDelivery,
)
from integrations.models import HaloConnection
from portal.job_pages import Button, JobPage, Link, when

RECENT_RUNS = 10


class InvoiceSyncPage(JobPage):
    name = "invoice_sync"
    route = "invoice-sync/"
    title = "Invoice sync"
    template = "admin/jobs/invoice_sync.html"
    settings_model = InvoiceSyncSettings
    actions = {
        "fetch-new/": "fetch_new",
        "fetch-unpaid/": "fetch_unpaid",
        "register-webhook/": "register_webhook",
    }

    def context(self, request, tenant):
        settings = InvoiceSyncSettings.for_tenant(tenant)
        connection = HaloConnection.objects.for_feature(tenant, "invoice_sync")
        no_connection = (
            ""
            if connection
            else "No active Halo connection has invoice sync switched on: see Halo connections."
        )
        runs = InvoiceSyncRun.objects.filter(tenant=tenant)
        return {
            "settings": settings,
            "settings_url": reverse(
                "admin:invoice_sync_invoicesyncsettings_change", args=[settings.pk]
            ),
            "settings_rows": [
                ("Halo is", settings.get_halo_role_display()),
                ("Invoices created since", settings.created_since or "All invoices"),
                ("Invoice number", settings.get_number_field_display()),
            ],
            "position": self.model_admin.sync_position(settings),
            "connection": connection,
            "no_connection": no_connection,
            "active": runs.active().first(),
            "runs": runs[:RECENT_RUNS],
            "runs_url": reverse("admin:invoice_sync_invoicesyncrun_changelist"),
            "webhook": self._webhook(tenant, settings),
            "buttons": [
                *self._fetch_buttons(tenant, settings, no_connection),
                Button(
                    "Re-register webhook in Halo"
                    if settings.webhook_registered
                    else "Register webhook in Halo",
                    self.url("register_webhook"),
                    disabled=no_connection,
                    help="Creates or updates the portal's webhook in Halo with new "
                    "credentials (needs admin:webhooks).",
                ),
            ],
            "links": [
                Link("Sync runs", reverse("admin:invoice_sync_invoicesyncrun_changelist")),
                Link("Invoices", reverse("admin:billing_invoice_changelist")),
                Link("Halo clients (customers)", reverse("admin:billing_customer_changelist")),
                Link("Webhook events", reverse("admin:invoice_sync_webhookdelivery_changelist")),
                Link("Auto-pay rules", reverse("admin:billing_autopayrule_changelist")),
                Link("Halo connections", reverse("admin:integrations_haloconnection_changelist")),
            ],
        }

    @staticmethod
    def _fetch_buttons(tenant, settings, no_connection):
        buttons = []
        for action, route, help_text in (
            (
                ActionLimit.Action.FETCH_NEW,
                "fetch_new",
                "Invoices and clients changed in Halo since the last read. Also runs hourly.",
            ),
            (
                ActionLimit.Action.FETCH_UNPAID,
                "fetch_unpaid",
                "Re-reads every unpaid invoice (payments, due dates, deletions in Halo).",
            ),
        ):
            interval = ActionLimit.INTERVALS[action]
            hours = int(interval / timedelta(hours=1))
            allowed = ActionLimit.next_allowed(tenant, action)
            why = no_connection
            if not settings.is_primary:
                why = (
                    "Not offered: Halo is a secondary integration (the schedule and "
                    "webhooks keep it current)."
                )
            elif allowed and not why:
                why = f"Ran recently: next allowed {when(allowed, tenant)}."
            buttons.append(
                Button(
                    action.label,
                    reverse(f"admin:job_invoice_sync_{route}"),
                    disabled=why,
                    primary=action == ActionLimit.Action.FETCH_NEW,
                    help=f"{help_text} At most once every {hours} hour{'s' if hours > 1 else ''}.",
                )
            )
        return buttons

    @staticmethod
    def _webhook(tenant, settings):
        deliveries = WebhookDelivery.objects.filter(tenant=tenant)
        day = timezone.now() - timedelta(days=1)
        listed = reverse("admin:invoice_sync_webhookdelivery_changelist")
        last = deliveries.order_by("-received").values_list("received", flat=True).first()
        return {
            "url": webhooks.webhook_url(tenant),
            "registered": when(settings.webhook_registered, tenant, ""),
            "halo_id": settings.webhook_halo_id,
            "events": ", ".join(webhooks.EVENTS),
            "last": when(last, tenant, "none yet"),
            "day": deliveries.filter(received__gte=day).count(),
            "failed": deliveries.filter(
                received__gte=day, status=WebhookDelivery.Status.FAILED
            ).count(),
            "waiting": deliveries.stuck().count(),
            "failed_url": f"{listed}?status__exact={WebhookDelivery.Status.FAILED}",
            "waiting_url": f"{listed}?status__exact={WebhookDelivery.Status.RECEIVED}",
        }

    # -- buttons ----------------------------------------------------------------------
    def fetch_new(self, request):
        return self._fetch(request, ActionLimit.Action.FETCH_NEW)

    def fetch_unpaid(self, request):
        return self._fetch(request, ActionLimit.Action.FETCH_UNPAID)

    def _fetch(self, request, action):
        tenant = self.model_admin.require_edit(request)
        return self.back(request, *start_fetch(InvoiceSyncSettings.for_tenant(tenant), action))

    def register_webhook(self, request):
        tenant = self.model_admin.require_edit(request)
        level, text = register_webhook_in_halo(InvoiceSyncSettings.for_tenant(tenant))
        return self.back(request, level, text)
