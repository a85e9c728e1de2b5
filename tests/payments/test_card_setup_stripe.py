"""Replacing the saved card through Stripe: Checkout in setup mode, the new card believed only
from Stripe's API (on the customer's return or on the signed webhook, whichever comes
first), applied once; a customer backing out changes nothing. Stripe's API is never called:
`responses` answers the SDK."""

import json
import re
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import responses
from django.test import Client
from django.utils import timezone

from billing.accounts.links import account_path
from billing.payments.models import CardSetup, ProcessorEvent, SavedPaymentMethod
from tests import factories
from tests.payments.test_stripe import API, SECRET_KEY, deliver, event, stripe_on

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = {
    "id": "cs_setup_1",
    "object": "checkout.session",
    "mode": "setup",
    "status": "open",
    "url": "https://checkout.stripe.com/c/pay/cs_setup_1",
    "customer": "cus_old",
}
COMPLETE = SESSION | {
    "status": "complete",
    "setup_intent": {
        "id": "seti_1",
        "object": "setup_intent",
        "status": "succeeded",
        "customer": "cus_old",
        "payment_method": {
            "id": "pm_new",
            "object": "payment_method",
            "card": {"brand": "mastercard", "last4": "4444"},
        },
    },
}


@pytest.fixture
def customer(personas, tasks_inline):
    stripe_on(personas.tenant_a)
    return factories.customer(
        personas.tenant_a, name="Northwind Traders", billing_email="ap@northwind.example"
    )


@pytest.fixture
def old_card(personas, customer):
    return factories.saved_payment_method(
        personas.tenant_a,
        customer=customer,
        processor="stripe",
        reference="pm_old",
        processor_customer="cus_old",
        last4="1881",
        consented_at=timezone.now() - timedelta(days=90),
    )


@pytest.fixture
def stripe_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(f"{API}/checkout/sessions", json=SESSION)
        mock.post(f"{API}/customers", json={"id": "cus_new", "object": "customer"})
        yield mock


def answer_session(mock, body):
    mock.upsert(responses.GET, re.compile(rf"{API}/checkout/sessions/cs_setup_1.*"), json=body)


def start(client, customer):
    account = client.get(account_path(customer)).content.decode()
    url = re.search(r'href="([^"]+)"[^>]*>(Replace this card|Set up auto-pay)', account)[1]
    page = client.get(url)
    assert "card_number" not in page.context["form"].fields  # Stripe hosts the card form
    data = {
        "attempt": page.context["form"]["attempt"].value(),
        "form_token": page.context["form"]["form_token"].value(),
        "email": "ap@northwind.example",
        "agree": "on",
    }
    return client.post(url, data), url, data


def test_setup_mode_checkout_joins_the_old_cards_stripe_customer(customer, old_card, stripe_api):
    client = Client()
    response, url, data = start(client, customer)

    assert response.status_code == 302
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_setup_1"
    [call] = stripe_api.calls  # no new Stripe customer: the old card's is reused
    sent = parse_qs(call.request.body)
    setup = CardSetup.objects.get()
    assert sent["mode"] == ["setup"] and sent["customer"] == ["cus_old"]
    assert sent["payment_method_types[0]"] == ["card"] and sent["currency"] == ["gbp"]
    assert sent["client_reference_id"] == [setup.public_id]
    assert sent["metadata[kind]"] == ["card_setup"]
    assert sent["success_url"][0].endswith(f"/pay/alpha/-/card/{setup.public_id}")
    assert "/account/" not in sent["success_url"][0]  # the account link stays here
    assert call.request.headers["Idempotency-Key"] == f"setup-{data['attempt']}"
    assert call.request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    # A double click opens no second session.
    assert client.post(url, data)["Location"] == response["Location"]
    assert len(stripe_api.calls) == 1 and CardSetup.objects.count() == 1


def test_a_customer_without_a_stripe_card_gets_a_stripe_customer(customer, stripe_api):
    factories.autopay_rule(customer.tenant)
    factories.invoice(
        customer.tenant, customer=customer, autopay_rule=customer.tenant.autopay_rules.get()
    )
    start(Client(), customer)
    create_customer, create_session = stripe_api.calls
    assert create_customer.request.url == f"{API}/customers"
    assert parse_qs(create_customer.request.body)["email"] == ["ap@northwind.example"]
    assert parse_qs(create_session.request.body)["customer"] == ["cus_new"]


def test_the_return_saves_the_card_from_stripes_api_once(customer, old_card, stripe_api):
    client = Client()
    start(client, customer)
    setup = CardSetup.objects.get()
    answer_session(stripe_api, SESSION)  # not complete yet: the page waits
    waiting = client.get(f"/pay/alpha/-/card/{setup.public_id}").content.decode()
    assert "Saving your card" in waiting and 'http-equiv="refresh"' in waiting
    assert SavedPaymentMethod.objects.get(active=True) == old_card

    answer_session(stripe_api, COMPLETE)
    done = client.get(f"/pay/alpha/-/card/{setup.public_id}").content.decode()
    client.get(f"/pay/alpha/-/card/{setup.public_id}")  # reloaded: nothing more

    assert "Card saved for auto-pay" in done and "Mastercard •••• 4444" in done
    new = SavedPaymentMethod.objects.get(active=True)
    assert (new.reference, new.processor_customer, new.processor) == ("pm_new", "cus_old", "stripe")
    assert SavedPaymentMethod.objects.count() == 2  # the old one, revoked
    assert new.covers_from == old_card.first_covered_day(customer.tenant.tz)


