"""`/pay/<tenant code>/<ref>`: resolution for both number settings, and every way a link can
be wrong; pay pages at unguessable URLs, isolated per tenant."""

import pytest
from django.urls import reverse

from billing.models import InvoiceNumberField
from billing.payments.models import PayPage
from tests import factories
from tests.payments.conftest import open_invoice, pay_url, settings_for


def link(tenant, ref):
    return reverse("payments:link", args=[tenant.slug, ref])


@pytest.mark.parametrize(
    ("number_field", "ref_of"),
    [
        (InvoiceNumberField.HALO_ID, lambda invoice: str(invoice.halo_id)),
        (InvoiceNumberField.THIRD_PARTY, lambda invoice: invoice.third_party_number),
    ],
    ids=["halo-id", "third-party-number"],
)
def test_link_redirects_to_the_invoices_pay_page(client, tenant, number_field, ref_of):
    factories.invoice_sync_settings(tenant, number_field=number_field)
    invoice = open_invoice(tenant)
    other = open_invoice(tenant)

    response = client.get(link(tenant, ref_of(invoice)))

    page = PayPage.objects.get(invoice=invoice)
    assert response.status_code == 302
    assert response["Location"] == f"/pay/{tenant.slug}/invoice/{page.token}"
    assert len(page.token) >= 32  # 24 random bytes, base64: 192 bits
    # The other setting's reference is not a reference.
    wrong = other.third_party_number if number_field == "halo_id" else str(other.halo_id)
    assert client.get(link(tenant, wrong)).status_code == 404
    # The same page on every visit, and it shows the invoice by the tenant's number.
    assert client.get(link(tenant, ref_of(invoice)))["Location"] == response["Location"]
    body = client.get(response["Location"]).content.decode()
    assert f"Invoice {ref_of(invoice)}" in body


def test_third_party_numbers_with_slashes_resolve(client, tenant):
    factories.invoice_sync_settings(tenant, number_field=InvoiceNumberField.THIRD_PARTY)
    invoice = open_invoice(tenant, third_party_number="INV/2026/0042")
    response = client.get(link(tenant, "INV/2026/0042"))
    assert response["Location"] == pay_url(invoice)


def test_unknown_invoice_shows_a_friendly_page_that_leaks_nothing(client, tenant):
    open_invoice(tenant, halo_id=500)
    unknown = client.get(link(tenant, "501"))
    assert unknown.status_code == 404
    body = unknown.content.decode()
    assert "We can't find this invoice" in body and tenant.support_email in body
    # An unknown tenant gets the same message, unbranded.
    nobody = client.get("/pay/no-such-partner/501")
    assert nobody.status_code == 404 and "We can't find this invoice" in nobody.content.decode()
    assert tenant.name not in nobody.content.decode()
    assert not PayPage.objects.exists()


def test_paid_invoice_shows_paid_and_its_receipt(client, tenant):
    invoice = open_invoice(tenant, amount_due=0, amount_paid=120, payment_status="paid")
    receipt = factories.payment(tenant, invoice=invoice, amount=120, status="succeeded")
    page = client.get(client.get(link(tenant, invoice.halo_id))["Location"])
    body = page.content.decode()
    assert "This invoice is paid in full" in body
    assert receipt.get_absolute_url() in body
    assert 'type="submit"' not in body


def test_voided_invoice_shows_its_status_and_no_pay_button(client, tenant):
    invoice = open_invoice(tenant, voided=True)
    body = client.get(client.get(link(tenant, invoice.halo_id))["Location"]).content.decode()
    assert "voided" in body and 'type="submit"' not in body


def test_deleted_invoice_is_unknown(client, tenant):
    invoice = open_invoice(tenant, deleted_in_halo=True)
    assert client.get(link(tenant, invoice.halo_id)).status_code == 404


