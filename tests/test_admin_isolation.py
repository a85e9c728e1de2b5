"""Every tenant-scoped admin: B never sees or touches A's rows; A's viewer changes nothing."""

import pytest
from django import forms
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from portal.access import TenantAccess
from portal.admin_base import TenantScopedAdmin, object_tenant_id
from tests import factories

SCOPED = sorted(
    (
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if isinstance(model_admin, TenantScopedAdmin)
    ),
    key=lambda pair: pair[0]._meta.label,
)
IDS = [model._meta.label for model, _ in SCOPED]


def url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_scoped_admin_has_a_factory():
    missing = [model._meta.label for model, _ in SCOPED if model not in factories.MAKERS]
    assert not missing, f"add a maker in tests/factories.py for {missing}"


def test_every_model_admin_is_tenant_scoped():
    from django.contrib.auth.models import Group, User
    from django_q import models as q_models

    framework = {User, Group, q_models.Schedule, q_models.Success, q_models.Failure, q_models.OrmQ}
    unscoped = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if model not in framework and not isinstance(model_admin, TenantScopedAdmin)
    ]
    assert not unscoped


@pytest.fixture
def rows_a(personas):
    return {model: factories.make(model, personas.tenant_a) for model, _ in SCOPED}


@pytest.mark.parametrize(("model", "model_admin"), SCOPED, ids=IDS)
def test_other_tenant_cannot_list_view_change_or_delete(personas, rows_a, model, model_admin):
    obj = rows_a[model]
    client_b = personas.client(personas.owner_b)

    changelist = client_b.get(url(model, "changelist"))
    assert changelist.status_code == 200
    assert obj.pk not in [o.pk for o in changelist.context["cl"].result_list]

    for view in ("change", "delete", "history"):
        response = client_b.get(url(model, view, obj.pk))
        assert response.status_code == 404, view
        assert str(obj) not in response.content.decode()
    assert client_b.post(url(model, "change", obj.pk), {}).status_code == 404
    assert client_b.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 404

    client_b.post(
        url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert model.objects.filter(pk=obj.pk).exists()


@pytest.mark.parametrize(("model", "model_admin"), SCOPED, ids=IDS)
def test_other_tenant_cannot_pick_a_rows_in_widgets(personas, rows_a, model, model_admin):
    request = RequestFactory().get("/admin/")
    request.user = personas.owner_b
    request.session = {}
    request.access = TenantAccess(request)
    if not model_admin.has_add_permission(request):
        pytest.skip("no add form for this model")
    form = model_admin.get_form(request)()
    for name, field in form.fields.items():
        if isinstance(field, forms.ModelChoiceField):
            offered = list(field.queryset)
            foreign = [o for o in offered if object_tenant_id(o) == personas.tenant_a.pk]
            assert not foreign, f"{name} offers tenant A's {foreign}"


@pytest.mark.parametrize(("model", "model_admin"), SCOPED, ids=IDS)
def test_owner_sees_own_rows(personas, rows_a, model, model_admin):
    client_a = personas.client(personas.owner_a)
    assert client_a.get(url(model, "change", rows_a[model].pk)).status_code == 200


@pytest.mark.parametrize(("model", "model_admin"), SCOPED, ids=IDS)
def test_viewer_cannot_change_anything(personas, rows_a, model, model_admin):
    obj = rows_a[model]
    client = personas.client(personas.viewer_a)
    assert client.get(url(model, "changelist")).status_code == 200
    page = client.get(url(model, "change", obj.pk))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.get(url(model, "add")).status_code == 403
    assert client.post(url(model, "change", obj.pk), {}).status_code == 403
    assert client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    client.post(
        url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert model.objects.filter(pk=obj.pk).exists()


def test_owner_adds_rows_into_active_tenant_only(personas):
    from portal.models import Product

    client = personas.client(personas.owner_b)
    response = client.post(
        url(Product, "add"),
        {
            "name": "Backup",
            "sku": "BK-1",
            "unit_price": "3.00",
            "active": "on",
            "tenant": personas.tenant_a.pk,
        },
    )
    assert response.status_code == 302
    assert Product.objects.get(sku="BK-1").tenant == personas.tenant_b


def test_duplicate_sku_is_a_form_error_not_a_crash(personas):
    from portal.models import Product

    factories.product(personas.tenant_a, sku="DUP-1")
    client = personas.client(personas.owner_a)
    response = client.post(
        url(Product, "add"), {"name": "Again", "sku": "dup-1", "unit_price": "1"}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    # The other tenant may use the same SKU.
    client_b = personas.client(personas.owner_b)
    assert (
        client_b.post(
            url(Product, "add"), {"name": "Theirs", "sku": "DUP-1", "unit_price": "1"}
        ).status_code
        == 302
    )


def test_tenant_switcher_changes_scope(personas):
    from portal.models import Membership, Organisation

    Membership.objects.create(user=personas.owner_b, tenant=personas.tenant_a, role="viewer")
    org_a = factories.organisation(personas.tenant_a)
    client = personas.client(personas.owner_b)
    home = client.get(reverse("admin:index"))
    assert b'id="tenant-switch"' in home.content
    client.post(reverse("admin:switch_tenant"), {"tenant": personas.tenant_b.pk})
    assert client.get(url(Organisation, "change", org_a.pk)).status_code == 404
    client.post(reverse("admin:switch_tenant"), {"tenant": personas.tenant_a.pk})
    assert client.get(url(Organisation, "change", org_a.pk)).status_code == 200
    # The role follows the active tenant: B's owner is only a viewer in A.
    assert client.get(url(Organisation, "add")).status_code == 403


def test_cannot_switch_to_a_tenant_you_do_not_belong_to(personas):
    client = personas.client(personas.owner_b)
    response = client.post(reverse("admin:switch_tenant"), {"tenant": personas.tenant_a.pk})
    assert response.status_code == 302
    home = client.get(reverse("admin:index"))
    assert personas.tenant_a.name not in home.content.decode()


def test_admin_home_shows_health_of_active_tenant(personas):
    factories.organisation(personas.tenant_a)
    home = personas.client(personas.owner_a).get(reverse("admin:index")).content.decode()
    assert f"{personas.tenant_a.name} · at a glance" in home
    assert "1 active" in home
    assert personas.tenant_b.name not in home


def test_owner_invites_staff_by_email(personas, mailoutbox):
    from portal.models import Membership

    client = personas.client(personas.owner_a)
    response = client.post(url(Membership, "add"), {"email": "new@example.com", "role": "admin"})
    assert response.status_code == 302
    member = Membership.objects.get(user__email="new@example.com")
    assert member.tenant == personas.tenant_a and member.role == "admin"
    assert mailoutbox and mailoutbox[0].to == ["new@example.com"]


def test_last_owner_cannot_be_demoted(personas):
    from portal.models import Membership

    owner = Membership.objects.get(user=personas.owner_a)
    client = personas.client(personas.owner_a)
    response = client.post(url(Membership, "change", owner.pk), {"role": "viewer"})
    assert response.status_code == 200
    assert "at least one owner" in response.content.decode()
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_view_on_site_shortcut_is_scoped_to_the_active_tenant(personas):
    """`/admin/r/<content type>/<pk>/` redirects to public URLs (pay pages, receipts); with
    sequential ids another tenant's staff could walk them all."""
    from django.contrib.contenttypes.models import ContentType

    from billing.payments.models import PayPage

    page = PayPage.for_invoice(factories.invoice(personas.tenant_a))
    receipt = factories.payment(personas.tenant_a)
    for obj in (page, receipt):
        shortcut = reverse(
            "admin:view_on_site", args=[ContentType.objects.get_for_model(obj).pk, obj.pk]
        )
        response = personas.client(personas.owner_b).get(shortcut)
        assert response.status_code == 404
        assert obj.get_absolute_url() not in response.content.decode()
        own = personas.client(personas.viewer_a).get(shortcut)
        assert own.status_code == 302
        assert own["Location"].endswith(obj.get_absolute_url())
    client_b = personas.client(personas.owner_b)
    payment_type = ContentType.objects.get_for_model(receipt).pk
    assert client_b.get(f"/admin/r/{payment_type}/not-a-number/").status_code == 404
    assert client_b.get(f"/admin/r/999999/{receipt.pk}/").status_code == 404
