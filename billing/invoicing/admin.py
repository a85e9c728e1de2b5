"""Invoicing in the admin: settings, billing runs, portal invoices and one-off charges, and
every invoice's PDFs (preview, versions, what each channel served, regenerate)."""

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Q
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from billing.invoicing import tasks
from billing.invoicing.document_builder import invoice_number
from billing.invoicing.models import (
    BillingRun,
    InvoicePdf,
    InvoicingSettings,
    OneOffCharge,
    PdfServed,
    PdfVersion,
    PortalInvoice,
)
from billing.invoicing.pdfs import (
    PdfUnavailable,
    pdf_filename,
    preview_pdf,
    resolve_pdf,
    store_portal_pdf,
)
from billing.models import Invoice, InvoiceNumberField, number_field
from portal.admin_base import ReadOnlyTenantAdmin, SingletonSettingsAdmin, TenantScopedAdmin
from portal.formats import format_money, format_quantity
from portal.job_pages import ObjectActionsMixin
from portal.jobs import enqueue


def pdf_response(content, filename, **headers):
    response = HttpResponse(content, content_type="application/pdf", headers=headers)
    response["Content-Disposition"] = content_disposition_header(False, filename)
    return response


def money(invoice):
    return f"{invoice.total:,.2f} {invoice.currency}"


# -- settings -----------------------------------------------------------------------------


@admin.register(InvoicingSettings)
class InvoicingSettingsAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    list_display = ["__str__", "tax_label", "tax_rate", "pay_link_in_pdf", "attach_pdf_on_export"]
    readonly_fields = ["halo_pdf_link"]
    fieldsets = [
        (
            "Invoice PDFs",
            {"fields": ["pay_link_in_pdf", "payment_instructions", "tax_label", "halo_pdf_link"]},
        ),
        (
            "Portal invoices",
            {"fields": ["number_prefix", "tax_rate", "payment_terms_days", "attach_pdf_on_export"]},
        ),
    ]

    def changelist_view(self, request, extra_context=None):
        if request.access.tenant is not None:
            InvoicingSettings.for_tenant(request.access.tenant)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        exists = tenant is not None and InvoicingSettings.objects.filter(tenant=tenant).exists()
        return super().has_add_permission(request) and not exists

    @admin.display(description="PDF link for Halo")
    def halo_pdf_link(self, obj):
        if obj.pk is None:
            return "–"
        by_number = number_field(obj.tenant) == InvoiceNumberField.THIRD_PARTY
        variable = "$THIRDPARTYINVOICENUMBER" if by_number else "$INVOICEID"
        return format_html(
            "Paste into Halo <code>{}/api/v1/invoices/{}/pdf</code> (Halo fills in the "
            "variable) with the header <code>Authorization: Bearer &lt;PDF secret&gt;</code>."
            '<br>Create the secret under <a href="{}">API tokens</a> (purpose: Invoice PDF '
            "API); it is shown once. Rotating it keeps the old one working for 7 days.",
            settings.PORTAL_BASE_URL,
            variable,
            reverse("admin:portal_apitoken_add") + "?purpose=pdf&name=Halo+PDF+link",
        )


# -- billing runs -------------------------------------------------------------------------


