"""Replacing the saved card (or setting up auto-pay) from the account page without paying:
the test processor checks the card, the new card replaces the old one for auto-pay and
keeps the old consent's cover, a refused card changes nothing, and the form is authorised
without cookies like the account page's other forms. Stripe: test_card_setup_stripe.py."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.accounts import links
from billing.payments import autopay
from billing.payments.models import CardSetup, SavedPaymentMethod
from tests import factories
from tests.accounts.conftest import account_url, invoice

pytestmark = pytest.mark.django_db

GOOD, DECLINED = "4242 4242 4242 4242", "4000 0000 0000 0002"


@pytest.fixture
def customer(personas):
    return factories.customer(
        personas.tenant_a, name="Northwind Traders", billing_email="ap@northwind.example"
    )


@pytest.fixture
def rule(personas):
    return factories.autopay_rule(personas.tenant_a, subtype_name="Managed Services")


@pytest.fixture
def old_card(personas, customer):
    return factories.saved_payment_method(
        personas.tenant_a,
        customer=customer,
        last4="1881",
        consented_at=timezone.now() - timedelta(days=90),
    )


def link(body, text):
    found = re.search(rf'href="([^"]+)"[^>]*>{text}', body)
    assert found, f"no link {text!r}"
    return found[1]


def form_of(body, card=GOOD, agree=True, **extra):
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)"[^>]* value="([^"]*)"', body))
    fields |= {"card_name": "A. Payer", "card_number": card, "card_expiry": "04/39"}
    fields |= {"card_cvc": "123", "email": "ap@northwind.example"}
    if agree:
        fields["agree"] = "on"
    return fields | extra


def open_form(client, customer):
    account = client.get(account_url(customer)).content.decode()
    url = link(account, "Replace this card") if "Replace this card" in account else None
    url = url or link(account, "Set up auto-pay")
    page = client.get(url)
    assert page.status_code == 200
    return url, page.content.decode()


def test_a_new_card_replaces_the_old_one_and_keeps_its_cover(personas, customer, rule, old_card):
    tenant = personas.tenant_a
    today = timezone.localdate(timezone=tenant.tz)
    # Dated after the old consent, before today: the old card covered it, so must the new.
    due = invoice(tenant, customer, days_overdue=0, autopay_rule=rule)
    client = Client(enforce_csrf_checks=True)  # no CSRF cookie: the form does not need one
    url, body = open_form(client, customer)
    assert "Auto-pay now charges" in body and "1881" in body
    assert "(when auto-pay was first agreed)" in body  # the consent text names the cover

    response = client.post(url, form_of(body))

    assert response.status_code == 302
    result = client.get(response["Location"]).content.decode()
    assert "Card saved for auto-pay" in result and "Visa •••• 4242" in result
    new = SavedPaymentMethod.objects.get(customer=customer, active=True)
    old_card.refresh_from_db()
    assert (new.last4, old_card.active, old_card.revoked is not None) == ("4242", False, True)
    assert new.source_setup.status == CardSetup.Status.SUCCEEDED
    assert new.covers_from == old_card.first_covered_day(tenant.tz)
    assert new.consent_email == "ap@northwind.example" and "when auto-pay was first agreed" in (
        new.consent_text
    )
    [plan] = autopay.plan(tenant, today)
    assert (plan.invoice, plan.charges, plan.method) == (due, True, new)
    # The account page shows the new card, with "Replace" again.
    account = client.get(account_url(customer)).content.decode()
    assert "Visa •••• 4242" in account and "1881" not in account.split('id="autopay"')[1]


def test_setting_up_auto_pay_without_a_card_covers_invoices_from_today(personas, customer, rule):
    tenant = personas.tenant_a
    older = invoice(tenant, customer, days_overdue=0, autopay_rule=rule)  # dated 30 days ago
    client = Client()
    url, body = open_form(client, customer)
    assert "Set up auto-pay" in body and "dated from today (not earlier ones)" in body

    client.post(url, form_of(body))

    card = SavedPaymentMethod.objects.get(customer=customer, active=True)
    assert card.covers_from is None
    [plan] = autopay.plan(tenant, timezone.localdate(timezone=tenant.tz))
    assert plan.invoice == older and not plan.charges and "Dated before" in plan.skip


def test_a_declined_card_changes_nothing_and_says_why(personas, customer, rule, old_card):
    client = Client()
    url, body = open_form(client, customer)

    response = client.post(url, form_of(body, card=DECLINED))

    assert response.status_code == 400
    assert "Your card was declined" in response.content.decode()
    assert SavedPaymentMethod.objects.get(customer=customer, active=True) == old_card
    assert CardSetup.objects.get().status == CardSetup.Status.FAILED
    # The page offers a fresh attempt: trying again with a good card saves it.
    again = client.post(url, form_of(response.content.decode()))
    assert again.status_code == 302
    assert SavedPaymentMethod.objects.get(customer=customer, active=True).last4 == "4242"


def test_consent_must_be_ticked(personas, customer, old_card):
    client = Client()
    url, body = open_form(client, customer)
    response = client.post(url, form_of(body, agree=False))
    assert response.status_code == 400
    assert "Tick the box to agree" in response.content.decode()
    assert not CardSetup.objects.exists()


def test_a_double_submit_saves_one_card(personas, customer, old_card):
    client = Client()
    url, body = open_form(client, customer)
    form = form_of(body)
    first, second = client.post(url, form), client.post(url, form)
    assert first["Location"] == second["Location"]
    assert CardSetup.objects.count() == 1
    assert SavedPaymentMethod.objects.filter(customer=customer, active=True).count() == 1


def test_refused_without_the_pages_own_form(personas, customer, old_card):
    client = Client()
    url, body = open_form(client, customer)
    cross_site = client.post(url, form_of(body), HTTP_ORIGIN="https://evil.example")
    assert cross_site.status_code == 403
    forged = client.post(url, form_of(body, form_token="forged"))
    assert forged.status_code == 400 and "This form has expired" in forged.content.decode()
    token = url.split("/account/")[1].split("/")[0]
    other_form = links.form_token(token, "pay_several")  # the same link's pay-several form
    assert client.post(url, form_of(body, form_token=other_form)).status_code == 400
    other = factories.customer(personas.tenant_a, name="Other Ltd")
    elsewhere = reverse(
        "payments:replace_card", args=["alpha", account_url(other).rstrip("/").split("/")[-1]]
    )
    stolen = client.post(elsewhere, form_of(body))  # a form token of another account
    assert stolen.status_code == 400
    assert not CardSetup.objects.exists()
    assert SavedPaymentMethod.objects.get(customer=customer, active=True) == old_card


def test_other_tenants_cannot_reach_the_form_or_the_result(personas, customer, old_card):
    client = Client()
    url, body = open_form(client, customer)
    client.post(url, form_of(body))
    setup = CardSetup.objects.get()
    token = url.split("/account/")[1].split("/")[0]
    assert client.get(f"/pay/beta/-/account/{token}/card").status_code == 404
    assert client.get(f"/pay/beta/-/card/{setup.public_id}").status_code == 404
    assert client.get("/pay/alpha/-/card/not-a-setup").status_code == 404
    assert client.get(f"/pay/alpha/-/card/{setup.public_id}").status_code == 200


def test_through_a_real_wsgi_server(validated_server, personas, customer, old_card):
    import requests

    session = requests.Session()
    account = session.get(validated_server + account_url(customer), timeout=10).text
    url = validated_server + link(account, "Replace this card")
    page = session.get(url, timeout=10)
    assert page.status_code == 200 and "frame-ancestors" in page.headers["Content-Security-Policy"]
    response = session.post(url, data=form_of(page.text), timeout=10, allow_redirects=False)
    assert response.status_code == 302
    result = session.get(validated_server + response.headers["Location"], timeout=10)
    assert "Card saved for auto-pay" in result.text
    assert SavedPaymentMethod.objects.get(customer=customer, active=True).last4 == "4242"


def test_the_customer_is_told_their_card_changed(
    personas, customer, old_card, mailoutbox, requests_commit
):
    """Whoever agreed and the billing contact: a card saved by someone else with a
    forwarded link does not go unnoticed."""
    client = Client()
    url, body = open_form(client, customer)
    client.post(url, form_of(body, email="dana@northwind.example"))
    [mail] = mailoutbox
    assert sorted(mail.to) == ["ap@northwind.example", "dana@northwind.example"]
    assert mail.subject.startswith("Your card for auto-pay was saved")
    assert "Visa ending 4242" in mail.body and "If you did not do this" in mail.body
    assert "https://portal.example.com/account/alpha/" in mail.body
    html = mail.alternatives[0][0]
    assert "Visa •••• 4242" in html and "Open your account page" in html
    client.post(url, form_of(client.get(url).content.decode(), card=DECLINED))
    assert len(mailoutbox) == 1  # a refused card changed nothing: nothing to tell


def test_the_account_page_says_when_auto_pay_could_not_charge_the_card(
    personas, customer, rule, old_card
):
    tenant = personas.tenant_a
    due = invoice(tenant, customer, days_overdue=0, autopay_rule=rule)
    factories.payment(
        tenant,
        invoice=due,
        kind="autopay",
        status="failed",
        failure_message="Your card has insufficient funds.",
    )
    client = Client()
    section = client.get(account_url(customer)).content.decode().split('id="autopay"')[1]
    assert "Auto-pay could not charge this card" in section
    assert "Your card has insufficient funds." in section
    # Replaced since: the failure was the old card's.
    url, body = open_form(client, customer)
    client.post(url, form_of(body))
    section = client.get(account_url(customer)).content.decode().split('id="autopay"')[1]
    assert "Auto-pay could not charge" not in section
