"""The admin's sidebar and home list, grouped by job instead of by Django app.

Django lists models under their app (Billing, Billing sync, Halo integration, ...): setup
was spread over about thirty lists in seven groups, in no order a partner follows. Here
each section is one job, its settings first, each entry named for what it is within the
section; a job's page (`admin:job_<name>`, when it exists) leads its section.

Reference lists (records copied from Halo, logs) say `in_sidebar = False` on their
ModelAdmin: they stay registered and reachable from their job's page, but not listed.
A model that no section names is listed under its app after the sections, so nothing new
ever disappears from the admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse

from portal.admin_base import SingletonSettingsAdmin


@dataclass(frozen=True)
class Section:
    key: str
    name: str
    #: (model label, name in the section or "" for the model's own plural name)
    models: tuple[tuple[str, str], ...]
    #: URL name of the job's page, listed first (as "Overview") once it exists
    page: str = ""


SECTIONS = (
    Section(
        "setup",
        "Setup",
        (
            ("integrations.HaloConnection", "Halo connection"),
            ("portal.Tenant", "Company & branding"),
            ("portal.ApiToken", ""),
        ),
    ),
    Section(
        "billing-sync",
        "Billing sync",
        (
            ("billing_sync.BillingSyncSettings", "Settings"),
            ("portal.Organisation", ""),
            ("portal.Product", ""),
            ("billing_sync.OrganisationMapping", ""),
            ("billing_sync.ProductMapping", ""),
            ("billing_sync.UsageCount", "Usage"),
            ("billing_sync.BillingSyncRun", "Runs"),
        ),
        page="admin:job_billing_sync",
    ),
    Section(
        "invoice-sync",
        "Invoice sync",
        (
            ("invoice_sync.InvoiceSyncSettings", "Settings"),
            ("billing.Invoice", ""),
            ("billing.Customer", ""),
            ("invoice_sync.InvoiceSyncRun", "Runs"),
        ),
        page="admin:job_invoice_sync",
    ),
    Section(
        "invoices-pdfs",
        "Invoices & PDFs",
        (
            ("invoicing.InvoicingSettings", "Settings"),
            ("invoicing.InvoicePdf", ""),
            ("invoicing.BillingRun", ""),
            ("invoicing.PortalInvoice", ""),
            ("invoicing.OneOffCharge", ""),
        ),
    ),
    Section(
        "payments",
        "Payments",
        (
            ("payments.PaymentSettings", "Settings"),
            ("payments.Payment", ""),
            ("billing.AutoPayRule", "Auto-pay rules"),
            ("reminders.ReminderSettings", ""),
            ("reminders.Reminder", ""),
        ),
        page="admin:job_payments",
    ),
    Section(
        "customer-pages",
        "Customer pages",
        (
            ("accounts.AccountSettings", "Account page"),
            ("accounts.HaloSignIn", ""),
        ),
    ),
    Section(
        "staff",
        "Staff",
        (
            ("portal.Membership", "Members"),
            ("portal.Invitation", ""),
        ),
    ),
)


def _page_url(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def group_by_job(app_dict: dict, registry: dict) -> list[dict]:
    """Django's `{app_label: app}` (each app with its `models`) as the job sections; a model
    no section names joins the section holding most of its app's models (new lists land
    beside their job), else its app's own group after the sections. Models whose admin
    says `in_sidebar = False` are left out."""
    entries = {}
    for app in app_dict.values():
        for model in app["models"]:
            model_admin = registry.get(model["model"])
            if getattr(model_admin, "in_sidebar", True):
                if isinstance(model_admin, SingletonSettingsAdmin):
                    model = {**model, "add_url": None}  # one row per tenant: never "Add"
                entries[model["model"]._meta.label] = model
    named = {label for section in SECTIONS for label, _ in section.models}
    unnamed = [label for label in entries if label not in named]
    arranged = []
    for section in SECTIONS:
        models = []
        if section.page and (page_url := _page_url(section.page)):
            if any(label in entries for label, _ in section.models):
                models.append(_page_entry(section, page_url))
        for label, name in section.models:
            if (model := entries.pop(label, None)) is not None:
                models.append({**model, "name": name or model["name"]})
        models += [entries.pop(label) for label in unnamed if _home(label) is section]
        if models:
            arranged.append(
                {
                    "name": section.name,
                    "app_label": section.key,
                    "app_url": next(
                        (m["admin_url"] for m in models if m.get("admin_url")),
                        reverse("admin:index"),
                    ),
                    "has_module_perms": True,
                    "models": models,
                }
            )
    for app in app_dict.values():
        rest = [
            entries.pop(label)
            for m in app["models"]
            if (label := m["model"]._meta.label) in entries
        ]
        if rest:
            arranged.append({**app, "models": rest})
    return arranged


def _home(label: str) -> Section | None:
    """The section naming most models of `label`'s app."""
    app_label = label.split(".")[0]
    counts = [
        (sum(1 for named, _ in section.models if named.split(".")[0] == app_label), section)
        for section in SECTIONS
    ]
    best, section = max(counts, key=lambda pair: pair[0])
    return section if best else None


def _page_entry(section: Section, url: str) -> dict:
    """A sidebar row for the job's page, shaped like Django's model rows."""
    return {
        "name": "Overview",
        "object_name": f"job-{section.key}",
        "perms": {"view": True},
        "admin_url": url,
        "add_url": None,
        "view_only": True,
    }