@admin.register(BillingRun)
class BillingRunAdmin(TenantScopedAdmin):
    """Adding a run builds its drafts; runs are the record of what was billed, never deleted."""

    list_display = ["__str__", "draft_count", "issued_count", "created", "created_by"]
    fields = ["period_start", "period_end", "invoices_table"]
    readonly_fields = ["invoices_table"]
    actions = ["rebuild_drafts", "issue_drafts"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("created_by")
            .annotate(
                drafts=Count("invoices", filter=Q(invoices__status=PortalInvoice.Status.DRAFT)),
                issued=Count("invoices", filter=~Q(invoices__status=PortalInvoice.Status.DRAFT)),
            )
        )

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, *(["period_start", "period_end"] if obj else [])]

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Drafts", ordering="drafts")
    def draft_count(self, obj):
        return obj.drafts

    @admin.display(description="Issued", ordering="issued")
    def issued_count(self, obj):
        return obj.issued

    @admin.display(description="Invoices")
    def invoices_table(self, obj):
        if obj.pk is None:
            return "Saving builds a draft invoice per organisation with usage or charges."
        rows = obj.invoices.select_related("organisation", "invoice").order_by("organisation__name")
        return (
            format_html_join(
                "",
                '<div><a href="{}">{}</a> · {} · {}</div>',
                (
                    (
                        reverse("admin:invoicing_portalinvoice_change", args=[d.pk]),
                        d,
                        d.get_status_display(),
                        money(d.invoice),
                    )
                    for d in rows
                ),
            )
            or "None: no organisation has usage or charges."
        )

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            self._built(request, obj)

    def _built(self, request, run):
        counts = run.build_drafts()
        self.message_user(
            request,
            f"{run}: {counts['created']} drafts created, {counts['refreshed']} refreshed, "
            f"{counts['removed']} removed. Review them under Portal invoices, then issue.",
        )

    @admin.action(
        description="Rebuild drafts from current usage and charges", permissions=["change"]
    )
    def rebuild_drafts(self, request, queryset):
        for run in queryset:
            self._built(request, run)

    @admin.action(description="Issue all drafts of the selected runs", permissions=["change"])
    def issue_drafts(self, request, queryset):
        drafts = PortalInvoice.objects.filter(run__in=queryset)
        issue(self, request, drafts)


def issue(model_admin, request, queryset):
    issued = queryset.issue(request.user)
    enqueue(tasks.render_pdfs, [d.invoice_id for d in issued])
    numbers = ", ".join(d.number for d in issued) or "none (no drafts selected)"
    model_admin.message_user(request, f"Issued {len(issued)} invoices: {numbers}.")


# -- portal invoices ----------------------------------------------------------------------


class ExportFilter(admin.SimpleListFilter):
    title = "Halo export"
    parameter_name = "export"
    options = {
        "never": ("Not exported", Q(exported_at=None, export_error="")),
        "done": ("Exported", Q(exported_at__isnull=False, export_error="")),
        "failed": ("Needs attention", ~Q(export_error="")),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.options.items()]

    def queryset(self, request, queryset):
        choice = self.options.get(self.value())
        return queryset.issued().filter(choice[1]) if choice else queryset


