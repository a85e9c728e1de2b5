"""Stripe: Checkout Sessions created once (idempotency keys), completion believed only from a
webhook signed with the tenant's secret, repeats and reordering harmless. Stripe's API is
never called: `responses` answers the SDK's HTTP requests; events are signed with the SDK's
own `WebhookSignature.generate_signature_header`."""

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
import responses
import stripe
from django.urls import reverse
from django.utils import timezone

from billing.payments import autopay, tasks
from billing.payments.models import HaloOutbox, Payment, PaymentSettings, ProcessorEvent
from tests import factories
from tests.payments.conftest import open_invoice, pay_url

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_KEY = "sk_test_51Portal"
SIGNING_SECRET = "whsec_portal_test_secret"
API = "https://api.stripe.com/v1"
PAYMENT_INTENT = {
    "id": "pi_test_1",
    "object": "payment_intent",
    "latest_charge": {
        "id": "ch_1",
        "object": "charge",
        "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
    },
}


def stripe_on(tenant):
    """The tenant taking payments through Stripe with the test keys."""
    settings = PaymentSettings.for_tenant(tenant)
    settings.processor = PaymentSettings.Processor.STRIPE
    settings.set_stripe_secrets(SECRET_KEY, SIGNING_SECRET)
    settings.save()
    return tenant


@pytest.fixture
def stripe_tenant(tenant):
    return stripe_on(tenant)


@pytest.fixture
def stripe_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(
            f"{API}/checkout/sessions",
            json={
                "id": "cs_test_1",
                "object": "checkout.session",
                "status": "open",
                "url": "https://checkout.stripe.com/c/pay/cs_test_1",
            },
        )
        mock.get(f"{API}/payment_intents/pi_test_1", json=PAYMENT_INTENT)
        yield mock


def start_checkout(client, invoice):
    page = client.get(pay_url(invoice))
    assert "card_number" not in page.context["form"].fields  # Stripe hosts the card form
    data = {"attempt": page.context["form"]["attempt"].value(), "email": "payer@example.com"}
    return client.post(pay_url(invoice), data), data


def event(kind, obj, event_id="evt_1"):
    return {"id": event_id, "object": "event", "type": kind, "data": {"object": obj}}


def completed(payment, event_id="evt_1", **extra):
    session = {
        "id": payment.checkout_session,
        "object": "checkout.session",
        "client_reference_id": payment.public_id,
        "payment_intent": "pi_test_1",
        "payment_status": "paid",
        "amount_total": 12000,
        "currency": "gbp",
        "metadata": {"payment": payment.public_id},
    }
    return event("checkout.session.completed", session | extra, event_id)


def refunded(amount, amount_refunded, event_id):
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_test_1",
        "amount": amount,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= amount,
    }
    return event("charge.refunded", charge, event_id)


def deliver(client, tenant, payload, secret=SIGNING_SECRET, timestamp=None):
    body = json.dumps(payload)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return client.post(
        f"/pay/{tenant.slug}/-/stripe/webhook",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )


def test_checkout_session_is_created_with_the_servers_amount_and_a_key(
    client, stripe_tenant, stripe_api
):
    invoice = open_invoice(stripe_tenant, amount="120.00")
    response, data = start_checkout(client, invoice)

    payment = Payment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_test_1"
    assert (payment.status, payment.checkout_session) == ("pending", "cs_test_1")
    [call] = stripe_api.calls
    assert call.request.headers["Idempotency-Key"] == f"checkout-{data['attempt']}"
    assert call.request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    sent = call.request.body
    assert "line_items[0][price_data][unit_amount]=12000" in sent
    assert "line_items[0][price_data][currency]=gbp" in sent
    assert f"client_reference_id={payment.public_id}" in sent
    assert "setup_future_usage" not in sent  # no consent, no saved card

    # A double click replays the payment: no second session.
    assert client.post(pay_url(invoice), data)["Location"] == response["Location"]
    assert len(stripe_api.calls) == 1 and Payment.objects.count() == 1


def test_the_browser_coming_back_does_not_complete_the_payment(client, stripe_tenant, stripe_api):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    back = client.get(payment.get_absolute_url())  # Stripe's success_url
    assert "Confirming your payment" in back.content.decode()
    assert '<meta http-equiv="refresh"' in back.content.decode()
    payment.refresh_from_db()
    assert payment.status == "pending" and not HaloOutbox.objects.exists()


