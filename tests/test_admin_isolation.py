"""Every tenant-scoped admin, and every URL the admin site resolves: B never sees or touches
A's rows; A's viewer changes nothing."""

import html
import re
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test import RequestFactory
from django.urls import URLResolver, get_resolver, resolve, reverse
from django.urls.resolvers import RoutePattern
from django.utils.regex_helper import normalize

from portal.access import TenantAccess
from portal.admin_base import (
    SingletonSettingsAdmin,
    TenantScopedAdmin,
    filter_to_tenants,
    object_tenant_id,
    tenant_path,
)
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
    if isinstance(model_admin, SingletonSettingsAdmin):  # opens B's own row's form
        assert changelist.status_code == 302
        assert changelist["Location"] == url(
            model, "change", model.for_tenant(personas.tenant_b).pk
        )
    else:
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
    listed = client.get(url(model, "changelist"))
    if isinstance(model_admin, SingletonSettingsAdmin):  # opens A's row, to read only
        assert listed["Location"] == url(model, "change", obj.pk)
    else:
        assert listed.status_code == 200
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
    """Adding a member leads to the invitation form; the invitation adds nobody until it is
    accepted (tests/test_invitations.py)."""
    from portal.models import Invitation, Membership

    client = personas.client(personas.owner_a)
    assert client.get(url(Membership, "add"))["Location"] == url(Invitation, "add")
    response = client.post(url(Invitation, "add"), {"email": "new@example.com", "role": "admin"})
    assert response.status_code == 302
    invitation = Invitation.objects.get(email="new@example.com")
    assert invitation.tenant == personas.tenant_a and invitation.role == "admin"
    assert not Membership.objects.filter(user__email="new@example.com").exists()
    assert mailoutbox and mailoutbox[0].to == ["new@example.com"]


def test_adding_a_member_by_email_attaches_nobody(personas):
    """Pentest #12, finding 13: an owner typing another tenant's user's email attached that
    user to their tenant at once (and made a non-staff user staff)."""
    from portal.models import Membership

    outsider = User.objects.create_user("outsider", "outsider@example.com", "x")
    client = personas.client(personas.owner_a)
    for email in (personas.owner_b.email, outsider.email):
        client.post(url(Membership, "add"), {"email": email, "role": "admin"})
    assert not Membership.objects.filter(
        tenant=personas.tenant_a, user__in=[personas.owner_b, outsider]
    ).exists()
    outsider.refresh_from_db()
    assert not outsider.is_staff


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


# -- every URL the admin resolves -----------------------------------------------------------
#
# Found by walking the URL resolver, so a URL added later (a ModelAdmin.get_urls override, a
# view on the admin site) is swept without anyone listing it. Each pattern's parameters are
# filled with tenant A's objects (`FILLERS`); a pattern it cannot fill fails, asking to teach
# the sweep. Tenant B's owner must get 404/403 (or the login page) for any URL that names one
# of A's objects and never see A's data anywhere; A's viewer changes nothing by POST.

_ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>")
# Parameters that name the object of the pattern's model (its ModelAdmin made the URL).
OBJECT_PARAMETERS = ("object_id", "pk", "id", "run_id")


@dataclass(frozen=True)
class AdminUrl:
    """One URL pattern under the admin, with the chain of patterns leading to it."""

    patterns: tuple
    callback: object
    name: str | None
    model: type | None  # the model whose ModelAdmin added the pattern

    @property
    def route(self):
        return "".join(str(pattern) for pattern in self.patterns)

    @property
    def parameters(self):
        names = []
        for pattern in self.patterns:
            if isinstance(pattern, RoutePattern):
                names += pattern.converters
            else:
                names += pattern.regex.groupindex
        return frozenset(names)

    def path(self, kwargs):
        built = "/"
        for pattern in self.patterns:
            if isinstance(pattern, RoutePattern):
                built += _ROUTE_PARAMETER.sub(
                    lambda m, p=pattern: str(
                        p.converters[m["parameter"]].to_url(kwargs[m["parameter"]])
                    ),
                    str(pattern),
                )
            else:
                template, names = normalize(pattern.regex.pattern)[0]
                built += template % {name: kwargs[name] for name in names}
        return built


