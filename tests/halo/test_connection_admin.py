"""The Halo connection admin: paste-friendly form, encrypted secret, Test connection."""

import re

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from integrations import connection_test
from integrations.models import HaloConnection
from portal import crypto
from tests import factories
from tests.halo.conftest import make_connection

CHANGELIST = "admin:integrations_haloconnection_changelist"


def change_url(connection):
    return reverse("admin:integrations_haloconnection_change", args=[connection.pk])


def run_url(connection):
    return reverse("admin:integrations_haloconnection_test", args=[connection.pk])


def action(connection):
    return {"action": "test_connection", "_selected_action": [connection.pk]}


def form_data(**overrides):
    return {
        "name": "Acme Halo",
        "active": "on",
        "auth_url": "",
        "resource_url": "",
        "halo_tenant": "acme",
        "client_id": "3f6b2a1c-0000-4b8a-a7c2-5e1d0f9b8c64",
        "new_secret": "",
        "scopes": "all",
        "billing_sync": "on",
        "invoice_sync": "on",
    } | overrides


def assert_secret_absent(html, connection, *secrets):
    for secret in (connection.secret, connection.client_secret_encrypted, *secrets):
        assert secret and secret not in html


def test_add_by_pasting_the_site_derives_urls_and_encrypts_the_secret(personas, sim):
    secret = sim.demo_app.client_secret
    admin = personas.client(personas.owner_a)
    response = admin.post(
        reverse("admin:integrations_haloconnection_add"),
        form_data(auth_url=f"{sim.base_url}/", new_secret=secret),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    connection = HaloConnection.objects.get(tenant=personas.tenant_a)
    assert (connection.auth_url, connection.resource_url) == (sim.auth_url, sim.api_url)
    assert connection.client_secret_encrypted != secret
    assert crypto.decrypt(connection.client_secret_encrypted) == secret
    assert secret not in repr(connection.__dict__)

    page = admin.get(change_url(connection)).content.decode()
    assert "Replace secret" in page
    assert_secret_absent(page, connection)
    assert_secret_absent(admin.get(reverse(CHANGELIST)).content.decode(), connection)

    # Blank keeps the secret (and its ciphertext); a new one replaces it.
    stored = connection.client_secret_encrypted
    data = form_data(auth_url=connection.auth_url, resource_url=connection.resource_url)
    assert admin.post(change_url(connection), data).status_code == 302
    connection.refresh_from_db()
    assert connection.client_secret_encrypted == stored
    assert admin.post(change_url(connection), data | {"new_secret": "new-one"}).status_code == 302
    connection.refresh_from_db()
    assert connection.secret == "new-one"


def test_secret_required_on_add_and_one_active_connection_per_tenant(personas):
    admin = personas.client(personas.owner_a)
    add = reverse("admin:integrations_haloconnection_add")
    page = admin.post(add, form_data(auth_url="acme.halopsa.invalid")).content.decode()
    assert "This field is required" in page
    factories.halo_connection(personas.tenant_a)
    page = admin.post(
        add, form_data(resource_url="acme.halopsa.invalid", new_secret="x")
    ).content.decode()
    assert "already has an active Halo connection" in page
    assert HaloConnection.objects.filter(tenant=personas.tenant_a).count() == 1
    inactive = form_data(auth_url="a.invalid", new_secret="x", active="")
    assert admin.post(add, inactive).status_code == 302


def test_test_connection_all_granted(personas, sim):
    connection = make_connection(sim, personas.tenant_a, payments=True, webhooks=True)
    admin = personas.client(personas.owner_a)
    page = admin.post(reverse(CHANGELIST), action(connection)).content.decode()
    assert "Credentials accepted; 9 permissions verified." in page
    assert page.count("✓ granted") == 9 and "✗" not in page
    assert_secret_absent(page, connection)
    connection.refresh_from_db()
    assert connection.test_status == "ok" and connection.tested_at
    assert "✓ OK" in admin.get(reverse(CHANGELIST)).content.decode()
    home = admin.get(reverse("admin:index")).content.decode()
    assert "Halo connection" in home and "Simulator: working" in home


def test_missing_permissions_are_listed_with_what_to_tick(personas, sim):
    app = sim.control.add_application(
        name="Portal", permissions="read:customers edit:customers read:items"
    )
    connection = make_connection(
        sim, personas.tenant_a, client_id=app["client_id"], secret=app["client_secret"],
        webhooks=True,
    )  # fmt: skip
    result = connection_test.run(connection)
    assert not result.ok
    assert result.missing == [
        "read:softwarelicensing",
        "edit:softwarelicensing",
        "read:contracts",
        "read:invoices",
        "edit:invoices",
        "admin:webhooks",
    ]
    page = personas.client(personas.owner_a).post(run_url(connection)).content.decode()
    assert "Missing permissions: read:softwarelicensing, edit:softwarelicensing" in page
    assert (
        "Configuration &gt; Integrations &gt; HaloPSA API &gt; &lt;application&gt; &gt; "
        "Permissions: "
        "tick &#x27;read:contracts&#x27;; and make sure the application&#x27;s login agent has "
        "the matching permission (Configuration &gt; Teams &amp; Agents &gt; Agents &gt; "
        "&lt;agent&gt; &gt; Permissions)"
    ) in page
    assert page.count("✗ missing") == 6 and page.count("✓ granted") == 3
    assert f"client ID <code>{app['client_id']}</code>" in page


def test_agent_permissions_limit_edit_scopes_reported_with_the_token(personas, sim):
    app = sim.control.add_application(
        permissions="all",
        agent_permissions="read:customers read:items read:softwarelicensing read:contracts "
        "read:invoices edit:invoices",
    )
    connection = make_connection(
        sim, personas.tenant_a, client_id=app["client_id"], secret=app["client_secret"]
    )
    assert connection_test.run(connection).missing == ["edit:customers", "edit:softwarelicensing"]


def test_edit_scopes_unverifiable_without_a_scope_in_the_reply(personas, sim, monkeypatch):
    connection = make_connection(sim, personas.tenant_a, billing_sync=False, payments=True)
    original = connection_test.HaloClient.get_token_info

    def without_scope(self, fresh=True):
        return {k: v for k, v in original(self, fresh).items() if k != "scope"}

    monkeypatch.setattr(connection_test.HaloClient, "get_token_info", without_scope)
    result = connection_test.run(connection)
    assert result.ok
    assert [(c.permission, c.status) for c in result.checks if c.status != "ok"] == [
        ("edit:invoices", "unknown")
    ]
    assert "Not verifiable read-only: edit:invoices." in result.summary


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"secret": "0" * 72},
            "Halo rejected the client ID or secret (invalid_client) (401 on POST /token)",
        ),
        ({"client_id": "not-an-app"}, "Halo rejected the client ID or secret (invalid_client)"),
        ({"halo_tenant": "globex"}, "check the tenant name on the Halo connection"),
        (
            {"auth_url": "http://127.0.0.1:9/auth"},
            "Cannot reach http://127.0.0.1:9/auth/token: connection refused.",
        ),
    ],
)
def test_failed_tests_say_what_to_fix(personas, sim, fields, message):
    connection = make_connection(sim, personas.tenant_a, **fields)
    admin = personas.client(personas.owner_a)
    page = admin.post(run_url(connection)).content.decode()
    assert message in page
    assert '<li class="error">' in page
    assert_secret_absent(page, connection, sim.demo_app.client_secret)
    connection.refresh_from_db()
    assert connection.test_status == "failed" and message in connection.test_summary
    listing = admin.get(reverse(CHANGELIST)).content.decode()
    assert "✗ Failed" in listing
    assert_secret_absent(listing, connection)
    home = admin.get(reverse("admin:index")).content.decode()
    assert 'class="health-error"' in home