@admin.register(PortalInvoice)
class PortalInvoiceAdmin(ObjectActionsMixin, TenantScopedAdmin):
    """Review drafts, issue, export to Halo, credit. Issued invoices change only by credit."""

    object_actions = ["export_to_halo", "credit"]

    list_display = ["__str__", "organisation", "period", "status", "total", "exported"]
    list_filter = ["status", ExportFilter, ("run", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["organisation", "invoice", "credit_note_of"]
    search_fields = ["number", "organisation__name", "organisation__external_ref"]
    fields = [
        "organisation",
        "status",
        "number",
        "period",
        "issued",
        "lines_table",
        "total",
        "exported",
        "credit_links",
        "pdf",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: list types differ
    actions = ["issue_selected", "export_to_halo", "credit", "delete_drafts"]

    def has_add_permission(self, request):
        return False  # drafts come from billing runs

    def has_delete_permission(self, request, obj=None):
        return False  # drafts go through "Delete drafts": the invoice row goes with them

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_urls(self):
        return [
            path(
                "<int:pk>/preview/",
                self.admin_site.admin_view(xframe_options_sameorigin(self.preview_view)),
                name="invoicing_portalinvoice_preview",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request, pk):
        details = self.get_object_or_404(
            request, pk, self.get_queryset(request).select_related("invoice")
        )
        if not details.is_draft:
            return HttpResponseRedirect(
                reverse("admin:invoicing_invoicepdf_pdf", args=[details.invoice_id])
            )
        return pdf_response(preview_pdf(details.invoice), pdf_filename(details.invoice))

    @admin.display(description="Period")
    def period(self, obj):
        return f"{obj.period_start:%d %b} – {obj.period_end:%d %b %Y}"

    @admin.display(description="Total", ordering="invoice__total")
    def total(self, obj):
        return money(obj.invoice)

    @admin.display(description="Issued")
    def issued(self, obj):
        if obj.is_draft:
            return "Not yet: issuing gives it the next number and freezes it."
        return f"{obj.issued_at:%Y-%m-%d %H:%M} by {obj.issued_by or 'the portal'}"

    @admin.display(description="Exported to Halo")
    def exported(self, obj):
        if obj.export_error:
            return format_html('<span style="color:#c62828">{}</span>', obj.export_error)
        if obj.exported_at is None:
            return "–"
        attached = " with PDF" if obj.halo_attachment_id else ""
        return f"{obj.exported_at:%Y-%m-%d %H:%M} (Halo #{obj.invoice.halo_id}{attached})"

    @admin.display(description="Credit note")
    def credit_links(self, obj):
        other = getattr(obj, "credit_note", None) or obj.credit_note_of
        if other is None:
            return "–"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:invoicing_portalinvoice_change", args=[other.pk]),
            other,
        )

    @admin.display(description="Lines")
    def lines_table(self, obj):
        return format_html(
            "<table><tr><th>SKU</th><th>Description</th><th>Qty</th><th>Unit price</th>"
            "<th>Net</th><th>Tax</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        line.code,
                        line.description,
                        f"{line.quantity.normalize():f}",
                        f"{line.unit_price.normalize():f}",
                        line.net_amount,
                        line.tax_amount,
                    )
                    for line in obj.invoice.lines.all()
                ),
            ),
        )

    @admin.display(description="PDF")
    def pdf(self, obj):
        if obj.is_draft:
            url = reverse("admin:invoicing_portalinvoice_preview", args=[obj.pk])
            return format_html('<a href="{}">Preview the draft</a> (not stored)', url)
        url = reverse("admin:invoicing_invoicepdf_change", args=[obj.invoice_id])
        return format_html('<a href="{}">Preview, versions and deliveries</a>', url)

    @admin.action(description="Issue selected drafts", permissions=["change"])
    def issue_selected(self, request, queryset):
        issue(self, request, queryset)

    @admin.action(description="Export to Halo", permissions=["change"])
    def export_to_halo(self, request, queryset):
        """Bills customers in Halo: asks first, naming each invoice, its client and total."""
        if request.POST.get("confirm") != "yes":
            return self._confirm_export(request, queryset)
        ids = list(queryset.exportable().values_list("pk", flat=True))
        enqueue(tasks.export_to_halo, ids)
        message = f"Export of {len(ids)} invoices to Halo queued: see “Exported to Halo”."
        if skipped := queryset.count() - len(ids):
            message += f" {skipped} skipped: drafts (issue them first) and credit notes."
        self.message_user(request, message)

    @admin.action(description="Credit in full (issues a credit note)", permissions=["change"])
    def credit(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Credit one invoice at a time.", messages.WARNING)
            return None
        if request.POST.get("confirm") != "yes":
            return self._confirm_credit(request, queryset.select_related("invoice").get())
        try:
            note = queryset.get().credit(request.user)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return None
        enqueue(tasks.render_pdfs, [note.invoice_id, note.credit_note_of.invoice_id])
        self.message_user(request, f"Issued {note} for {note.credit_note_of}.")
        return HttpResponseRedirect(reverse("admin:invoicing_portalinvoice_change", args=[note.pk]))

    def _confirm(self, request, action, queryset, **context):
        """The confirmation page of a changelist action on `queryset` (admin/jobs/confirm)."""
        hidden = [("action", action)]
        hidden += [(ACTION_CHECKBOX_NAME, pk) for pk in queryset.values_list("pk", flat=True)]
        if back := request.POST.get(self.BACK):
            hidden.append((self.BACK, back))
        back_url = reverse("admin:invoicing_portalinvoice_changelist")
        if back:
            back_url = reverse("admin:invoicing_portalinvoice_change", args=[back])
        return TemplateResponse(
            request,
            "admin/jobs/confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "action_url": reverse("admin:invoicing_portalinvoice_changelist"),
                "hidden": hidden,
                "cancel_url": back_url,
                **context,
            },
        )

    def _confirm_export(self, request, queryset):
        exportable = list(
            queryset.exportable().select_related(
                "invoice", "organisation__halo_mapping__halo_client", "tenant"
            )
        )
        skipped = len(queryset) - len(exportable)
        if not exportable:
            self.message_user(
                request,
                "Nothing to export: only issued invoices go to Halo (drafts need issuing "
                "first; credit notes stay in the portal).",
                messages.WARNING,
            )
            return None
        tenant = exportable[0].tenant
        attach = InvoicingSettings.for_tenant(tenant).attach_pdf_on_export

        def client_of(details):
            mapping = getattr(details.organisation, "halo_mapping", None)
            return mapping.halo_client.name if mapping else "Not mapped: this one will fail"

        def what(details):
            if details.status == PortalInvoice.Status.CREDITED:
                return f"Voids Halo invoice #{details.invoice.halo_id}"
            if details.invoice.halo_id:
                return f"Updates Halo invoice #{details.invoice.halo_id}"
            return "Creates it in Halo"

        totals = {}
        for details in exportable:
            currency = details.invoice.currency
            totals[currency] = totals.get(currency, 0) + details.invoice.total
        return self._confirm(
            request,
            "export_to_halo",
            queryset.exportable(),
            title=f"Export {len(exportable)} invoice(s) to Halo?",
            facts=[
                ("Invoices", str(len(exportable))),
                (
                    "Total billed",
                    ", ".join(
                        format_money(total, currency, tenant.locale)
                        for currency, total in totals.items()
                    ),
                ),
                ("PDF attached in Halo", "Yes" if attach else "No"),
            ],
            columns=["Invoice", "Organisation", "Halo client", "Total", "In Halo"],
            rows=[
                (
                    d.number,
                    d.organisation.name,
                    client_of(d),
                    format_money(d.invoice.total, d.invoice.currency, tenant.locale),
                    what(d),
                )
                for d in exportable
            ],
            skipped=f"{skipped} not exported: drafts (issue them first) and credit notes."
            if skipped
            else "",
            effect="The worker writes each invoice to Halo for its organisation's Halo client, "
            "lines on the products' Halo items: customers see it in Halo (and Halo may email "
            "it). Exporting again updates the same Halo invoice; a credited invoice is voided "
            "there. The “Exported to Halo” column shows how each went.",
            confirm_label="Yes, export to Halo",
        )

    def _confirm_credit(self, request, details):
        tenant = details.tenant
        total = format_money(details.invoice.total, details.invoice.currency, tenant.locale)
        in_halo = (
            f" Halo invoice #{details.invoice.halo_id} is voided at the next export."
            if details.invoice.halo_id
            else ""
        )
        return self._confirm(
            request,
            "credit",
            PortalInvoice.objects.filter(pk=details.pk),
            title=f"Credit {details} in full?",
            facts=[
                ("Invoice", str(details.number)),
                ("Organisation", details.organisation.name),
                ("Credited", total),
            ],
            effect=f"Issues a credit note of {total} (the next number of the sequence) and "
            "voids the invoice for payment: pay links stop taking money for it. This cannot "
            f"be undone.{in_halo}",
            confirm_label=f"Yes, credit {total}",
        )

    @admin.action(description="Delete selected drafts", permissions=["change"])
    def delete_drafts(self, request, queryset):
        drafts = queryset.drafts()
        count = drafts.count()
        # Deleting the invoice row deletes the draft; its one-off charges become pending.
        Invoice.objects.filter(pk__in=drafts.values("invoice_id")).delete()
        self.message_user(request, f"Deleted {count} drafts; issued invoices are never deleted.")


