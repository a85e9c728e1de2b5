"""Billing sync in the admin: settings, Halo pickers, mappings, usage, runs and results."""

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from integrations.billing_sync import csv_import, refresh, runner
from integrations.billing_sync.models import (
    BillingSyncRun,
    BillingSyncSettings,
    CsvUpload,
    HaloClientRecord,
    HaloItemRecord,
    OnboardingRejected,
    OnboardingSubmission,
    OrganisationMapping,
    ProductMapping,
    SyncResult,
    UsageChange,
    UsageCount,
    UsageSubmission,
)
from integrations.billing_sync.schedules import JOB
from portal import admin as portal_admin
from portal import ledger
from portal.admin_base import ReadOnlyTenantAdmin, SingletonSettingsAdmin, TenantScopedAdmin
from portal.csv_export import csv_response
from portal.formats import format_money
from portal.models import Organisation, Product

STATUS_COLOURS = {
    BillingSyncRun.Status.QUEUED: "#6b7280",
    BillingSyncRun.Status.RUNNING: "#1d4ed8",
    BillingSyncRun.Status.PREVIEWED: "#0e7490",
    BillingSyncRun.Status.AWAITING_APPROVAL: "#b7791f",
    BillingSyncRun.Status.SUCCEEDED: "#1a7f37",
    BillingSyncRun.Status.FAILED: "#c62828",
    BillingSyncRun.Status.ERROR: "#c62828",
    BillingSyncRun.Status.INTERRUPTED: "#b7791f",
}


def status_colour(run):
    """A run's badge colour; an approved run's is a success's."""
    return STATUS_COLOURS[BillingSyncRun.Status.SUCCEEDED if run.was_approved else run.status]


OUTCOME_COLOURS = {
    SyncResult.Outcome.DONE: "#1a7f37",
    SyncResult.Outcome.PREVIEW: "#0e7490",
    SyncResult.Outcome.HELD: "#b7791f",
    SyncResult.Outcome.FAILED: "#c62828",
    SyncResult.Outcome.SKIPPED: "#6b7280",
}


def badge(text, colour):
    return format_html(
        '<span style="color:#fff;background:{};padding:1px 7px;border-radius:9px;'
        'white-space:nowrap">{}</span>',
        colour,
        text,
    )


@dataclass(frozen=True)
class Tool:
    """A button above a change list; `post` ones are forms (they change something)."""

    label: str
    url: str
    post: bool = False


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin  # what ToolsMixin is mixed into
else:
    _ModelAdmin = object


class ToolsMixin(_ModelAdmin):
    change_list_template = "admin/billing_sync/change_list.html"
    #: Whether the list offers "Refresh from Halo", and so shows how the latest one went.
    shows_refresh = False

    def tools(self, request):
        return []

    def changelist_view(self, request, extra_context=None):
        tenant = request.access.tenant
        usable = tenant is not None and request.access.can_edit()
        extra = {"billing_tools": self.tools(request) if usable else []}
        if self.shows_refresh and tenant is not None and (found := refresh.status(tenant)):
            extra["billing_refresh"] = {"state": found.state, "text": found.describe(tenant)}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def admin_url(self, request_handler, route, name):
        return path(route, self.admin_site.admin_view(request_handler), name=name)


