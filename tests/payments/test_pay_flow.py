"""The pay page with the test processor: success, decline, insufficient funds; the amount
is the server's; a payment is taken and recorded exactly once however the browser behaves."""

from decimal import Decimal

import pytest
from django.db import IntegrityError

from billing.payments import checkout
from billing.payments.models import HaloOutbox, Payment, PaymentSettings
from tests import factories
from tests.payments.conftest import (
    DECLINE,
    INSUFFICIENT_FUNDS,
    SUCCESS,
    card_form,
    open_invoice,
    pay_url,
    settings_for,
)

# Receipts and Halo writes go out after commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def pay(client, invoice, number=SUCCESS, **extra):
    page = client.get(pay_url(invoice))
    return client.post(pay_url(invoice), card_form(page, number, **extra))


def test_success_card_pays_and_shows_a_receipt_and_emails_one(client, tenant, mailoutbox):
    invoice = open_invoice(tenant, amount="240.00")

    response = pay(client, invoice)

    payment = Payment.objects.get()
    assert response.status_code == 302 and response["Location"] == payment.get_absolute_url()
    assert (payment.status, payment.amount, payment.currency) == ("succeeded", Decimal(240), "GBP")
    assert (payment.card_brand, payment.card_last4) == ("Visa", "4242")
    assert payment.reference.startswith("test_ch_")
    moves = list(payment.events.values_list("from_status", "to_status"))
    assert moves == [("created", "pending"), ("pending", "succeeded")]
    receipt = client.get(response["Location"]).content.decode()
    assert "Payment received" in receipt and "£240.00" in receipt and "•••• 4242" in receipt
    [mail] = mailoutbox
    assert mail.to == ["payer@example.com"] and "£240.00" in mail.body
    assert mail.reply_to == [tenant.support_email]
    assert payment.get_absolute_url() in mail.body
    # Owed to Halo until the outbox lands; the pay page no longer offers to pay.
    assert HaloOutbox.objects.get(payment=payment).status == "pending"
    again = client.get(pay_url(invoice)).content.decode()
    assert "This invoice is paid in full" in again and 'type="submit"' not in again


@pytest.mark.parametrize(
    ("number", "code", "message"),
    [
        (DECLINE, "card_declined", "Your card was declined"),
        (INSUFFICIENT_FUNDS, "insufficient_funds", "insufficient funds"),
    ],
)
def test_declined_card_shows_why_and_a_retry(client, tenant, mailoutbox, number, code, message):
    invoice = open_invoice(tenant)

    response = pay(client, invoice, number)

    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("failed", code)
    assert response["Location"] == f"{pay_url(invoice)}?failed={payment.public_id}#payment-failed"
    page = client.get(response["Location"])
    body = page.content.decode()
    assert message in body and "Nothing was charged" in body and 'role="alert"' in body
    assert 'type="submit"' in body  # the retry
    assert not mailoutbox and not HaloOutbox.objects.exists()
    # Retrying with a good card works: a new form render, a new attempt.
    assert client.post(pay_url(invoice), card_form(page)).status_code == 302
    assert Payment.objects.filter(status="succeeded").count() == 1


def test_invalid_card_details_are_form_errors(client, tenant):
    invoice = open_invoice(tenant)
    page = client.get(pay_url(invoice))
    data = card_form(page, "4242 4242 4242 4241", card_expiry="01/20", card_cvc="1")
    response = client.post(pay_url(invoice), data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"card_number", "card_expiry", "card_cvc"}
    assert 'aria-invalid="true"' in response.content.decode()
    assert not Payment.objects.exists()


def test_an_email_longer_than_its_column_is_a_form_error(client, tenant):
    """A form's EmailField takes up to 320 characters, the column 254: on PostgreSQL the
    longer one was a 500 inside the payment's transaction."""
    invoice = open_invoice(tenant)
    long = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".example"  # 318 characters, valid
    response = pay(client, invoice, email=long)
    assert response.status_code == 400 and "email" in response.context["form"].errors
    assert not Payment.objects.exists()


def test_posted_amount_is_ignored_unless_partial_payments_are_on(client, tenant):
    invoice = open_invoice(tenant, amount="300.00")
    pay(client, invoice, amount="1.00", currency="USD")
    assert Payment.objects.get().amount == Decimal("300.00")


def test_partial_payment_within_the_amount_due(client, tenant):
    settings_for(tenant, allow_partial=True)
    invoice = open_invoice(tenant, amount="300.00")
    too_much = pay(client, invoice, amount="300.01")
    assert too_much.status_code == 400
    assert "cannot pay more than the amount due" in too_much.content.decode()
    assert not Payment.objects.exists()

    pay(client, invoice, amount="100.00")
    assert Payment.objects.get().amount == Decimal("100.00")
    page = client.get(pay_url(invoice))
    assert "£200.00" in page.content.decode()  # what is left, before Halo has recorded it
    assert page.context["form"]["amount"].initial == Decimal("200.00")


def test_double_submit_charges_and_records_once(client, tenant, mailoutbox):
    invoice = open_invoice(tenant)
    page = client.get(pay_url(invoice))
    data = card_form(page)
    first = client.post(pay_url(invoice), data)
    second = client.post(pay_url(invoice), data)  # the same form, submitted again
    assert first["Location"] == second["Location"]
    assert Payment.objects.count() == 1 and HaloOutbox.objects.count() == 1
    assert len(mailoutbox) == 1


