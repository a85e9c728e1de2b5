"""A tenant's singleton settings open as a form (portal.admin_base.SingletonSettingsAdmin):
the list redirects to the active tenant's row, nothing is deleted or added twice, the list's
actions are buttons on the form; superusers with "All tenants" still get the list."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.payments.models import PaymentSettings
from integrations.invoice_sync.models import InvoiceSyncSettings
from portal.access import SESSION_KEY
from portal.admin_base import SingletonSettingsAdmin
from tests import factories

pytestmark = pytest.mark.django_db

SINGLETONS = sorted(
    (
        model
        for model, model_admin in admin.site._registry.items()
        if isinstance(model_admin, SingletonSettingsAdmin)
    ),
    key=lambda model: model._meta.label,
)


def admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_per_tenant_settings_admin_is_a_form():
    labels = {model._meta.label for model in SINGLETONS}
    assert {
        "billing_sync.BillingSyncSettings",
        "invoice_sync.InvoiceSyncSettings",
        "invoicing.InvoicingSettings",
        "payments.PaymentSettings",
        "accounts.AccountSettings",
        "reminders.ReminderSettings",
    } <= labels


@pytest.mark.parametrize("model", SINGLETONS, ids=[m._meta.label for m in SINGLETONS])
def test_the_list_opens_the_tenants_form_without_delete(personas, model):
    owner = personas.client(personas.owner_a)
    response = owner.get(admin_url(model, "changelist"))
    row = model.objects.get(tenant=personas.tenant_a)  # made with defaults on first visit
    assert response.status_code == 302
    assert response["Location"] == admin_url(model, "change", row.pk)

    page = owner.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and 'name="_save"' in html
    assert "deletelink" not in html and admin_url(model, "delete", row.pk) not in html
    assert 'name="_addanother"' not in html and 'name="_continue"' not in html
    assert f"<h1>{model._meta.verbose_name[0].upper()}" in html  # titled by what it is

    # Nothing to delete, nothing to add twice: Add opens the row.
    assert owner.post(admin_url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()
    assert owner.get(admin_url(model, "add"))["Location"] == admin_url(model, "change", row.pk)

    # The other tenant's owner lands on their own row, never on A's.
    other = personas.client(personas.owner_b).get(admin_url(model, "changelist"))
    assert other["Location"] == admin_url(model, "change", model.for_tenant(personas.tenant_b).pk)


def test_saving_stays_on_the_form(personas):
    owner = personas.client(personas.owner_a)
    row = PaymentSettings.for_tenant(personas.tenant_a)
    form = owner.get(admin_url(PaymentSettings, "change", row.pk)).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data |= {"allow_partial": "on", "_save": "Save"}
    data = {k: ("on" if v is True else v) for k, v in data.items() if v is not False}
    response = owner.post(admin_url(PaymentSettings, "change", row.pk), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert response["Location"] == admin_url(PaymentSettings, "change", row.pk)
    page = owner.get(response["Location"]).content.decode()
    assert "Payment settings saved." in page
    assert PaymentSettings.objects.get(pk=row.pk).allow_partial


def test_the_lists_actions_are_buttons_and_its_columns_a_summary(personas, queued):
    factories.halo_connection(personas.tenant_a)
    row = InvoiceSyncSettings.for_tenant(personas.tenant_a)
    owner = personas.client(personas.owner_a)
    page = owner.get(admin_url(InvoiceSyncSettings, "changelist"), follow=True)
    html = page.content.decode()
    actions = dict(page.context["singleton_actions"])
    assert "register_webhook" in actions and "delete_selected" not in actions
    assert f'name="_selected_action" value="{row.pk}"' in html
    assert "Fetch new data" in html and "Available now" in html  # a list column, shown

    # A button posts the action to the list, which runs it and comes back to the form.
    answer = owner.post(
        admin_url(InvoiceSyncSettings, "changelist"),
        {"action": "fetch_new", "_selected_action": [row.pk]},
        follow=True,
    )
    assert answer.redirect_chain[-1][0] == admin_url(InvoiceSyncSettings, "change", row.pk)
    assert "started in the background" in answer.content.decode()

    viewer = personas.client(personas.viewer_a)
    seen = viewer.get(admin_url(InvoiceSyncSettings, "changelist"), follow=True)
    assert seen.status_code == 200 and seen.context["singleton_actions"] == []
    assert 'name="_save"' not in seen.content.decode()


def test_all_tenants_still_lists_every_row(personas):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    client = personas.client(root)
    session = client.session
    session[SESSION_KEY] = "all"
    session.save()
    for tenant in (personas.tenant_a, personas.tenant_b):
        PaymentSettings.for_tenant(tenant)
    page = client.get(admin_url(PaymentSettings, "changelist"))
    assert page.status_code == 200
    assert {row.tenant for row in page.context["cl"].result_list} == {
        personas.tenant_a,
        personas.tenant_b,
    }
    assert "delete_selected" not in dict(page.context["action_form"].fields["action"].choices)