class CsvImportMixin(_ModelAdmin):
    """An "Import CSV" tool and page above a change list (with `ToolsMixin`), for the
    `csv_import` importer (`csv_import.USAGE`, `ORGANISATIONS`, `PRODUCTS`)."""

    csv_import: "csv_import.UsageImport | csv_import.OnboardingImport"

    def _import_url_name(self):
        return f"{self.opts.app_label}_{self.opts.model_name}_import"

    def tools(self, request):
        return [
            *super().tools(request),
            Tool("Import CSV", reverse(f"admin:{self._import_url_name()}")),
        ]

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name=self._import_url_name(),
            ),
            *super().get_urls(),
        ]

    def import_view(self, request):
        """Upload → preview with per-row errors → confirm; nothing is saved before confirm.
        Between the two the file waits on the server (`CsvUpload`), for this user, tenant
        and import only; the page carries its token, never the file."""
        tenant = self.require_edit(request)
        importer = self.csv_import
        form = csv_import.CsvImportForm(
            request.POST or None,
            request.FILES or None,
            tenant=tenant,
            user=request.user,
            importer=importer,
        )
        preview, status = None, 200
        if request.method == "POST" and form.is_valid():
            stored = form.cleaned_data["stored"]
            preview = importer.preview(tenant, form.cleaned_data["content"])
            if stored is not None and "confirm" in request.POST and preview.ok:
                try:
                    message = importer.save(
                        tenant, preview, key=f"csv-upload:{stored.digest}", user=request.user
                    )
                except OnboardingRejected as rejected:  # the catalogue moved meanwhile
                    messages.error(request, rejected.detail)
                else:
                    stored.delete()
                    messages.success(request, message)
                    return HttpResponseRedirect(
                        reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
                    )
            token = form.cleaned_data["upload"]
            if preview.ok and stored is None:
                upload = form.cleaned_data["file"]
                content = form.cleaned_data["content"]
                stored, token = CsvUpload.keep(
                    tenant, request.user, content, upload.name, upload.size, kind=importer.kind
                )
            elif not preview.ok and stored is not None:
                stored.delete()  # it no longer fits the catalogue: nothing to confirm
                token = ""
            form = csv_import.CsvImportForm(
                initial={"upload": token}, tenant=tenant, user=request.user, importer=importer
            )
            form.stored = stored if preview.ok else None
        elif request.method == "POST" and form.gone():
            status = 400
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": importer.title,
            "form": form,
            "preview": preview,
            "stored": getattr(form, "stored", None),
            "keep_minutes": settings.CSV_IMPORT_KEEP_MINUTES,
            "import_url": reverse(f"admin:{self._import_url_name()}"),
            "changelist_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
            "importer": importer,
        }
        return TemplateResponse(request, importer.template, context, status=status)


# -- settings -----------------------------------------------------------------------------


@admin.register(BillingSyncSettings)
class BillingSyncSettingsAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    list_display = ["__str__", "removal_policy", "approval_required", "schedule_text"]
    readonly_fields = ["next_scheduled_sync", "halo_refreshed"]

    def changelist_view(self, request, extra_context=None):
        if request.access.tenant is not None:
            BillingSyncSettings.for_tenant(request.access.tenant)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        exists = tenant is not None and BillingSyncSettings.objects.filter(tenant=tenant).exists()
        return super().has_add_permission(request) and not exists

    @admin.display(description="Schedule")
    def schedule_text(self, obj):
        if obj.schedule == obj.Schedule.OFF:
            return obj.get_schedule_display()
        day = (
            ""
            if obj.schedule == obj.Schedule.DAILY
            else f" on day {obj.get_schedule_day_display()}"
        )
        hour = f"{obj.schedule_hour:02d}:00 {obj.tenant.time_zone}"
        return f"{obj.get_schedule_display()}{day} at {hour}"

    @admin.display(description="Next scheduled sync")
    def next_scheduled_sync(self, obj):
        if obj.pk is None:
            return "None"
        last, upcoming = ledger.latest(obj.tenant_id, JOB)
        if last is not None and last.will_retry:
            local = timezone.localtime(last.will_retry, obj.tenant.tz)
            return f"Retrying: will retry at {local:%H:%M} {obj.tenant.time_zone}"
        if upcoming is None:
            return "None"
        local = timezone.localtime(upcoming.slot, obj.tenant.tz)
        return f"{local:%Y-%m-%d %H:%M} {obj.tenant.time_zone}"


# -- Halo records (the pickers' cache) ----------------------------------------------------