def test_debug_error_page_never_shows_secret_or_token(personas, sim, monkeypatch, settings):
    """An unexpected crash after the token arrived: the technical 500 page (DEBUG) shows
    every frame's locals; the secret and the token must not be among them."""
    settings.DEBUG = True
    connection = make_connection(sim, personas.tenant_a)
    seen = {}

    def crash(self, reply):
        seen["token"] = reply["access_token"]
        raise RuntimeError("crash while storing the token")

    monkeypatch.setattr("integrations.halo.tokens.TokenCache.store", crash)
    browser = Client(raise_request_exception=False)
    browser.force_login(personas.owner_a)
    response = browser.post(run_url(connection))
    assert response.status_code == 500
    page = response.content.decode()
    assert "crash while storing the token" in page and "_fetch_token" in page
    assert_secret_absent(page, connection, seen["token"])


def test_debug_error_page_never_shows_a_typed_client_secret(personas, sim, crashing_encryption):
    """A crash while saving (here: encrypting) a pasted secret: neither the POST data nor
    any frame's locals on the technical 500 page (DEBUG) may show it."""
    browser = crashing_encryption(personas.owner_a)
    secret = sim.demo_app.client_secret
    data = form_data(auth_url=sim.auth_url, resource_url=sim.api_url, new_secret=secret)
    response = browser.post(reverse("admin:integrations_haloconnection_add"), data)
    assert response.status_code == 500
    page = response.content.decode()
    assert "crash while encrypting" in page and "set_secret" in page
    assert secret not in page


