from django import forms
from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.models import AGEING_BUCKETS, AutoPayRule, Contract, Customer, Invoice, InvoiceLine
from billing.payments.models import PayPage
from portal.admin_base import ReadOnlyTenantAdmin, TenantScopedAdmin
from portal.formats import format_money, format_percent, format_quantity


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"
    options = {
        "draft": ("Draft", lambda qs, today: qs.drafts()),
        "unpaid": ("Unpaid", lambda qs, today: qs.unpaid()),
        "overdue": ("Overdue", lambda qs, today: qs.overdue(today)),
        "paid": ("Paid", lambda qs, today: qs.paid()),
        "voided": ("Voided", lambda qs, today: qs.filter(voided=True)),
        "deleted": ("Deleted in Halo", lambda qs, today: qs.filter(deleted_in_halo=True)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.options.items()]

    def queryset(self, request, queryset):
        choice = self.options.get(self.value())
        return choice[1](queryset, tenant_today(request)) if choice else queryset


def tenant_today(request):
    """Today in the active tenant's time zone (the server's with none active): what makes
    an invoice overdue and ages it, in the list's filters as on the customer's pages."""
    tenant = request.access.tenant
    return timezone.localdate(timezone=tenant.tz if tenant else None)


class AgeingFilter(admin.SimpleListFilter):
    """Open invoices by days past due, as the ageing chart above the list counts them (each
    bar links here); the active tenant's date decides."""

    title = "days overdue"
    parameter_name = "ageing"

    def lookups(self, request, model_admin):
        return [(bucket.key, bucket.label) for bucket in AGEING_BUCKETS]

    def queryset(self, request, queryset):
        if self.value() not in {bucket.key for bucket in AGEING_BUCKETS}:
            return queryset
        return queryset.in_ageing_bucket(self.value(), tenant_today(request))


class AutoPayFilter(admin.SimpleListFilter):
    title = "auto-pay"
    parameter_name = "autopay"

    def lookups(self, request, model_admin):
        return [("yes", "Auto-pay"), ("no", "Not auto-pay")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(autopay_rule__isnull=self.value() == "no")
        return queryset


class InvoiceLineInline(admin.TabularInline):
    """The lines as the invoice reads: quantities as written ("26", "2.5", not the column's
    "26.0000"), money and rates in the tenant's locale."""

    model = InvoiceLine
    fields = [
        "code",
        "description",
        "qty",
        "price",
        "net",
        "rate",
        "tax",
        "line_total",
        "start_date",
        "end_date",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: list types differ
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice__tenant")

    @staticmethod
    def _money(line, amount):
        tenant = line.invoice.tenant
        return format_money(amount, line.invoice.currency or tenant.currency, tenant.locale)

    @admin.display(description="Quantity")
    def qty(self, line):
        return format_quantity(line.quantity, line.invoice.tenant.locale)

    @admin.display(description="Unit price")
    def price(self, line):
        return self._money(line, line.unit_price)

    @admin.display(description="Net")
    def net(self, line):
        return self._money(line, line.net_amount)

    @admin.display(description="Tax rate")
    def rate(self, line):
        return format_percent(line.tax_rate, line.invoice.tenant.locale)

    @admin.display(description="Tax")
    def tax(self, line):
        return self._money(line, line.tax_amount)

    @admin.display(description="Total")
    def line_total(self, line):
        return self._money(line, line.total)

    def has_view_permission(self, request, obj=None):
        return True  # shown only inside InvoiceAdmin's tenant-scoped change view

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyTenantAdmin):
    """Read-only: Halo is the master; every sync rewrites these rows."""

    list_display = [
        "number",
        "bill_to",
        "source_label",
        "invoice_date",
        "due_date",
        "total_amount",
        "due_amount",
        "status",
        "autopay",
        "pay_link",
        "pdf",
    ]
    list_filter = [StatusFilter, AgeingFilter, "source", AutoPayFilter, "currency", "posted"]
    list_select_related = [
        "customer",
        "autopay_rule",
        "tenant__invoice_sync_settings",
        "portal__organisation",
    ]
    search_fields = ["invoice_number", "third_party_number", "customer__name", "reference"]
    date_hierarchy = "invoice_date"
    inlines = [InvoiceLineInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "customer",
                    ("halo_id", "invoice_number", "third_party_number"),
                    "reference",
                    ("invoice_date", "due_date", "date_paid"),
                    "pay_link_url",
                ]
            },
        ),
        (
            "Amounts",
            {"fields": ["currency", ("total", "tax_total"), ("amount_paid", "amount_due")]},
        ),
        (
            "Status",
            {"fields": ["payment_status", ("posted", "voided", "deleted_in_halo")]},
        ),
        (
            "Agreement and auto-pay",
            {"fields": ["contract_halo_id", "contract_subtype_name", "autopay_rule"]},
        ),
        (
            "Sync",
            {"fields": ["source", "halo_created", "halo_last_modified", "synced"]},
        ),
    ]

    class Media:
        js = ["portal/copy_link.js"]
        css = {"all": ["portal/fit_lists.css"]}  # fits 1366 px with its pay and PDF links

    def get_changelist_instance(self, request):
        """The listed open invoices' pay links, in two queries (pay pages a Halo invoice
        has no page for yet are made, as for Halo's pay buttons)."""
        changelist = super().get_changelist_instance(request)
        open_invoices = [invoice for invoice in changelist.result_list if invoice.is_open]
        for page in PayPage.objects.for_invoices(open_invoices).values():
            page.invoice.pay_url = page.public_url()
        return changelist

    def get_search_results(self, request, queryset, search_term):
        results, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip().isdigit():
            results |= queryset.filter(halo_id=int(search_term.strip()))
        return results, duplicates

    @admin.display(description="Number", ordering="halo_id")
    def number(self, obj):
        return obj.display_number()

    @admin.display(description="Customer", ordering="customer__name")
    def bill_to(self, obj):
        """Halo invoices bill a Halo client; portal invoices an organisation."""
        return obj.bill_to or "-"

    @admin.display(description="Status")
    def status(self, obj):
        return obj.status_label

    @admin.display(description="Auto-pay", boolean=True, ordering="autopay_rule")
    def autopay(self, obj):
        return obj.autopay_rule_id is not None

    @admin.display(description="Total", ordering="total")
    def total_amount(self, obj):
        return format_money(obj.total, obj.currency or obj.tenant.currency, obj.tenant.locale)

    @admin.display(description="Amount due", ordering="amount_due")
    def due_amount(self, obj):
        return format_money(obj.amount_due, obj.currency or obj.tenant.currency, obj.tenant.locale)

    @admin.display(description="Source", ordering="source")
    def source_label(self, obj):
        return obj.get_source_display()

    @admin.display(description="Pay link")
    def pay_link(self, obj):
        """The customer's pay page (open invoices only): a button copies its address."""
        url = getattr(obj, "pay_url", "")
        if not url:
            return "–"
        return format_html(
            '<span class="copy-link"><a href="{}" target="_blank" rel="noopener">Pay page</a> '
            '<button type="button" class="button" data-copy="{}" '
            'aria-label="Copy the pay link of invoice {}">Copy</button></span>',
            url,
            url,
            obj.display_number(),
        )

    @admin.display(description="PDF")
    def pdf(self, obj):
        """The PDF the resolver serves Halo and customers (a draft's preview)."""
        url = reverse("admin:invoicing_invoicepdf_pdf", args=[obj.pk])
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a>',
            url,
            "Preview" if obj.is_draft else "PDF",
        )