class HaloRecordAdmin(ToolsMixin, ReadOnlyTenantAdmin):
    shows_refresh = True
    list_display = ["name", "halo_id", "state", "changed"]
    list_filter = ["inactive", "missing"]
    search_fields = ["name"]

    @admin.display(description="State")
    def state(self, obj):
        if not obj.problem:
            return "active"
        return badge("gone" if obj.missing else "inactive", "#c62828")

    def tools(self, request):
        return [Tool("Refresh from Halo", reverse("admin:billing_sync_refresh"), post=True)]


@admin.register(HaloClientRecord)
class HaloClientRecordAdmin(HaloRecordAdmin):
    in_sidebar = False  # a reference list: reached from its job page

    def get_urls(self):
        # The one URL behind every "Refresh from Halo" button of billing sync.
        refresh = self.admin_url(
            require_POST(self.refresh_view), "refresh/", "billing_sync_refresh"
        )
        return [refresh, *super().get_urls()]

    def refresh_view(self, request):
        """'Refresh from Halo' on every picker and mapping list: re-reads clients and items on
        the worker (a large Halo takes longer than a page may wait); the lists show the outcome."""
        tenant = self.require_edit(request)
        queued, found = refresh.queue(tenant)
        if not queued:
            detail = f" {found.describe(tenant)}" if found else ""
            messages.warning(request, f"A refresh from Halo is already under way.{detail}")
        elif found.state == refresh.FAILED:
            messages.error(request, found.describe(tenant))
        else:
            messages.success(
                request,
                "Refreshing from Halo on the worker: the Halo clients and items lists show when "
                "it is done.",
            )
        back = request.META.get("HTTP_REFERER", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("admin:billing_sync_haloclientrecord_changelist")
        return HttpResponseRedirect(back)


@admin.register(HaloItemRecord)
class HaloItemRecordAdmin(HaloRecordAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = ["name", "sku", "halo_id", "state", "changed"]
    search_fields = ["name", "sku"]


# -- mappings -----------------------------------------------------------------------------


class BrokenFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("ok", "OK"), ("broken", "Broken")]

    def queryset(self, request, queryset):
        record = queryset.model.RECORD_FIELD
        broken = Q(**{f"{record}__inactive": True}) | Q(**{f"{record}__missing": True})
        if self.value() == "broken":
            return queryset.filter(broken)
        if self.value() == "ok":
            return queryset.exclude(broken)
        return queryset


class MappingAdmin(ToolsMixin, TenantScopedAdmin):
    shows_refresh = True
    list_filter = [BrokenFilter, "removal_policy"]
    readonly_fields = ["matched_by", "status"]

    def __init__(self, model, admin_site):
        self.subject, self.record = model.SUBJECT_FIELD, model.RECORD_FIELD
        self.list_display = [self.subject, self.record, "status", "removal_policy", "matched_by"]
        self.autocomplete_fields = self.list_select_related = [self.subject, self.record]
        super().__init__(model, admin_site)

    @admin.display(description="Status")
    def status(self, obj):
        if obj.pk is None:
            return "–"
        if problem := obj.problem:
            return format_html("{} {}", badge("Broken", "#c62828"), problem)
        return badge("OK", "#1a7f37")

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        if obj is not None and obj.problem:
            messages.warning(request, obj.problem)
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)

    def tools(self, request):
        opts = self.model._meta
        return [
            Tool("Suggestions", reverse(f"admin:{opts.app_label}_{opts.model_name}_suggestions")),
            Tool("Refresh from Halo", reverse("admin:billing_sync_refresh"), post=True),
        ]

    def get_urls(self):
        opts = self.model._meta
        name = f"{opts.app_label}_{opts.model_name}_suggestions"
        return [self.admin_url(self.suggestions_view, "suggestions/", name), *super().get_urls()]

    def suggestions_view(self, request):
        """Auto-match suggestions to accept in bulk, and what is still unmapped."""
        tenant = self.require_edit(request)
        suggestions = self.model.objects.suggestions(tenant)
        if request.method == "POST":
            chosen = set(request.POST.getlist("accept"))
            accepted = [s for s in suggestions if f"{s.subject.pk}:{s.record.pk}" in chosen]
            self.model.objects.bulk_create(
                self.model(
                    tenant=tenant,
                    matched_by=s.reason,
                    **{self.subject: s.subject, self.record: s.record},
                )
                for s in accepted
            )
            messages.success(request, f"Accepted {len(accepted)} suggested mapping(s).")
            return HttpResponseRedirect(request.path)
        records = self.model._meta.get_field(self.record).related_model
        subjects = getattr(tenant, f"{self.subject}s").filter(active=True)
        unmapped = subjects.filter(halo_mapping__isnull=True).exclude(
            pk__in=[s.subject.pk for s in suggestions]
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Suggested {self.model._meta.verbose_name_plural}",
            "suggestions": suggestions,
            "unmapped": unmapped,
            "subject_label": self.subject,
            "add_url": reverse(
                f"admin:{self.model._meta.app_label}_{self.model._meta.model_name}_add"
            ),
            "records_url": reverse(f"admin:billing_sync_{records._meta.model_name}_changelist"),
        }
        return TemplateResponse(request, "admin/billing_sync/suggestions.html", context)