def test_viewer_cannot_run_test_connection(personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    viewer = personas.client(personas.viewer_a)
    listing = viewer.get(reverse(CHANGELIST)).content.decode()
    assert "test_connection" not in listing
    page = viewer.get(change_url(connection)).content.decode()
    assert run_url(connection) not in page and ">Test connection<" not in page  # no button
    assert viewer.post(run_url(connection)).status_code == 403
    viewer.post(reverse(CHANGELIST), action(connection))
    connection.refresh_from_db()
    assert connection.tested_at is None
    assert sim.control.requests()["total"] == 0


def test_other_tenant_cannot_test_or_see_a_connection(personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    other = personas.client(personas.owner_b)
    assert other.post(run_url(connection)).status_code == 404
    other.post(reverse(CHANGELIST), action(connection))
    connection.refresh_from_db()
    assert connection.tested_at is None


def test_change_page_button_and_get_is_refused(personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    admin = personas.client(personas.owner_a)
    page = admin.get(change_url(connection)).content.decode()
    assert f'action="{run_url(connection)}"' in page
    assert admin.get(run_url(connection)).status_code == 405


def test_health_row_before_setup_and_before_testing(personas):
    admin = personas.client(personas.owner_a)
    assert "Not set up: add your Halo API app" in admin.get(reverse("admin:index")).content.decode()
    factories.halo_connection(personas.tenant_a)
    assert "Not tested yet" in admin.get(reverse("admin:index")).content.decode()


def test_demo_step_is_idempotent_and_connects_to_the_simulator(db, sim):
    from integrations.halo_sim.seed import DEMO_CLIENT_SECRET

    call_command("demo", halo_url=sim.base_url, stdout=open("/dev/null", "w"))  # noqa: SIM115
    connection = HaloConnection.objects.get(tenant__slug="acme", active=True)
    first = (connection.client_secret_encrypted, connection.updated)
    call_command("demo", halo_url=sim.base_url, stdout=open("/dev/null", "w"))  # noqa: SIM115
    connection.refresh_from_db()
    assert (connection.client_secret_encrypted, connection.updated) == first
    assert connection.secret == DEMO_CLIENT_SECRET
    assert HaloConnection.objects.filter(tenant__slug="acme").count() == 1
    assert connection_test.run(connection).ok


def test_form_says_where_in_halo_and_gives_the_urls_the_full_width(personas):
    """Issue 15: the help read "HaloPSA API > (authentication method…" (the application's
    placeholder was taken for an HTML tag) and long URLs were cut off in narrow boxes."""
    admin = personas.client(personas.owner_a)
    html = admin.get(reverse("admin:integrations_haloconnection_add")).content.decode()
    assert (
        "Configuration &gt; Integrations &gt; HaloPSA API &gt; View Applications &gt; your "
        "application (authentication method: Client ID and Secret (Services))"
    ) in html
    for name in ("auth_url", "resource_url"):
        [tag] = re.findall(rf'<input[^>]*name="{name}"[^>]*>', html)
        assert 'class="vTextField url-input"' in tag, tag
    assert ".url-input" in html  # its style: the width of the form
    [client_id] = re.findall(r'<input[^>]*name="client_id"[^>]*>', html)
    assert 'class="vTextField guid-input"' in client_id  # a whole GUID shows