def admin_urls():
    """Every URL pattern in the admin site's namespace or under its prefix, recursively."""
    prefix = reverse("admin:index").lstrip("/")
    by_prefix = {f"{m._meta.app_label}/{m._meta.model_name}/": m for m in admin.site._registry}
    found = []

    def walk(entries, chain, in_admin, model):
        for entry in entries:
            patterns = (*chain, entry.pattern)
            if isinstance(entry, URLResolver):
                inside = in_admin or entry.namespace == admin.site.name
                owner = model or (by_prefix.get(str(entry.pattern)) if in_admin else None)
                walk(entry.url_patterns, patterns, inside, owner)
            elif in_admin or "".join(map(str, patterns)).startswith(prefix):
                found.append(AdminUrl(patterns, entry.callback, entry.name, model))

    walk(get_resolver().url_patterns, (), False, None)
    return found


ADMIN_URLS = admin_urls()


@dataclass
class Filling:
    """Values for a pattern's parameters (and a query string)."""

    kwargs: dict
    query: str = ""
    names_a_object: bool = False  # the URL points at one of tenant A's objects
    shown_to_a: object = None  # a row owner A must see there (proves the filling reaches it)


class RowsOfA:
    """Tenant A's rows, one per model, made on first use through tests/factories.py."""

    def __init__(self, tenant):
        self.tenant = tenant
        self.made = {}

    def __call__(self, model):
        if model not in factories.MAKERS:
            pytest.fail(
                f"The admin URL sweep needs a row of {model._meta.label} owned by or naming "
                "tenant A: add a maker to tests/factories.py."
            )
        if model not in self.made:
            self.made[model] = factories.make(model, self.tenant)
        return self.made[model]

    def every_admin_model(self):
        for model in admin.site._registry:
            self(model)


def _teach(url, why):
    pytest.fail(
        f"The admin URL sweep cannot fill {url.route!r} (name {url.name!r}, parameters "
        f"{sorted(url.parameters)}): {why}. Teach it in tests/test_admin_isolation.py "
        "(OBJECT_PARAMETERS or FILLERS), so this URL is checked for tenant isolation."
    )


def _own_object(url, rows):
    if url.model is None:
        _teach(url, "the pattern names an object but belongs to no ModelAdmin")
    (name,) = url.parameters
    return [Filling({name: quote(rows(url.model).pk)}, names_a_object=True)]


def _no_parameters(url, rows):
    if url.model is not None:
        rows(url.model)  # the list, add and custom pages must not show it to B
    else:
        rows.every_admin_model()
    if url.name == "autocomplete":
        return [Filling({}), *_autocomplete_queries(rows)]
    return [Filling({})]


def _autocomplete_queries(rows):
    """One query per autocomplete field of every ModelAdmin, offering A's row."""
    fillings = []
    for model, model_admin in admin.site._registry.items():
        for field_name in model_admin.autocomplete_fields:
            remote = model._meta.get_field(field_name).remote_field.model
            query = urlencode(
                {
                    "app_label": model._meta.app_label,
                    "model_name": model._meta.model_name,
                    "field_name": field_name,
                    "term": "",
                }
            )
            fillings.append(Filling({}, query=query, shown_to_a=rows(remote)))
    return fillings


def _pdf_version(url, rows):
    from billing.invoicing.models import InvoicePdf
    from billing.invoicing.pdfs import store_portal_pdf

    if url.model is not InvoicePdf:
        _teach(url, "only InvoicePdf's version URL has a version number")
    invoice = rows(InvoicePdf)
    version, _ = store_portal_pdf(invoice)
    return [Filling({"pk": invoice.pk, "number": version.number}, names_a_object=True)]


def _public_objects(url, rows):
    """The "view on site" shortcut: every model with a public URL (pay pages, receipts)."""
    fillings = []
    for model in apps.get_models():
        if hasattr(model, "get_absolute_url"):
            obj = rows(model)
            kwargs = {
                "content_type_id": ContentType.objects.get_for_model(model).pk,
                "object_id": quote(obj.pk),
            }
            fillings.append(Filling(kwargs, names_a_object=True))
    if not fillings:
        _teach(url, "no model has get_absolute_url any more")
    return fillings