@admin.register(OrganisationMapping)
class OrganisationMappingAdmin(MappingAdmin):
    search_fields = ["organisation__name", "organisation__external_ref", "halo_client__name"]


@admin.register(ProductMapping)
class ProductMappingAdmin(MappingAdmin):
    search_fields = ["product__name", "product__sku", "halo_item__name"]


# -- usage --------------------------------------------------------------------------------


@admin.register(UsageCount)
class UsageCountAdmin(CsvImportMixin, ToolsMixin, TenantScopedAdmin):
    csv_import = csv_import.USAGE
    list_display = ["organisation", "product", "quantity", "updated", "history"]
    list_filter = [("product", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["organisation", "product"]
    search_fields = ["organisation__name", "organisation__external_ref", "product__sku"]
    autocomplete_fields = ["organisation", "product"]
    fields = ["organisation", "product", "quantity"]

    def get_readonly_fields(self, request, obj=None):
        return ["organisation", "product"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False  # set the count to 0 instead: the removal policy and history then apply

    @admin.display(description="History")
    def history(self, obj):
        url = reverse("admin:billing_sync_usagechange_changelist")
        return format_html(
            '<a href="{}?organisation__id__exact={}&product__id__exact={}">changes</a>',
            url,
            obj.organisation_id,
            obj.product_id,
        )

    def save_model(self, request, obj, form, change):
        """Through a submission, so the change is in the pair's history with who made it."""
        tenant = obj.tenant if change else request.access.tenant or obj.organisation.tenant
        UsageSubmission.objects.record(
            tenant,
            [(obj.organisation, obj.product, obj.quantity)],
            source=UsageSubmission.Source.ADMIN,
            user=request.user,
        )
        obj.pk = UsageCount.objects.get(organisation=obj.organisation, product=obj.product).pk


# -- onboarding: organisations and products in bulk ---------------------------------------


# The catalogue's admins (portal.admin) gain the CSV imports here, beside the Halo mappings
# the imports can set: the portal app knows nothing of billing sync.
admin.site.unregister(Organisation)
admin.site.unregister(Product)


@admin.register(Organisation)
class OrganisationAdmin(CsvImportMixin, ToolsMixin, portal_admin.OrganisationAdmin):
    csv_import = csv_import.ORGANISATIONS


@admin.register(Product)
class ProductAdmin(CsvImportMixin, ToolsMixin, portal_admin.ProductAdmin):
    csv_import = csv_import.PRODUCTS


@admin.register(OnboardingSubmission)
class OnboardingSubmissionAdmin(ReadOnlyTenantAdmin):
    """Who created or changed organisations and products in bulk, and what each row did."""

    list_display = ["created", "kind", "source", "sender", "rows", "summary"]
    list_filter = ["kind", "source"]
    list_select_related = ["token", "user"]
    fields = ["kind", "source", "sender", "created", "key", "summary", "row_results"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: list types differ

    @admin.display(description="By")
    def sender(self, obj):
        return obj.sender

    @admin.display(description="Idempotency key")
    def key(self, obj):
        """The key the API was sent (a CSV import's own key names its used-up upload)."""
        return obj.idempotency_key if obj.source == obj.Source.API else ""

    @admin.display(description="What it did")
    def summary(self, obj):
        return obj.summary()

    @admin.display(description="Rows")
    def row_results(self, obj):
        """The first rows' results (the API's answer to the request)."""
        shown = obj.results[:500]
        key = "external_ref" if obj.kind == obj.Kind.ORGANISATIONS else "sku"
        halo = "halo_client" if obj.kind == obj.Kind.ORGANISATIONS else "halo_item"
        more = len(obj.results) - len(shown)
        return format_html(
            "<table><thead><tr><th>{}</th><th>Name</th><th>Action</th><th>{}</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            "External reference" if key == "external_ref" else "SKU",
            "Halo client" if key == "external_ref" else "Halo item",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        row.get(key, ""),
                        row.get("name", ""),
                        row.get("action", ""),
                        f"{row[halo]['name']} (#{row[halo]['id']})" if row.get(halo) else "",
                    )
                    for row in shown
                ),
            ),
            f"… and {more:,} more" if more > 0 else "",
        )


@admin.register(UsageChange)
class UsageChangeAdmin(ReadOnlyTenantAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = ["when", "organisation", "product", "previous", "new", "source", "sender"]
    list_filter = [
        "submission__source",
        ("organisation", admin.RelatedOnlyFieldListFilter),
        ("product", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["organisation", "product", "submission__token", "submission__user"]
    search_fields = ["organisation__name", "organisation__external_ref", "product__sku"]

    @admin.display(description="When", ordering="submission__created")
    def when(self, obj):
        return obj.submission.created

    @admin.display(description="Source")
    def source(self, obj):
        return obj.submission.get_source_display()

    @admin.display(description="By")
    def sender(self, obj):
        return obj.submission.sender


# -- runs and results ---------------------------------------------------------------------


@admin.register(BillingSyncRun)
class SyncRunAdmin(ToolsMixin, ReadOnlyTenantAdmin):
    list_display = ["__str__", "status_badge", "requested_by", "started", "took", "summary"]
    list_filter = ["status", "trigger", "dry_run"]
    list_select_related = ["requested_by"]

    @property
    def media(self):
        return super().media + FIT_LISTS

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("approval_runs")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return badge(obj.status_label, status_colour(obj))

    @admin.display(description="Took")
    def took(self, obj):
        return obj.took or "–"

    def tools(self, request):
        return [
            Tool("Preview", reverse("admin:billing_sync_billingsyncrun_preview"), post=True),
            Tool("Sync now", reverse("admin:billing_sync_billingsyncrun_sync_now"), post=True),
        ]

    def get_urls(self):
        name = "billing_sync_billingsyncrun_"
        return [
            self.admin_url(require_POST(self.sync_now_view), "sync-now/", f"{name}sync_now"),
            self.admin_url(require_POST(self.preview_view), "preview/", f"{name}preview"),
            self.admin_url(
                require_POST(self.retry_failed_view), "retry-failed/", f"{name}retry_failed"
            ),
            self.admin_url(
                require_POST(self.approve_view), "<int:run_id>/approve/", f"{name}approve"
            ),
            *super().get_urls(),
        ]

    def sync_now_view(self, request):
        return self._start(request, BillingSyncRun.Trigger.MANUAL)

    def preview_view(self, request):
        return self._start(request, BillingSyncRun.Trigger.PREVIEW, dry_run=True)

    def retry_failed_view(self, request):
        """The job page's "Retry failed pairs": a run writing only those pairs."""
        tenant = self.require_edit(request)
        run, active = runner.retry_failed(tenant, user=request.user)
        if run is None and active is None:
            messages.info(request, "No pair's latest result failed: nothing to retry.")
            return HttpResponseRedirect(reverse("admin:job_billing_sync"))
        return self._started(request, run, active)

    def _start(self, request, trigger, dry_run=False):
        """Queue on the worker and return at once; a second click while one runs says so."""
        tenant = self.require_edit(request)
        run, active = runner.start(
            tenant, trigger, user=request.user, dry_run=dry_run, background=True
        )
        return self._started(request, run, active)

    def approve_view(self, request, run_id):
        tenant = self.require_edit(request)
        run = self.get_object_or_404(request, run_id, BillingSyncRun.objects.filter(tenant=tenant))
        ids = None if "all" in request.POST else request.POST.getlist("rows")
        if request.POST.get("confirm") != "yes":
            return self._confirm_approval(request, run, ids)
        new, active = runner.approve(run, ids, user=request.user)
        if new is None and active is None:
            messages.warning(request, "Nothing to approve: tick the rows to write first.")
            return HttpResponseRedirect(
                reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk])
            )
        return self._started(request, new, active)

    def _confirm_approval(self, request, run, ids):
        """Approving writes counts that bill customers: first say how many licences change,
        by how many units, and what that is worth at the products' prices."""
        rows = run.approvable().select_related("product")
        if ids is not None:
            rows = rows.filter(pk__in=ids)
        rows = list(rows.order_by("organisation_name", "product_sku"))
        if not rows:
            messages.warning(request, "Nothing to approve: tick the rows to write first.")
            return HttpResponseRedirect(
                reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk])
            )
        tenant = run.tenant
        moved = sum((r.new or 0) - (r.previous or 0) for r in rows)
        worth = sum(
            ((r.new or 0) - (r.previous or 0)) * r.product.unit_price for r in rows if r.product
        )
        actions = Counter(r.get_action_display().lower() for r in rows)
        return TemplateResponse(
            request,
            "admin/jobs/confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"Write {len(rows)} approved licence change(s) to Halo?",
                "lead": " · ".join(f"{n} {action}" for action, n in actions.items()),
                "facts": [
                    ("Licences changed in Halo", str(len(rows))),
                    ("Units, all pairs together", f"{moved:+d}"),
                    (
                        "Change per billing period at the products' prices",
                        format_money(worth, tenant.currency, tenant.locale),
                    ),
                ],
                "columns": ["Organisation", "Product", "Halo client", "Count", "What happens"],
                "rows": [
                    (
                        r.organisation_name,
                        r.product_sku,
                        r.halo_client_name or "–",
                        f"{'–' if r.previous is None else r.previous} → {r.new}",
                        r.message,
                    )
                    for r in rows[:500]
                ],
                "more": max(0, len(rows) - 500),
                "effect": "A run starts on the worker: it reads Halo again and writes each "
                "approved row only if it is still the same change; anything that moved since "
                "is held again.",
                "action_url": request.path,
                "hidden": [("all", "1")] if ids is None else [("rows", pk) for pk in ids],
                "confirm_label": "Yes, write them to Halo",
                "cancel_url": reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk]),
            },
        )

    def _started(self, request, run, active):
        if run is None:
            if active is None:
                messages.warning(request, "Another run has just finished; try again.")
                return HttpResponseRedirect(reverse("admin:billing_sync_billingsyncrun_changelist"))
            who = f" by {active.requested_by}" if active.requested_by else ""
            messages.warning(
                request,
                f"A sync is already {active.get_status_display().lower()} for this tenant "
                f"(started{who} at {timezone.localtime(active.created):%H:%M}): this one was "
                "not started. Its progress is shown here.",
            )
            run = active
        elif run.status == BillingSyncRun.Status.ERROR:
            messages.error(request, run.error)
        else:
            messages.success(request, f"{run} queued: this page follows its progress.")
        return HttpResponseRedirect(
            reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk])
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method != "GET":
            return super().change_view(request, object_id, form_url, extra_context)
        self.get_object_or_404(request, object_id)
        run = self.get_queryset(request).select_related("tenant", "approves").get(pk=object_id)
        results = run.results.all()
        attention = results.filter(
            outcome__in=[
                SyncResult.Outcome.FAILED,
                SyncResult.Outcome.HELD,
                SyncResult.Outcome.PREVIEW,
                SyncResult.Outcome.SKIPPED,
            ]
        ).order_by("outcome", "organisation_name", "product_sku")
        can_approve = (
            request.access.can_edit(run.tenant) and not run.is_active and run.approvable().exists()
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": str(run),
            "run": run,
            "status_colour": status_colour(run),
            "attention": attention[:500],
            "attention_count": attention.count(),
            "result_count": results.count(),
            "results_url": reverse("admin:billing_sync_syncresult_changelist")
            + f"?run__id__exact={run.pk}",
            "can_approve": can_approve,
            "outcome_colours": OUTCOME_COLOURS,
            "progress": int(100 * run.done / run.total) if run.total else 0,
        }
        return TemplateResponse(request, "admin/billing_sync/billingsyncrun/detail.html", context)


