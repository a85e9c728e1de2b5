"""Payment settings in the admin: the link to paste into Halo, Stripe keys stored encrypted,
and the admin home's health rows."""

import secrets

import pytest
from django.urls import reverse

from billing.models import InvoiceNumberField
from billing.payments.models import PaymentSettings
from tests import factories

FORM = {
    "processor": "test",
    "pdf_fallback": "on",
    "autopay_hour": 9,
    "autopay_charge_on": "invoice_date",
    "autopay_retry_days": 3,
    "autopay_max_attempts": 3,
    "link_check": "off",
}


@pytest.mark.parametrize(
    ("number_field", "variable"),
    [
        (InvoiceNumberField.HALO_ID, "$INVOICEID"),
        (InvoiceNumberField.THIRD_PARTY, "$THIRDPARTYINVOICENUMBER"),
    ],
)
def test_settings_show_the_exact_link_for_halos_email(personas, settings, number_field, variable):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    factories.invoice_sync_settings(personas.tenant_a, number_field=number_field)
    row = PaymentSettings.for_tenant(personas.tenant_a)
    page = personas.client(personas.owner_a).get(
        reverse("admin:payments_paymentsettings_change", args=[row.pk])
    )
    expected = f"https://portal.example.com/pay/{personas.tenant_a.slug}/{variable}"
    assert expected in page.content.decode()


def test_stripe_keys_are_stored_encrypted_and_never_shown(personas):
    staff = personas.client(personas.owner_a)
    add = reverse("admin:payments_paymentsettings_add")
    missing = staff.post(add, FORM | {"processor": "stripe"})
    assert missing.status_code == 200
    assert "Stripe needs its secret key" in missing.content.decode()

    keys = {"stripe_secret_key": "sk_live_abc123", "stripe_webhook_secret": "whsec_xyz789"}
    assert staff.post(add, FORM | {"processor": "stripe"} | keys).status_code == 302

    row = PaymentSettings.objects.get(tenant=personas.tenant_a)
    assert row.stripe_secret_key == "sk_live_abc123"
    assert row.stripe_webhook_secret == "whsec_xyz789"
    assert "abc123" not in row.stripe_secret_key_encrypted
    change = staff.get(reverse("admin:payments_paymentsettings_change", args=[row.pk]))
    body = change.content.decode()
    assert "abc123" not in body and "xyz789" not in body and "✓ Live" in body
    assert f"/pay/{personas.tenant_a.slug}/-/stripe/webhook" in body
    # Saving without retyping keeps them.
    staff.post(
        reverse("admin:payments_paymentsettings_change", args=[row.pk]),
        FORM | {"processor": "stripe"},
    )
    row.refresh_from_db()
    assert row.stripe_secret_key == "sk_live_abc123"


def test_wrong_looking_keys_are_refused(personas):
    staff = personas.client(personas.owner_a)
    keys = {"stripe_secret_key": "pk_live_abc", "stripe_webhook_secret": "secret"}
    page = staff.post(reverse("admin:payments_paymentsettings_add"), FORM | keys)
    body = page.content.decode()
    assert "starts with sk_ or rk_" in body and "starts with whsec_" in body


def test_admin_home_shows_payments_health(personas, settings):
    settings.PAYMENTS_TEST_PROCESSOR = True
    PaymentSettings.for_tenant(personas.tenant_a)
    factories.halo_outbox(personas.tenant_a, status="failed", last_error="Halo said no")
    home = personas.client(personas.owner_a).get(reverse("admin:index")).content.decode()
    assert "Test processor: no real money" in home
    assert "1 failed: open the Halo outbox" in home


def test_debug_error_page_never_shows_typed_stripe_keys(personas, crashing_encryption):
    """A crash while saving (here: encrypting) the keys shows every frame's locals and
    the POST data on the technical 500 page (DEBUG); the keys must not be among them."""
    browser = crashing_encryption(personas.owner_a)
    # Made here, so the page's source excerpts cannot contain them.
    key, signing = f"sk_live_{secrets.token_hex(8)}", f"whsec_{secrets.token_hex(8)}"
    keys = {"stripe_secret_key": key, "stripe_webhook_secret": signing}
    add = reverse("admin:payments_paymentsettings_add")
    response = browser.post(add, FORM | {"processor": "stripe"} | keys)
    assert response.status_code == 500
    page = response.content.decode()
    assert "crash while encrypting" in page and "set_stripe_secrets" in page
    assert key[8:] not in page and signing[6:] not in page