def _app_indexes(url, rows):
    rows.every_admin_model()
    labels = sorted({model._meta.app_label for model in admin.site._registry})
    return [Filling({"app_label": label}) for label in labels]


def _catch_all(url, rows):
    rows.every_admin_model()
    return [Filling({"url": "no-such-page/"})]


def _halo_client(url, rows):
    """The Halo custom button's account page: tenant A's code and one of A's customers."""
    from billing.models import Customer

    customer = rows(Customer)
    kwargs = {"tenant_code": customer.tenant.slug, "client_id": str(customer.halo_id)}
    return [Filling(kwargs, names_a_object=True, shown_to_a=customer)]


FILLERS = {
    frozenset(): _no_parameters,
    **{frozenset({name}): _own_object for name in OBJECT_PARAMETERS},
    frozenset({"pk", "number"}): _pdf_version,
    frozenset({"content_type_id", "object_id"}): _public_objects,
    frozenset({"app_label"}): _app_indexes,
    frozenset({"url"}): _catch_all,
    frozenset({"tenant_code", "client_id"}): _halo_client,
}


def fillings(url, rows):
    filler = FILLERS.get(url.parameters)
    if filler is None:
        _teach(url, "no filler knows these parameters")
    return filler(url, rows)


def markers(row):
    """Texts that mean `row` is on a page: its name and its admin change link."""
    found = [re.compile(r"(?<![\w-])" + re.escape(str(row)) + r"(?![\w-])")]
    if type(row) in admin.site._registry:
        opts = row._meta
        link = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(row.pk)])
        found.append(re.compile(re.escape(link)))
    return found


def text_of(response):
    return html.unescape(response.content.decode(errors="replace"))


def rows_of(tenant):
    """Every row tenant `tenant` owns, and its staff users."""
    snapshot = {}
    for model in apps.get_models():
        if tenant_path(model) is not None:
            queryset = filter_to_tenants(model._base_manager.all(), [tenant.pk])
        elif model is User:
            queryset = User.objects.filter(memberships__tenant=tenant)
        else:
            continue
        snapshot[model._meta.label] = list(queryset.order_by("pk").values())
    return snapshot


class Writes:
    """Records the SQL statements that write to the database (`connection.execute_wrapper`),
    except to the session table and the database cache."""

    WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)

    def __init__(self):
        self.statements = []
        cache = settings.CACHES["default"]
        ignored = [Session._meta.db_table]
        if cache["BACKEND"].endswith("DatabaseCache"):
            ignored.append(cache["LOCATION"])
        self.ignored = re.compile("|".join(rf"\b{re.escape(table)}\b" for table in ignored))

    def __call__(self, execute, sql, params, many, context):
        if self.WRITE.match(sql) and not self.ignored.search(sql):
            self.statements.append(sql)
        return execute(sql, params, many, context)


@contextmanager
def unchanged_rows_of(tenant):
    """Fails when the block changes any of `tenant`'s rows. Rows are compared only when the
    block wrote at all: its writes are rolled back to read the rows as they were."""
    writes = Writes()
    savepoint = transaction.savepoint()
    with connection.execute_wrapper(writes):
        yield
    if not writes.statements:
        transaction.savepoint_commit(savepoint)
        return
    after = rows_of(tenant)
    transaction.savepoint_rollback(savepoint)
    before = rows_of(tenant)
    changed = [label for label in before if before[label] != after[label]]
    assert not changed, f"{changed} of {tenant} changed"


def follow(client, response, limit=5):
    """Follow local redirects with GETs, as a browser would."""
    while response.status_code in (301, 302, 303, 307, 308) and limit:
        location = response["Location"]
        if location.startswith("http://testserver"):
            location = location.removeprefix("http://testserver")
        if not location.startswith("/"):
            break
        response = client.get(location)
        limit -= 1
    return response


def refused(response):
    login = reverse("admin:login")
    if response.status_code in (403, 404, 405):
        return True
    return response.status_code == 302 and response["Location"].startswith(login)