#: Run and result lists fit a 1366 px laptop with their outcome and message columns.
FIT_LISTS = forms.Media(css={"all": ["portal/fit_lists.css"]})


@admin.register(SyncResult)
class SyncResultAdmin(ReadOnlyTenantAdmin):
    in_sidebar = False  # a reference list: reached from its job page
    list_display = [
        "run_link",
        "pair",
        "licence_id",
        "change",
        "outcome_badge",
        "message",
    ]
    list_display_links = ["pair"]
    ordering = ["-run_id", "organisation_name", "product_sku"]
    list_filter = [
        "outcome",
        "action",
        ("organisation", admin.RelatedOnlyFieldListFilter),
        ("product", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["run"]
    search_fields = ["organisation_name", "product_sku", "halo_client_name", "message"]
    actions = ["export_csv"]

    def lookup_allowed(self, lookup, value, request=None):
        return lookup == "run__id__exact" or super().lookup_allowed(lookup, value, request)

    @property
    def media(self):
        return super().media + FIT_LISTS

    @admin.display(description="Run", ordering="run_id")
    def run_link(self, obj):
        url = reverse("admin:billing_sync_billingsyncrun_change", args=[obj.run_id])
        kind = "Preview" if obj.run.dry_run else "Sync"
        return format_html('<a href="{}">{} #{}</a>', url, kind, obj.run_id)

    @admin.display(description="Organisation · product → Halo client", ordering="organisation_name")
    def pair(self, obj):
        return format_html(
            '{}<div class="pair-detail">{} → {}</div>',
            obj.organisation_name,
            obj.product_sku,
            obj.halo_client_name or "no Halo client",
        )

    @admin.display(description="Change", ordering="action")
    def change(self, obj):
        """'Update 20 → 26', 'Create 26', 'Unchanged 26': the action and the count."""
        counts = "" if obj.new is None else str(obj.new)
        if obj.previous is not None and obj.previous != obj.new:
            counts = f"{obj.previous} → {counts or '–'}"
        return f"{obj.get_action_display()} {counts}".strip()

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj):
        return badge(obj.get_outcome_display(), OUTCOME_COLOURS[obj.outcome])

    @admin.action(description="Export selected results as CSV")
    def export_csv(self, request, queryset):
        columns = [
            "run",
            "organisation_name",
            "product_sku",
            "halo_client_id",
            "halo_client_name",
            "licence_id",
            "previous",
            "new",
            "action",
            "outcome",
            "message",
        ]
        rows = queryset.order_by("run_id", "organisation_name", "product_sku").values_list(
            "run_id", *columns[1:]
        )
        return csv_response("billing-sync-results.csv", columns, rows)