def test_second_tab_cannot_pay_again(client, tenant):
    invoice = open_invoice(tenant)
    tab_one, tab_two = client.get(pay_url(invoice)), client.get(pay_url(invoice))
    client.post(pay_url(invoice), card_form(tab_one))
    response = client.post(pay_url(invoice), card_form(tab_two))
    assert response.status_code == 400
    assert "This invoice is paid in full" in response.content.decode()
    assert Payment.objects.count() == 1


def test_payment_in_flight_shows_instead_of_a_pay_button(client, tenant):
    invoice = open_invoice(tenant)
    in_flight = factories.payment(tenant, invoice=invoice, status="pending")
    body = client.get(pay_url(invoice)).content.decode()
    assert "A payment for this invoice is being processed" in body
    assert 'type="submit"' not in body and in_flight.get_absolute_url() in body
    with pytest.raises(checkout.CannotPay, match="already in progress"):
        checkout.pay(tenant, invoice, key="another-tab", card=None)


def test_database_allows_one_payment_in_flight_per_invoice(tenant):
    invoice = open_invoice(tenant)
    factories.payment(tenant, invoice=invoice, status="pending")
    with pytest.raises(IntegrityError):
        factories.payment(tenant, invoice=invoice, status="created")


def test_status_moves_only_forward(tenant):
    payment = factories.payment(tenant, invoice=open_invoice(tenant), status="pending")
    assert payment.move("succeeded", source="webhook", reference="ch_1")
    assert not payment.move("pending", source="webhook")
    assert not payment.move("failed", source="webhook", failure_code="late")
    assert not payment.move("succeeded", source="webhook")
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code, payment.events.count()) == ("succeeded", "", 1)


def test_form_needs_csrf(browser_client, tenant):
    invoice = open_invoice(tenant)
    page = browser_client.get(pay_url(invoice))
    data = card_form(page)
    assert browser_client.post(pay_url(invoice), data).status_code == 403
    data["csrfmiddlewaretoken"] = page.context["csrf_token"]
    assert browser_client.post(pay_url(invoice), data).status_code == 302


def test_test_processor_is_refused_where_it_is_switched_off(client, tenant, settings):
    settings.PAYMENTS_TEST_PROCESSOR = False
    invoice = open_invoice(tenant)
    body = client.get(pay_url(invoice)).content.decode()
    assert "Online payment is not available" in body and 'type="submit"' not in body
    with pytest.raises(checkout.CannotPay):
        checkout.pay(tenant, invoice, key="k", card=None)


def test_consent_saves_the_card_for_autopay_invoices_only(client, tenant):
    plain = open_invoice(tenant)
    assert "save_method" not in client.get(pay_url(plain)).context["form"].fields
    flagged = open_invoice(tenant, autopay_rule=factories.autopay_rule(tenant))
    page = client.get(pay_url(flagged))
    consent = page.context["form"].consent
    assert tenant.support_email in consent and "auto-pay" in consent
    client.post(pay_url(flagged), card_form(page, save_method="on"))
    method = flagged.customer.saved_payment_methods.get()
    assert (method.last4, method.consent_text, method.active) == ("4242", consent, True)
    assert method.consent_email == "payer@example.com"


def test_no_consent_no_saved_card(client, tenant):
    flagged = open_invoice(tenant, autopay_rule=factories.autopay_rule(tenant))
    pay(client, flagged)
    assert not flagged.customer.saved_payment_methods.exists()


def test_unknown_invoice_payment_is_kept_for_matching(client, tenant):
    settings_for(tenant, pay_unknown_invoices=True)
    form = client.get(f"/pay/{tenant.slug}/INV-NEW-1")
    data = card_form(form, amount="55.50", ref="INV-NEW-1")
    response = client.post(f"/pay/{tenant.slug}/-/pay", data)
    payment = Payment.objects.get()
    assert response["Location"] == payment.get_absolute_url()
    assert (payment.invoice, payment.invoice_ref, payment.amount) == (None, "INV-NEW-1", 55.5)
    assert payment.kind == "unlisted" and HaloOutbox.objects.filter(payment=payment).exists()


def test_unknown_invoice_form_is_refused_when_not_allowed(client, tenant):
    PaymentSettings.for_tenant(tenant)
    data = {"attempt": "x", "ref": "1", "amount": "5", "email": "a@b.example"}
    assert client.post(f"/pay/{tenant.slug}/-/pay", data).status_code == 404


def test_unknown_invoice_decline_offers_a_retry(client, tenant):
    settings_for(tenant, pay_unknown_invoices=True)
    form = client.get(f"/pay/{tenant.slug}/INV-NEW-2")
    data = card_form(form, DECLINE, amount="10.00", ref="INV-NEW-2")
    response = client.post(f"/pay/{tenant.slug}/-/pay", data, follow=True)
    body = response.content.decode()
    assert "Your card was declined" in body
    assert f'href="/pay/{tenant.slug}/INV-NEW-2"' in body


def test_unknown_invoice_form_defers_to_the_invoice_once_it_is_known(client, tenant):
    settings_for(tenant, pay_unknown_invoices=True)
    form = client.get(f"/pay/{tenant.slug}/4711")
    invoice = open_invoice(tenant, halo_id=4711)  # invoice sync brought it meanwhile
    data = card_form(form, amount="1.00", ref="4711")
    response = client.post(f"/pay/{tenant.slug}/-/pay", data)
    assert response["Location"] == pay_url(invoice)
    assert not Payment.objects.exists()