def test_signed_webhook_completes_the_payment_once(client, stripe_tenant, stripe_api, mailoutbox):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()

    first = deliver(client, stripe_tenant, completed(payment))
    again = deliver(client, stripe_tenant, completed(payment))
    other_id = deliver(client, stripe_tenant, completed(payment, event_id="evt_2"))

    assert first.status_code == again.status_code == other_id.status_code == 200
    assert first.json()["result"] == "pending → succeeded"
    assert again.json()["result"].startswith("duplicate")
    assert other_id.json()["result"] == "no change: the payment is already succeeded"
    payment.refresh_from_db()
    assert (payment.status, payment.reference) == ("succeeded", "pi_test_1")
    assert payment.events.filter(to_status="succeeded").count() == 1
    assert HaloOutbox.objects.filter(payment=payment).count() == 1
    assert ProcessorEvent.objects.count() == 2 and len(mailoutbox) == 1
    assert "Payment received" in client.get(payment.get_absolute_url()).content.decode()
    # Checkout's events do not name the card: the receipt step asked Stripe.
    assert (payment.card_brand, payment.card_last4) == ("Visa", "4242")
    assert "4242" in mailoutbox[0].body


def test_out_of_order_events_never_undo_a_success(client, stripe_tenant, stripe_api):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    session = {"id": "cs_test_1", "client_reference_id": payment.public_id}
    deliver(client, stripe_tenant, completed(payment, event_id="evt_done"))
    late = deliver(client, stripe_tenant, event("checkout.session.expired", session, "evt_exp"))
    assert late.json()["result"] == "no change: the payment is already succeeded"
    payment.refresh_from_db()
    assert payment.status == "succeeded"


def test_a_success_after_a_failure_is_still_recorded(client, stripe_tenant, stripe_api):
    """Money the processor took is never lost, whatever order the events come in."""
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    session = {"id": "cs_test_1", "client_reference_id": payment.public_id}
    deliver(client, stripe_tenant, event("checkout.session.expired", session, "evt_exp"))
    deliver(client, stripe_tenant, completed(payment, event_id="evt_done"))
    payment.refresh_from_db()
    assert payment.status == "succeeded" and HaloOutbox.objects.filter(payment=payment).exists()


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "no-header", "edited-body", "stale-timestamp", "unknown-tenant"],
)
def test_bad_signatures_are_rejected(client, stripe_tenant, stripe_api, tamper):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    payload = completed(payment)
    body = json.dumps(payload)
    url = f"/pay/{stripe_tenant.slug}/-/stripe/webhook"
    header = stripe.WebhookSignature.generate_signature_header(body, SIGNING_SECRET)
    if tamper == "wrong-secret":
        header = stripe.WebhookSignature.generate_signature_header(body, "whsec_attacker")
    elif tamper == "no-header":
        header = ""
    elif tamper == "edited-body":
        body = body.replace("pi_test_1", "pi_attacker")
    elif tamper == "stale-timestamp":
        signed_in_2001 = 1_000_000_000  # far outside Stripe's five minutes, whatever today is
        header = stripe.WebhookSignature.generate_signature_header(
            body, SIGNING_SECRET, signed_in_2001
        )
    elif tamper == "unknown-tenant":
        url = "/pay/no-such-tenant/-/stripe/webhook"

    response = client.post(url, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)

    assert response.status_code == 400
    payment.refresh_from_db()
    assert payment.status == "pending" and not ProcessorEvent.objects.exists()


def test_events_cannot_reach_another_tenants_payment(client, stripe_tenant, stripe_api):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    other = factories.tenant("bravo")
    settings = PaymentSettings.for_tenant(other)
    settings.set_stripe_secrets(SECRET_KEY, "whsec_bravo")
    settings.save()
    answer = deliver(client, other, completed(payment), secret="whsec_bravo")
    assert answer.json()["result"] == "ignored: no payment of this tenant matches"
    payment.refresh_from_db()
    assert payment.status == "pending"