@pytest.mark.parametrize("variable", ["$INVOICEID", "$THIRDPARTYINVOICENUMBER", "%24INVOICEID"])
def test_unsubstituted_variable_tells_the_partner_what_to_fix(client, tenant, variable):
    response = client.get(f"/pay/{tenant.slug}/{variable}")
    assert response.status_code == 404
    body = response.content.decode()
    assert "This payment link is incomplete" in body
    assert "$INVOICEID" in body  # what the link contains, and what it should read
    assert f"https://portal.example.com/pay/{tenant.slug}/$INVOICEID" in body


def test_two_open_invoices_sharing_a_number_are_not_guessed_between(client, tenant):
    factories.invoice_sync_settings(tenant, number_field=InvoiceNumberField.THIRD_PARTY)
    open_invoice(tenant, third_party_number="INV-7")
    open_invoice(tenant, third_party_number="INV-7")
    assert client.get(link(tenant, "INV-7")).status_code == 404


@pytest.mark.parametrize(
    "ref", ["//evil.example.com", "https://evil.example.com", "1?next=https://evil.example.com"]
)
def test_no_open_redirects(client, tenant, ref):
    open_invoice(tenant, halo_id=1)
    response = client.get(f"/pay/{tenant.slug}/{ref}")
    location = response.get("Location", "")
    assert not location or location.startswith(f"/pay/{tenant.slug}/invoice/")


def test_pages_are_isolated_per_tenant(client, tenant):
    other = factories.tenant("bravo")
    invoice = open_invoice(tenant)
    payment = factories.payment(tenant, invoice=invoice, status="succeeded")
    token = PayPage.for_invoice(invoice).token
    assert client.get(f"/pay/{tenant.slug}/invoice/{token}").status_code == 200
    assert client.get(f"/pay/{other.slug}/invoice/{token}").status_code == 404
    assert client.get(f"/pay/{tenant.slug}/payment/{payment.public_id}").status_code == 200
    assert client.get(f"/pay/{other.slug}/payment/{payment.public_id}").status_code == 404
    # Tenant B's link never finds tenant A's invoice, whatever the number.
    assert client.get(link(other, invoice.halo_id)).status_code == 404
    other_token = token[:-1] + ("y" if token.endswith("x") else "x")
    assert client.get(f"/pay/{tenant.slug}/invoice/{other_token}").status_code == 404


def test_pages_carry_security_headers(client, tenant):
    invoice = open_invoice(tenant)
    for response in (client.get(link(tenant, invoice.halo_id)), client.get(pay_url(invoice))):
        assert response["Cache-Control"] == "no-store"
        assert response["Referrer-Policy"] == "same-origin"
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
        assert response["X-Frame-Options"] == "DENY"


def test_link_lookups_are_throttled_per_client(client, tenant, settings):
    settings.PAYMENTS_LINK_RATE = "3/min"
    invoice = open_invoice(tenant)
    answers = [client.get(link(tenant, invoice.halo_id)).status_code for _ in range(4)]
    assert answers == [302, 302, 302, 429]
    assert "Too many attempts" in client.get(link(tenant, 999)).content.decode()
    # A forged X-Forwarded-For does not buy more lookups...
    forged = client.get(link(tenant, invoice.halo_id), HTTP_X_FORWARDED_FOR="10.9.8.7")
    assert forged.status_code == 429
    # ...but behind a trusted proxy, each client counts on its own.
    settings.PAYMENTS_PROXIES = 1
    behind = client.get(link(tenant, invoice.halo_id), HTTP_X_FORWARDED_FOR="6.6.6.6, 10.0.0.2")
    assert behind.status_code == 302


def test_unknown_invoice_takes_a_payment_only_when_the_tenant_allows(client, tenant):
    assert client.get(link(tenant, "777")).status_code == 404
    settings_for(tenant, pay_unknown_invoices=True)
    form = client.get(link(tenant, "777"))
    assert form.status_code == 200 and "Pay invoice 777" in form.content.decode()
