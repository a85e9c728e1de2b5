"""Paying several invoices through Stripe Checkout: one session (idempotency key) listing
each invoice, completed only by a signed webhook, a lost webhook settled by the sweep
asking Stripe, and refunds reported by Stripe reversing the newest shares first. Stripe is
answered by `responses`, as in test_stripe.py."""

from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
import responses
from django.urls import reverse
from django.utils import timezone

from billing.payments import tasks
from billing.payments.models import HaloOutbox, Payment, PaymentAllocation
from tests import factories
from tests.payments.conftest import open_invoice, pay_url
from tests.payments.test_pay_several import pay_data, review, several_url
from tests.payments.test_stripe import (
    API,
    PAYMENT_INTENT,
    completed,
    deliver,
    refunded,
    stripe_on,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stripe_api():
    """Stripe's API as test_stripe.py answers it: one Checkout Session, cs_test_1."""
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


@pytest.fixture
def account(tenant):
    stripe_on(tenant)
    customer = factories.customer(tenant)
    today = timezone.localdate()
    invoices = [
        open_invoice(tenant, amount, customer=customer, invoice_date=today - timedelta(days=age))
        for amount, age in (("50.00", 10), ("120.00", 40), ("30.00", 20))
    ]
    return customer, sorted(invoices, key=lambda i: i.invoice_date)


def start(client, customer, ids=None):
    url = several_url(customer)
    page = review(client, url, ids)
    assert "card_number" not in page.context["form"].fields  # Stripe hosts the card form
    assert 'target="_top"' in page.content.decode()  # Checkout refuses to open in a frame
    data = pay_data(page)
    return client.post(url, data), data, url


def test_one_checkout_session_lists_each_invoice_and_a_resubmit_reuses_it(
    client, account, stripe_api
):
    customer, invoices = account
    response, data, url = start(client, customer)

    payment = Payment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_test_1"
    assert (payment.status, payment.amount) == ("pending", Decimal("200.00"))
    [call] = stripe_api.calls
    assert call.request.headers["Idempotency-Key"] == f"checkout-{data['attempt']}"
    sent = parse_qs(call.request.body)
    names = [sent[f"line_items[{n}][price_data][product_data][name]"][0] for n in range(3)]
    amounts = [sent[f"line_items[{n}][price_data][unit_amount]"][0] for n in range(3)]
    assert names == [f"Invoice {i.display_number()}" for i in invoices]  # oldest first
    assert amounts == ["12000", "3000", "5000"]
    assert sent["client_reference_id"] == [payment.public_id]
    assert sent["cancel_url"] == [f"{payment.public_url()}?cancelled=1"]
    # A double submit replays the payment: no second session, no second charge.
    assert client.post(url, data)["Location"] == response["Location"]
    assert len(stripe_api.calls) == 1 and Payment.objects.count() == 1
    # While Checkout is open the invoices are in progress everywhere.
    assert "Payment in progress" in client.get(pay_url(invoices[0])).content.decode()


def test_only_a_signed_webhook_completes_it_and_every_share_is_queued_once(
    client, account, stripe_api
):
    customer, _ = account
    start(client, customer)
    payment = Payment.objects.get()
    back = client.get(payment.get_absolute_url())  # Stripe's success_url
    assert "Confirming your payment" in back.content.decode()
    assert not HaloOutbox.objects.exists()

    first = deliver(client, customer.tenant, completed(payment))
    again = deliver(client, customer.tenant, completed(payment, event_id="evt_2"))

    assert first.json()["result"] == "pending → succeeded"
    assert again.json()["result"] == "no change: the payment is already succeeded"
    payment.refresh_from_db()
    assert (payment.status, payment.reference) == ("succeeded", "pi_test_1")
    assert not PaymentAllocation.objects.filter(in_flight=True).exists()
    rows = HaloOutbox.objects.filter(payment=payment, kind="payment")
    assert sorted(r.allocation_id for r in rows) == sorted(
        payment.allocations.values_list("pk", flat=True)
    )
    assert "Payment received" in client.get(payment.get_absolute_url()).content.decode()


@pytest.mark.parametrize("session_status", ["complete", "expired"])
def test_a_lost_webhook_is_settled_by_the_sweep_with_one_charge(
    client, account, stripe_api, session_status
):
    customer, _ = account
    start(client, customer)
    Payment.objects.update(created=timezone.now() - timedelta(hours=3))
    stripe_api.post(f"{API}/checkout/sessions/cs_test_1/expire", status=400, json={"error": {}})
    stripe_api.get(
        f"{API}/checkout/sessions/cs_test_1",
        json={"status": session_status, "payment_status": "paid", "payment_intent": "pi_late"},
    )

    tasks.close_stale_payments()
    tasks.close_stale_payments()  # the next sweep finds nothing left to settle

    payment = Payment.objects.get()
    creates = [c for c in stripe_api.calls if c.request.url.endswith("/checkout/sessions")]
    assert len(creates) == 1
    if session_status == "complete":
        assert (payment.status, payment.reference) == ("succeeded", "pi_late")
        assert HaloOutbox.objects.filter(payment=payment, kind="payment").count() == 3
        assert payment.events.filter(to_status="succeeded").count() == 1
    else:
        assert payment.status == "failed" and not HaloOutbox.objects.exists()
        # Released: the invoices can be paid again.
        assert review(client, several_url(customer)).status_code == 200
    assert not PaymentAllocation.objects.filter(in_flight=True).exists()


def test_backing_out_of_checkout_closes_it_and_frees_the_invoices(client, account, stripe_api):
    stripe_api.post(f"{API}/checkout/sessions/cs_test_1/expire", json={"status": "expired"})
    stripe_api.get(f"{API}/checkout/sessions/cs_test_1", json={"status": "expired"})
    customer, invoices = account
    start(client, customer)
    payment = Payment.objects.get()

    back = client.get(f"{payment.get_absolute_url()}?cancelled=1")

    payment.refresh_from_db()
    assert back["Location"] == payment.get_absolute_url()
    assert (payment.status, payment.failure_code) == ("failed", "expired")
    body = client.get(back["Location"]).content.decode()
    assert "Payment not completed" in body and "Nothing was charged" in body
    assert "Try again" in body
    assert 'type="submit"' in client.get(pay_url(invoices[0])).content.decode()


def test_refunds_at_stripe_reverse_the_newest_shares_first(
    client, personas, stripe_api, mailoutbox
):
    tenant = stripe_on(personas.tenant_a)
    customer = factories.customer(tenant)
    today = timezone.localdate()
    old, new = (
        open_invoice(tenant, "80.00", customer=customer, invoice_date=today - timedelta(days=30)),
        open_invoice(tenant, "40.00", customer=customer, invoice_date=today - timedelta(days=5)),
    )
    start(client, customer, [new.pk, old.pk])
    payment = Payment.objects.get()
    deliver(client, tenant, completed(payment))
    stripe_api.post(f"{API}/refunds", json={"id": "re_1", "object": "refund"})
    staff = personas.client(personas.owner_a)
    changelist = reverse("admin:payments_payment_changelist")
    selected = {"action": "refund", "_selected_action": [payment.pk]}
    confirm = staff.post(changelist, selected).content.decode()
    assert "Refund £120.00" in confirm and f"Invoice {old.display_number()}: £80.00" in confirm

    staff.post(changelist, selected | {"post": "yes"})

    [call] = [c for c in stripe_api.calls if c.request.url.endswith("/refunds")]
    assert parse_qs(call.request.body)["amount"] == ["12000"]
    assert call.request.headers["Idempotency-Key"] == f"refund-{payment.idempotency_key}-12000"
    payment.refresh_from_db()
    assert payment.status == "succeeded"  # until Stripe reports the refund
    # Stripe reports £50 refunded first (say, a refund made at its dashboard), then all.
    deliver(client, tenant, refunded(12000, 5000, "evt_r1"))
    shares = {a.invoice_id: a.refunded_amount for a in payment.allocations.all()}
    assert shares == {new.pk: Decimal("40.00"), old.pk: Decimal("10.00")}
    deliver(client, tenant, refunded(12000, 12000, "evt_r2"))
    payment.refresh_from_db()
    assert payment.status == "refunded"
    shares = {a.invoice_id: a.refunded_amount for a in payment.allocations.all()}
    assert shares == {new.pk: Decimal("40.00"), old.pk: Decimal("80.00")}


def test_consent_asks_stripe_to_keep_the_card_and_the_webhook_saves_it(client, account, stripe_api):
    from billing.payments.models import SavedPaymentMethod

    customer, invoices = account
    rule = factories.autopay_rule(customer.tenant)
    invoices[0].autopay_rule = rule
    invoices[0].save(update_fields=["autopay_rule"])
    url = several_url(customer)
    client.post(url, pay_data(review(client, url), save_method="on"))
    sent = parse_qs(stripe_api.calls[0].request.body)
    assert sent["payment_intent_data[setup_future_usage]"] == ["off_session"]
    assert sent["customer_creation"] == ["always"]
    payment = Payment.objects.get()

    deliver(client, customer.tenant, completed(payment, customer="cus_several"))

    card = SavedPaymentMethod.objects.get(customer=customer, active=True)
    assert (card.processor, card.processor_customer) == ("stripe", "cus_several")
    assert card.source_payment == payment and card.details == {"payment_intent": "pi_test_1"}
