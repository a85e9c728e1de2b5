"""The admin sidebar and home list are grouped by job (portal.sidebar): sections in the
order a partner sets up, reference lists left out but still reachable, no "Add" for a
tenant's one row of settings, and nothing registered ever dropped."""

import pytest
from django.contrib import admin
from django.contrib.admin import AdminSite
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from portal.access import TenantAccess
from portal.sidebar import SECTIONS

pytestmark = pytest.mark.django_db


def app_list_of(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    request.session = {}
    request.access = TenantAccess(request)
    return admin.site.get_app_list(request)


def sections(app_list):
    return {app["name"]: [model["name"] for model in app["models"]] for app in app_list}


def test_the_sidebar_groups_by_job(personas):
    listed = sections(app_list_of(personas.owner_a))
    assert list(listed) == [
        "Setup",
        "Billing sync",
        "Invoice sync",
        "Invoices & PDFs",
        "Payments",
        "Customer pages",
        "Staff",
    ]
    assert listed["Setup"] == ["Halo connection", "Company & branding", "API tokens"]
    billing = listed["Billing sync"]
    start = billing.index("Settings")  # after the job page's "Overview", once it exists
    assert billing[start : start + 7] == [
        "Settings",
        "Organisations",
        "Products",
        "Organisation mappings",
        "Product mappings",
        "Usage",
        "Runs",
    ]
    entries = sum(len(models) for models in listed.values())
    request = RequestFactory().get("/admin/")
    request.user, request.session = personas.owner_a, {}
    request.access = TenantAccess(request)
    by_app = AdminSite.get_app_list(admin.site, request)  # Django's grouping by app
    assert len(by_app) == 9 and len(listed) == 7
    assert entries <= sum(len(app["models"]) for app in by_app) * 3 // 4


def test_reference_lists_are_left_out_but_stay_reachable(personas):
    listed = {m["admin_url"] for app in app_list_of(personas.owner_a) for m in app["models"]}
    owner = personas.client(personas.owner_a)
    hidden = [
        model
        for model, model_admin in admin.site._registry.items()
        if not getattr(model_admin, "in_sidebar", True)
    ]
    assert {m._meta.label for m in hidden} >= {
        "billing_sync.HaloClientRecord",
        "billing_sync.UsageChange",
        "billing_sync.SyncResult",
        "invoice_sync.WebhookDelivery",
        "invoicing.PdfServed",
        "payments.ProcessorEvent",
    }
    for model in hidden:
        changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert changelist not in listed
        assert owner.get(changelist).status_code == 200, changelist
    # An app's own index still lists all of its models, reference lists included.
    app_index = owner.get(reverse("admin:app_list", args=["billing_sync"])).content.decode()
    assert "Halo clients" in app_index and "Usage changes" in app_index


def test_a_tenants_settings_offer_no_add(personas):
    for app in app_list_of(personas.owner_a):
        for model in app["models"]:
            if model["name"] == "Settings":
                assert model["add_url"] is None, app["name"]


def test_a_model_no_section_names_joins_its_apps_section(personas, monkeypatch):
    import portal.sidebar

    trimmed = [
        portal.sidebar.Section(
            s.key, s.name, tuple(m for m in s.models if m[0] != "billing.Customer")
        )
        for s in SECTIONS
    ]
    monkeypatch.setattr(portal.sidebar, "SECTIONS", trimmed)
    listed = sections(app_list_of(personas.owner_a))
    assert listed["Invoice sync"][-1] == "Customers"  # beside billing's invoices
    assert "Customers" not in listed["Payments"]


def test_models_no_section_names_keep_their_app_group(personas):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    listed = sections(app_list_of(root))
    named = {label for section in SECTIONS for label, _ in section.models}
    assert "auth.User" not in named and "Users" in listed["Authentication and Authorization"]
    everything = sum(len(models) for models in listed.values())
    visible = [
        model
        for model, model_admin in admin.site._registry.items()
        if getattr(model_admin, "in_sidebar", True)
    ]
    pages = sum(1 for section in SECTIONS if section.page and _reverses(section.page))
    assert everything == len(visible) + pages


def _reverses(name):
    from django.urls import NoReverseMatch

    try:
        reverse(name)
    except NoReverseMatch:
        return False
    return True


def test_the_home_page_lists_the_sections(personas):
    home = personas.client(personas.owner_a).get(reverse("admin:index")).content.decode()
    assert "Everything, by job" in home and "Invoices &amp; PDFs" in home
    assert reverse("admin:billing_sync_haloclientrecord_changelist") not in home