def test_leaving_the_checkout_closes_it_so_the_invoice_can_be_paid(
    client, stripe_tenant, stripe_api
):
    stripe_api.post(f"{API}/checkout/sessions/cs_test_1/expire", json={"status": "expired"})
    stripe_api.get(f"{API}/checkout/sessions/cs_test_1", json={"status": "expired"})
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    assert 'type="submit"' not in client.get(pay_url(invoice)).content.decode()

    back = client.get(f"{pay_url(invoice)}?cancelled={payment.public_id}")

    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "expired")
    assert back["Location"] == f"{pay_url(invoice)}?failed={payment.public_id}#payment-failed"
    body = client.get(back["Location"]).content.decode()
    assert "Nothing was charged" in body and 'type="submit"' in body


def test_stripe_refusing_the_session_charges_nothing(client, tenant):
    settings = PaymentSettings.for_tenant(tenant)
    settings.processor = "stripe"
    settings.set_stripe_secrets(SECRET_KEY, SIGNING_SECRET)
    settings.save()
    invoice = open_invoice(tenant)
    with responses.RequestsMock() as mock:
        mock.post(
            f"{API}/checkout/sessions",
            status=400,
            json={"error": {"type": "invalid_request_error", "message": "Bad currency"}},
        )
        response, _ = start_checkout(client, invoice)
    payment = Payment.objects.get()
    assert (payment.status, payment.failure_code) == ("failed", "processor_error")
    assert "Nothing was charged" in client.get(response["Location"]).content.decode()


def test_consent_asks_stripe_to_keep_the_card(client, stripe_tenant, stripe_api):
    invoice = open_invoice(stripe_tenant, autopay_rule=factories.autopay_rule(stripe_tenant))
    page = client.get(pay_url(invoice))
    data = {"attempt": page.context["form"]["attempt"].value(), "save_method": "on"}
    client.post(pay_url(invoice), data)
    sent = stripe_api.calls[0].request.body
    assert "payment_intent_data[setup_future_usage]=off_session" in sent
    assert "customer_creation=always" in sent
    payment = Payment.objects.get()
    deliver(client, stripe_tenant, completed(payment, customer="cus_1"))
    method = invoice.customer.saved_payment_methods.get()
    assert (method.processor_customer, method.details) == ("cus_1", {"payment_intent": "pi_test_1"})


@pytest.mark.parametrize("declined", [False, True], ids=["charged", "declined"])
def test_autopay_charges_the_saved_card_off_session(stripe_tenant, mailoutbox, declined):
    invoice = open_invoice(stripe_tenant, autopay_rule=factories.autopay_rule(stripe_tenant))
    factories.saved_payment_method(
        stripe_tenant,
        customer=invoice.customer,
        processor="stripe",
        reference="",
        processor_customer="cus_1",
        details={"payment_intent": "pi_first"},
        consented_at=timezone.now() - timedelta(days=60),  # before the invoice was dated
    )
    with responses.RequestsMock() as mock:
        mock.get(
            f"{API}/payment_intents/pi_first", json={"id": "pi_first", "payment_method": "pm_1"}
        )
        if declined:
            error = {"type": "card_error", "code": "card_declined", "message": "Declined."}
            mock.post(f"{API}/payment_intents", status=402, json={"error": error})
        else:
            mock.post(f"{API}/payment_intents", json={"id": "pi_auto", "status": "succeeded"})
        today = date.today()
        [attempt] = autopay.run(stripe_tenant, today)
        create = mock.calls[-1].request
    payment = attempt.payment
    assert create.headers["Idempotency-Key"] == f"autopay-invoice-{invoice.pk}-{today}"
    assert "off_session=true" in create.body and "payment_method=pm_1" in create.body
    if declined:
        assert (payment.status, payment.failure_code) == ("failed", "card_declined")
        number = invoice.display_number()
        assert [m.subject for m in mailoutbox] == [
            f"Auto-pay failed: invoice {number} ({invoice.customer})",
            f"We could not charge your card for invoice {number} – {stripe_tenant.brand_name}",
        ]
    else:
        assert (payment.status, payment.reference) == ("succeeded", "pi_auto")