@admin.register(Customer)
class CustomerAdmin(ReadOnlyTenantAdmin):
    list_display = ["name", "halo_id", "billing_email", "billing_contact", "inactive", "unpaid"]
    list_filter = ["inactive"]
    search_fields = ["name", "billing_email", "account_ref", "=halo_id"]
    fields = [
        "name",
        "halo_id",
        "account_ref",
        "billing_email",
        ("billing_first_name", "billing_last_name"),
        "inactive",
        "custom_fields",
        "halo_last_modified",
        "synced",
    ]

    def get_queryset(self, request):
        unpaid = Invoice.objects.unpaid().values("pk")
        return (
            super()
            .get_queryset(request)
            .annotate(unpaid_count=Count("invoices", filter=Q(invoices__in=unpaid)))
        )

    @admin.display(description="Unpaid invoices", ordering="unpaid_count")
    def unpaid(self, obj):
        return obj.unpaid_count


@admin.register(AutoPayRule)
class AutoPayRuleAdmin(TenantScopedAdmin):
    """Which Halo agreement subtypes (from synced contracts) turn auto-pay on."""

    list_display = ["subtype_name", "halo_subtype_id", "enabled", "invoice_count"]
    list_filter = ["enabled"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(invoice_count=Count("invoices"))

    @admin.display(description="Invoices flagged", ordering="invoice_count")
    def invoice_count(self, obj):
        return obj.invoice_count

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        known = self._known_subtypes(request)
        # One rule per subtype: offer only those without one (and the edited rule's own).
        taken = set(
            self.get_queryset(request)
            .exclude(pk=obj.pk if obj else None)
            .values_list("halo_subtype_id", flat=True)
        )
        subtypes = {k: v for k, v in known.items() if k not in taken}
        if obj is not None:
            subtypes.setdefault(obj.halo_subtype_id, obj.subtype_name)
        if known:
            help_text = "As set on ClientContracts in Halo (from the last sync)."
            if not subtypes:
                help_text = (
                    "Every agreement subtype from the last sync has a rule already: change "
                    "those rules, or sync invoices after adding a subtype in Halo."
                )
            form.base_fields["halo_subtype_id"] = forms.TypedChoiceField(
                label="Agreement subtype",
                coerce=int,
                choices=sorted(
                    ((k, f"{v} ({k})") for k, v in subtypes.items()), key=lambda c: c[1]
                ),
                help_text=help_text,
            )
        return form

    def save_model(self, request, obj, form, change):
        obj.subtype_name = self._known_subtypes(request).get(
            obj.halo_subtype_id, obj.subtype_name or f"Subtype {obj.halo_subtype_id}"
        )
        super().save_model(request, obj, form, change)

    def _known_subtypes(self, request):
        contracts = Contract.objects.filter(tenant_id__in=request.access.scope()).exclude(
            subtype_id=None
        )
        return dict(contracts.values_list("subtype_id", "subtype_name").distinct())

    def get_fields(self, request, obj=None):
        return ["halo_subtype_id", "enabled"]