# -- one-off charges ----------------------------------------------------------------------


@admin.register(OneOffCharge)
class OneOffChargeAdmin(TenantScopedAdmin):
    """A charge joins its organisation's open draft at once (or the next billing run)."""

    list_display = ["description", "organisation", "qty", "price", "billed_on", "created"]
    list_select_related = ["organisation", "invoice__portal", "tenant"]
    search_fields = ["description", "organisation__name"]
    fields = ["organisation", "description", "product", "quantity", "unit_price", "billed_on"]
    readonly_fields = ["billed_on"]

    @admin.display(description="Quantity", ordering="quantity")
    def qty(self, obj):
        return format_quantity(obj.quantity, obj.tenant.locale)  # "12", not "12.0000"

    @admin.display(description="Unit price", ordering="unit_price")
    def price(self, obj):
        return format_money(obj.unit_price, obj.tenant.currency, obj.tenant.locale)

    @admin.display(description="Billed on")
    def billed_on(self, obj):
        details = getattr(obj.invoice, "portal", None) if obj.invoice_id else None
        if details is None:
            return "Pending: billed by the next billing run"
        url = reverse("admin:invoicing_portalinvoice_change", args=[details.pk])
        return format_html('<a href="{}">{}</a>', url, details)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj and obj.is_locked)

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        self._refresh_drafts(request, [obj.organisation_id])

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self._refresh_drafts(request, [obj.organisation_id])

    def delete_queryset(self, request, queryset):
        organisations = set(queryset.values_list("organisation_id", flat=True))
        unbilled = Q(invoice=None) | Q(invoice__portal__status=PortalInvoice.Status.DRAFT)
        queryset.filter(unbilled).delete()
        self._refresh_drafts(request, organisations)

    def _refresh_drafts(self, request, organisation_ids):
        runs = BillingRun.objects.filter(
            invoices__status=PortalInvoice.Status.DRAFT,
            invoices__organisation_id__in=organisation_ids,
        ).distinct()
        for run in runs:
            run.build_drafts()
            self.message_user(request, f"The drafts of {run} were rebuilt with this change.")