def post_data(rows, tenant):
    """A POST that would change something for an owner: confirmations, the delete action on
    A's row and A's rows' ids under their model names (`invoice`, `organisation`, ...)."""
    data = {"post": "yes", "confirm": "yes", "all": "on", "do": "skip", "tenant": tenant.pk}
    for model, row in rows.made.items():
        data.setdefault(model._meta.model_name, row.pk)
    if rows.made:
        data |= {
            "action": "delete_selected",
            "_selected_action": [r.pk for r in rows.made.values()],
        }
    return data


def control_client(personas, url):
    """Who may open the URL in tenant A: its owner, or a superuser for framework admins
    (users, django-q) that tenant owners do not get."""
    model_admin = admin.site._registry.get(url.model)
    if model_admin is None or isinstance(model_admin, TenantScopedAdmin):
        return personas.client(personas.owner_a)
    root = User.objects.create_superuser("root", "root@example.com", "x")
    return personas.client(root)


@pytest.mark.parametrize("url", ADMIN_URLS, ids=[url.route for url in ADMIN_URLS])
def test_every_admin_url_keeps_tenants_apart(personas, url):
    rows = RowsOfA(personas.tenant_a)
    filled = fillings(url, rows)
    seen_by_b = [m for row in rows.made.values() for m in markers(row)]
    seen_by_b += markers(personas.tenant_a)
    control = control_client(personas, url)
    client_b = personas.client(personas.owner_b)
    viewer = personas.client(personas.viewer_a)

    for filling in filled:
        where = url.path(filling.kwargs) + (f"?{filling.query}" if filling.query else "")
        assert resolve(where.split("?")[0]).func is url.callback, f"{where} resolves elsewhere"

        # The filling reaches A's row: A's side does not answer "no such object".
        response = control.get(where)
        assert response.status_code < 500, where
        if filling.names_a_object:
            assert response.status_code != 404, f"{where}: the sweep filled a missing object"
            assert response.get("Location") != reverse("admin:index"), where
        if filling.shown_to_a is not None:
            assert any(m.search(text_of(response)) for m in markers(filling.shown_to_a)), where
        assert viewer.get(where).status_code < 500, where

        # B's owner: refused where the URL names A's object, never shown A's rows, and
        # changes none of them (GET, then a POST that would change something).
        with unchanged_rows_of(personas.tenant_a):
            for method in ("get", "post"):
                data = post_data(rows, personas.tenant_a) if method == "post" else {}
                response = getattr(client_b, method)(where, data)
                assert response.status_code < 500, (method, where)
                final = follow(client_b, response)
                if filling.names_a_object:
                    assert refused(response) or refused(final), (method, where)
                leaked = [m.pattern for m in seen_by_b if m.search(text_of(final))]
                assert not leaked, f"tenant B's owner sees A's {leaked}: {method} {where}"

        # A's viewer writes nothing with the same POST.
        writes = Writes()
        with connection.execute_wrapper(writes):
            response = viewer.post(where, post_data(rows, personas.tenant_a))
        assert response.status_code < 500, where
        assert not writes.statements, f"tenant A's viewer wrote with POST {where}"


def test_the_sweep_reaches_custom_and_site_views():
    """The walk finds URLs added by get_urls overrides and the site's own views."""
    swept = {url.name for url in ADMIN_URLS}
    expected = {
        "view_on_site",
        "switch_tenant",
        "password_change",
        "autocomplete",
        "app_list",
        "admin_password_reset",
        "integrations_haloconnection_test",
        "billing_sync_billingsyncrun_approve",
        "invoicing_invoicepdf_version",
        "payments_paymentsettings_autopay_forecast",
        "reminders_remindersettings_preview",
    }
    assert expected <= swept
    assert any(url.name is None and url.parameters == {"url"} for url in ADMIN_URLS)


def test_an_unknown_parameter_asks_to_teach_the_sweep(personas):
    url = AdminUrl((RoutePattern("admin/widgets/<int:widget_id>/"),), None, "x", None)
    with pytest.raises(pytest.fail.Exception, match=r"Teach it in tests/test_admin_isolation\.py"):
        fillings(url, RowsOfA(personas.tenant_a))