@pytest.mark.parametrize("session_status", ["complete", "expired", "open"])
def test_checkouts_no_webhook_settled_are_asked_of_stripe(
    client, stripe_tenant, stripe_api, settings, session_status
):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    Payment.objects.update(created=timezone.now() - timedelta(hours=3))
    stripe_api.post(f"{API}/checkout/sessions/cs_test_1/expire", status=400, json={"error": {}})
    stripe_api.get(
        f"{API}/checkout/sessions/cs_test_1",
        json={"status": session_status, "payment_status": "paid", "payment_intent": "pi_late"},
    )

    tasks.close_stale_payments()

    payment = Payment.objects.get()
    expected = {"complete": "succeeded", "expired": "failed", "open": "pending"}[session_status]
    assert payment.status == expected
    if expected == "succeeded":  # money taken is recorded even though the webhook was lost
        assert payment.reference == "pi_late" and HaloOutbox.objects.filter(payment=payment)


def test_payments_that_never_reached_the_processor_are_released(tenant):
    invoice = open_invoice(tenant)
    stuck = factories.payment(tenant, invoice=invoice, status="pending")
    Payment.objects.update(updated=timezone.now() - timedelta(minutes=11))
    tasks.close_stale_payments()
    stuck.refresh_from_db()
    assert (stuck.status, stuck.failure_code) == ("failed", "abandoned")


def test_refund_before_halo_recorded_it_writes_nothing_to_halo(client, stripe_tenant, stripe_api):
    invoice = open_invoice(stripe_tenant)
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    deliver(client, stripe_tenant, completed(payment))  # no Halo connection: it waits
    answer = deliver(client, stripe_tenant, refunded(12000, 12000, "evt_refund"))
    assert answer.json()["result"] == "succeeded → refunded"

    HaloOutbox.objects.update(next_attempt=timezone.now())
    tasks.deliver_outbox()

    row = HaloOutbox.objects.get(payment=payment)
    assert row.status == "not_needed" and "Refunded" in row.last_error
    assert 'type="submit"' in client.get(pay_url(invoice)).content.decode()  # payable again


def test_partial_refunds_at_stripe_are_recorded_once(client, stripe_tenant, stripe_api):
    invoice = open_invoice(stripe_tenant, amount="120.00")
    start_checkout(client, invoice)
    payment = Payment.objects.get()
    deliver(client, stripe_tenant, completed(payment))

    first = deliver(client, stripe_tenant, refunded(12000, 2500, "evt_r1"))
    late = deliver(client, stripe_tenant, refunded(12000, 1000, "evt_r0"))  # an older total
    rest = deliver(client, stripe_tenant, refunded(12000, 12000, "evt_r2"))

    assert first.json()["result"] == "25.00 of 120.00 refunded so far"
    assert late.json()["result"] == "no change: the payment is already succeeded"
    assert rest.json()["result"] == "succeeded → refunded"
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("refunded", Decimal("120.00"))


def test_staff_refund_through_stripe_once_and_wait_for_its_webhook(
    personas, stripe_api, mailoutbox
):
    tenant = personas.tenant_a
    settings = PaymentSettings.for_tenant(tenant)
    settings.processor = PaymentSettings.Processor.STRIPE
    settings.set_stripe_secrets(SECRET_KEY, SIGNING_SECRET)
    settings.save()
    payment = factories.payment(
        tenant, processor="stripe", status="succeeded", reference="pi_test_1",
        amount=Decimal("80.00"), refunded_amount=Decimal("30.00"),
    )  # fmt: skip
    stripe_api.post(f"{API}/refunds", json={"id": "re_1", "object": "refund"})
    staff = personas.client(personas.owner_a)
    data = {"action": "refund", "_selected_action": [payment.pk], "post": "yes"}

    staff.post(reverse("admin:payments_payment_changelist"), data)
    staff.post(reverse("admin:payments_payment_changelist"), data)  # a second click

    calls = [c for c in stripe_api.calls if c.request.url.endswith("/refunds")]
    assert {c.request.headers["Idempotency-Key"] for c in calls} == {
        f"refund-{payment.idempotency_key}-8000"
    }
    assert "payment_intent=pi_test_1" in calls[0].request.body
    assert "amount=5000" in calls[0].request.body  # what is left, not the whole payment
    payment.refresh_from_db()
    assert payment.status == "succeeded"  # until Stripe's charge.refunded arrives