# -- invoice PDFs -------------------------------------------------------------------------


@admin.register(InvoicePdf)
class InvoicePdfAdmin(ReadOnlyTenantAdmin):
    """Every invoice's PDF: preview, regenerate, versions and what each channel served."""

    change_form_template = "admin/invoicing/invoicepdf/change_form.html"
    list_display = ["number", "source", "bill_to", "invoice_date", "total", "current", "versions"]
    list_filter = ["source"]
    list_select_related = ["customer", "portal__organisation", "tenant__invoice_sync_settings"]
    search_fields = [
        "invoice_number",
        "third_party_number",
        "customer__name",
        "portal__number",
        "portal__organisation__name",
    ]
    fields = ["number", "source", "bill_to", "invoice_date", "total"]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: list types differ

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(version_count=Count("pdf_versions"), latest=Max("pdf_versions__number"))
        )

    def get_urls(self):
        def view(func, route, name):
            name = f"invoicing_invoicepdf_{name}"
            return path(route, self.admin_site.admin_view(func), name=name)

        return [
            view(xframe_options_sameorigin(self.pdf_view), "<int:pk>/pdf/", "pdf"),
            view(self.version_view, "<int:pk>/pdf/v<int:number>/", "version"),
            view(require_POST(self.regenerate_view), "<int:pk>/regenerate/", "regenerate"),
            *super().get_urls(),
        ]

    @admin.display(description="Number")
    def number(self, obj):
        return invoice_number(obj)

    @admin.display(description="Customer", ordering="customer__name")
    def bill_to(self, obj):
        """The Halo client, or the organisation a portal invoice bills."""
        return obj.bill_to or "-"

    @admin.display(description="Total", ordering="total")
    def total(self, obj):
        return money(obj)

    @admin.display(description="Current", ordering="latest")
    def current(self, obj):
        return f"v{obj.latest}" if obj.latest else "not rendered yet"

    @admin.display(description="Versions", ordering="version_count")
    def versions(self, obj):
        return obj.version_count

    def change_view(self, request, object_id, form_url="", extra_context=None):
        invoice = self._invoice(request, object_id)
        extra = {
            "pdf_url": reverse("admin:invoicing_invoicepdf_pdf", args=[invoice.pk]),
            "regenerate_url": reverse("admin:invoicing_invoicepdf_regenerate", args=[invoice.pk]),
            "can_regenerate": request.access.can_edit(invoice.tenant)
            and not getattr(getattr(invoice, "portal", None), "is_draft", False),
            "pdf_versions": invoice.pdf_versions.without_content().order_by("-number"),
            "deliveries": PdfServed.objects.filter(invoice=invoice)
            .select_related("version")
            .defer("version__content"),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def pdf_view(self, request, pk):
        """The PDF the resolver serves (drafts: an unstored preview)."""
        invoice = self._invoice(request, pk)
        details = getattr(invoice, "portal", None)
        if details is not None and details.is_draft:
            return pdf_response(preview_pdf(invoice), pdf_filename(invoice))
        try:
            resolved = resolve_pdf(invoice, PdfServed.Channel.ADMIN)
        except PdfUnavailable as unavailable:
            return HttpResponse(str(unavailable), status=503, content_type="text/plain")
        return pdf_response(
            resolved.content, resolved.filename, **{"X-Invoice-PDF-Source": resolved.source}
        )

    def version_view(self, request, pk, number):
        invoice = self._invoice(request, pk)
        version = get_object_or_404(PdfVersion, invoice=invoice, number=number)
        name = pdf_filename(invoice).removesuffix(".pdf") + f" v{number}.pdf"
        return pdf_response(bytes(version.content), name)

    def regenerate_view(self, request, pk):
        self.require_edit(request)
        invoice = self._invoice(request, pk)
        try:
            version, created = store_portal_pdf(invoice, force=True)
        except Exception as error:  # show the staff member what the renderer said
            self.message_user(request, f"Rendering failed: {error}", messages.ERROR)
        else:
            if created:
                self.message_user(request, f"Rendered {version}: it is served from now on.")
            else:
                self.message_user(
                    request, f"Rendered again: identical to {version}, which stays current."
                )
        return HttpResponseRedirect(reverse("admin:invoicing_invoicepdf_change", args=[pk]))

    def _invoice(self, request, pk):
        return self.get_object_or_404(
            request, pk, self.get_queryset(request).select_related("tenant", "portal", "customer")
        )


class FallbackFilter(admin.SimpleListFilter):
    title = "fallback"
    parameter_name = "fallback"

    def lookups(self, request, model_admin):
        return [("yes", "Served from a fallback"), ("no", "Preferred source")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(fallback_reason="")
        if self.value() == "no":
            return queryset.filter(fallback_reason="")
        return queryset


@admin.register(PdfServed)
class PdfServedAdmin(ReadOnlyTenantAdmin):
    """The log of PDFs handed out, and every fallback from the preferred source."""

    in_sidebar = False  # a reference list: reached from its job page

    list_display = [
        "invoice_number",
        "version",
        "channel",
        "fallback_reason",
        "first_served",
        "last_served",
    ]
    list_filter = [FallbackFilter, "channel", "version__source"]
    search_fields = ["invoice__invoice_number", "invoice__third_party_number"]
    fields = list_display  # type: ignore[assignment]  # django-stubs: list types differ

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("version", "invoice__portal", "invoice__tenant__invoice_sync_settings")
            .defer("version__content")
        )

    @admin.display(description="Invoice")
    def invoice_number(self, obj):
        url = reverse("admin:invoicing_invoicepdf_change", args=[obj.invoice_id])
        return format_html('<a href="{}">{}</a>', url, invoice_number(obj.invoice))