def test_the_signed_webhook_saves_it_when_the_customer_never_returns(
    customer, old_card, stripe_api
):
    client = Client()
    start(client, customer)
    setup = CardSetup.objects.get()
    answer_session(stripe_api, COMPLETE)
    obj = {
        "id": "cs_setup_1",
        "object": "checkout.session",
        "mode": "setup",
        "client_reference_id": setup.public_id,
        "setup_intent": "seti_1",
        "metadata": {"card_setup": setup.public_id, "kind": "card_setup"},
    }
    first = deliver(client, customer.tenant, event("checkout.session.completed", obj, "evt_s1"))
    again = deliver(client, customer.tenant, event("checkout.session.completed", obj, "evt_s2"))

    assert first.status_code == again.status_code == 200
    assert first.json()["result"] == "card setup: checking it with the processor"
    assert again.json()["result"] == "no change: the card setup is already succeeded"
    setup.refresh_from_db()
    assert setup.status == "succeeded" and setup.saved.last4 == "4444"
    assert SavedPaymentMethod.objects.filter(active=True).count() == 1
    record = ProcessorEvent.objects.get(event_id="evt_s1")
    assert record.payment is None and record.state == "applied"


def test_backing_out_of_stripe_changes_nothing(customer, old_card, stripe_api):
    client = Client()
    start(client, customer)
    setup = CardSetup.objects.get()
    stripe_api.post(
        f"{API}/checkout/sessions/cs_setup_1/expire", json=SESSION | {"status": "expired"}
    )
    answer_session(stripe_api, SESSION | {"status": "expired"})

    back = client.get(f"/pay/alpha/-/card/{setup.public_id}?cancelled=1", follow=True)

    assert "Card not saved" in back.content.decode()
    setup.refresh_from_db()
    assert setup.status == "failed"
    assert SavedPaymentMethod.objects.get(active=True) == old_card


def test_a_setup_left_pending_is_finished_by_the_sweep(customer, old_card, stripe_api):
    """No return and no webhook: once past the form's expiry, the stale-payments job asks
    Stripe, which says the card was saved after all."""
    from billing.payments.tasks import close_stale_payments

    client = Client()
    start(client, customer)
    setup = CardSetup.objects.get()
    stripe_api.post(f"{API}/checkout/sessions/cs_setup_1/expire", status=400, json={})
    answer_session(stripe_api, COMPLETE)
    close_stale_payments()
    setup.refresh_from_db()
    assert setup.status == "pending"  # not stale yet

    CardSetup.objects.update(created=timezone.now() - timedelta(hours=2))
    close_stale_payments()

    setup.refresh_from_db()
    assert setup.status == "succeeded" and setup.saved.reference == "pm_new"


def test_the_sweep_leaves_a_setup_pending_while_stripe_cannot_be_asked(
    customer, old_card, stripe_api
):
    """A card the customer did save is never recorded as refused because Stripe was down
    when the sweep asked."""
    from billing.payments.tasks import close_stale_payments

    start(Client(), customer)
    setup = CardSetup.objects.get()
    stripe_api.post(f"{API}/checkout/sessions/cs_setup_1/expire", status=500, json={})
    stripe_api.upsert(
        responses.GET, re.compile(rf"{API}/checkout/sessions/cs_setup_1.*"), status=500, json={}
    )
    CardSetup.objects.update(created=timezone.now() - timedelta(hours=2))
    close_stale_payments()
    setup.refresh_from_db()
    assert setup.status == "pending"
    answer_session(stripe_api, SESSION | {"status": "expired"})  # Stripe answers again
    close_stale_payments()
    setup.refresh_from_db()
    assert setup.status == "failed" and "expired" in setup.failure_message
    assert SavedPaymentMethod.objects.get(active=True) == old_card


def test_a_day_on_the_result_page_no_longer_hands_out_an_account_link(
    customer, old_card, stripe_api
):
    start(Client(), customer)
    setup = CardSetup.objects.get()
    answer_session(stripe_api, SESSION)
    url = f"/pay/alpha/-/card/{setup.public_id}"
    fresh = Client().get(url).content.decode()
    assert re.search(r'href="/account/alpha/[^"]+"', fresh)
    CardSetup.objects.update(created=timezone.now() - timedelta(days=2))
    old = Client().get(url).content.decode()
    assert not re.search(r'href="/account/alpha/[^"/]+"', old)
    assert 'href="/account/alpha/"' in old  # the form that mails a link instead


def test_a_stripe_customer_gone_from_stripe_is_replaced_by_a_new_one(customer, old_card):
    """The tenant moved to another Stripe account: the old card's customer is unknown there.
    The setup goes on with a new Stripe customer instead of saying Stripe is unreachable."""
    missing = {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "customer",
            "message": "No such customer: 'cus_old'",
        }
    }
    with responses.RequestsMock() as mock:
        calls = []

        def session(request):
            sent = parse_qs(request.body)
            calls.append(sent["customer"][0])
            if sent["customer"] == ["cus_old"]:
                return (400, {}, json.dumps(missing))
            return (200, {}, json.dumps(SESSION))

        mock.add_callback(responses.POST, f"{API}/checkout/sessions", callback=session)
        mock.post(f"{API}/customers", json={"id": "cus_new", "object": "customer"})
        response, _, _ = start(Client(), customer)

    assert response.status_code == 302 and response["Location"] == SESSION["url"]
    assert calls == ["cus_old", "cus_new"]
    assert CardSetup.objects.get().status == "pending"
