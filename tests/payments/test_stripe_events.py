"""Stripe events the happy path does not see (pentest #12, findings 3 and 10).

A refund Stripe reports before the payment's success is remembered in the database (its
event waits, *deferred*) and applied through the ordinary refund path in the transaction
that marks the payment succeeded, so Halo is told through the outbox. A signed event the
portal cannot read answers 400, is logged and is kept for staff; the admin lists processor
events by state with the reason.
"""

import json
import logging
from decimal import Decimal
from types import SimpleNamespace

import pytest
import responses
import stripe
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from hypothesis import event as event_kind
from hypothesis import given
from hypothesis import strategies as st

from billing.models import Invoice
from billing.payments.models import HaloOutbox, Payment, ProcessorEvent
from integrations.invoice_sync.runner import run_sync
from tests.payments.conftest import connect, open_invoice, pay_url
from tests.payments.test_stripe import (
    API,
    PAYMENT_INTENT,
    SIGNING_SECRET,
    completed,
    deliver,
    event,
    start_checkout,
    stripe_on,
)
from tests.test_hostile_input import json_values, mutated

pytestmark = pytest.mark.django_db(transaction=True)


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
        mock.add_passthru("http://127.0.0.1")  # the Halo simulator
        yield mock


def refund_event(payment, amount_refunded, event_id, amount=12000, metadata=True):
    """`charge.refunded` as Stripe sends it: the Charge carries the PaymentIntent's
    metadata (Stripe copies it when the intent is confirmed)."""
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_test_1",
        "amount": amount,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= amount,
    }
    if metadata:
        charge["metadata"] = {"payment": payment.public_id, "kind": "pay_page"}
    return event("charge.refunded", charge, event_id)


def pending_payment(client, tenant, **invoice_fields):
    invoice = invoice_fields.pop("invoice", None) or open_invoice(tenant, **invoice_fields)
    start_checkout(client, invoice)
    return Payment.objects.get(invoice=invoice)


# -- finding 3: a refund before the success ---------------------------------------------------


def test_a_refund_reported_before_the_success_is_applied_when_it_succeeds(
    client, stripe_tenant, stripe_api
):
    payment = pending_payment(client, stripe_tenant)

    early = deliver(client, stripe_tenant, refund_event(payment, 12000, "evt_refund"))

    assert early.status_code == 200
    assert early.json()["result"].startswith("deferred: ")
    waiting = ProcessorEvent.objects.get(event_id="evt_refund")
    assert (waiting.state, waiting.payment) == ("deferred", payment)
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("pending", 0)
    assert "before the payment succeeded" in payment.events.last().detail

    paid = deliver(client, stripe_tenant, completed(payment, event_id="evt_paid"))

    assert paid.json()["result"] == "pending → refunded"
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("refunded", Decimal("120.00"))
    assert [(e.from_status, e.to_status, e.processor_event) for e in payment.events.all()] == [
        ("created", "pending", ""),
        ("pending", "pending", "evt_refund"),  # the early report, kept
        ("pending", "succeeded", "evt_paid"),
        ("succeeded", "refunded", "evt_refund"),  # applied in the same transaction
    ]
    waiting.refresh_from_db()
    assert waiting.state == "applied" and "when the payment succeeded" in waiting.outcome
    row = HaloOutbox.objects.get(payment=payment)
    assert row.status == "not_needed" and "Refunded" in row.last_error  # nothing to Halo
    assert 'type="submit"' in client.get(pay_url(payment.invoice)).content.decode()


def test_the_latest_of_several_early_refunds_counts(client, stripe_tenant, stripe_api):
    """Stripe reports the running total: events in any order leave the largest."""
    payment = pending_payment(client, stripe_tenant, amount="120.00")
    deliver(client, stripe_tenant, refund_event(payment, 3000, "evt_r2"))
    deliver(client, stripe_tenant, refund_event(payment, 1000, "evt_r1"))  # older, late

    deliver(client, stripe_tenant, completed(payment, event_id="evt_paid"))

    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("succeeded", Decimal("30.00"))
    assert set(ProcessorEvent.objects.values_list("state", flat=True)) == {"applied"}
    assert HaloOutbox.objects.get(payment=payment).status == "pending"  # sends 90.00


def test_an_early_refund_naming_only_the_charge_is_found_when_the_payment_succeeds(
    client, stripe_tenant, stripe_api
):
    """Without the payment's id in its metadata the refund names only the PaymentIntent,
    which the portal learns with the success."""
    payment = pending_payment(client, stripe_tenant)
    early = deliver(client, stripe_tenant, refund_event(payment, 12000, "evt_r", metadata=False))
    assert early.json()["result"] == "ignored: no payment of this tenant matches"

    deliver(client, stripe_tenant, completed(payment, event_id="evt_paid"))

    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("refunded", Decimal("120.00"))
    record = ProcessorEvent.objects.get(event_id="evt_r")
    assert (record.state, record.payment) == ("applied", payment)


def test_an_early_refund_of_a_payment_that_failed_first_is_kept_too(
    client, stripe_tenant, stripe_api
):
    payment = pending_payment(client, stripe_tenant)
    expired = {"id": "cs_test_1", "client_reference_id": payment.public_id}
    deliver(client, stripe_tenant, event("checkout.session.expired", expired, "evt_exp"))
    deliver(client, stripe_tenant, refund_event(payment, 12000, "evt_refund"))
    assert ProcessorEvent.objects.get(event_id="evt_refund").state == "deferred"

    deliver(client, stripe_tenant, completed(payment, event_id="evt_paid"))  # money was taken

    payment.refresh_from_db()
    assert payment.status == "refunded"


def test_halo_is_told_only_what_the_payer_kept(personas, sim, client, stripe_api):
    """A partial refund before the success: Halo records the payment less the refund."""
    tenant = stripe_on(personas.tenant_a)
    connect(tenant, sim)
    run = run_sync(tenant, "initial", "cli")
    assert run.status == "succeeded", run.error
    record = next(i for i in sim.control.state("Invoice") if i["paymentstatus"] == 0)
    invoice = Invoice.objects.get(tenant=tenant, halo_id=record["id"])
    payment = pending_payment(client, tenant, invoice=invoice)
    full = int(payment.amount * 100)

    deliver(client, tenant, refund_event(payment, 2500, "evt_refund", amount=full))
    deliver(client, tenant, completed(payment, event_id="evt_paid"))

    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("succeeded", Decimal("25.00"))
    assert HaloOutbox.objects.get(payment=payment).status == "delivered"
    [recorded] = [
        p
        for p in sim.control.state("InvoicePayment")
        if p.get("thirdpartyid") == "pi_test_1" and not p.get("_deleted")
    ]
    assert Decimal(str(recorded["amount"])) == payment.amount - Decimal("25.00")


# -- finding 10: signed events the portal cannot read ---------------------------------------------


def sign_and_post(client, tenant, body):
    header = stripe.WebhookSignature.generate_signature_header(body, SIGNING_SECRET)
    return client.post(
        f"/pay/{tenant.slug}/-/stripe/webhook",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )


def charge(**fields):
    return {"id": "ch_1", "object": "charge", "payment_intent": "pi_test_1"} | fields


MALFORMED = {
    "list": ("[]", "JSON object"),
    "no-id": (json.dumps({"type": "charge.refunded", "data": {"object": charge()}}), "id"),
    "data-null": (json.dumps({"id": "evt_m", "type": "charge.refunded", "data": None}), "data"),
    "object-text": (
        json.dumps({"id": "evt_m", "type": "charge.refunded", "data": {"object": "ch_1"}}),
        "data.object",
    ),
    "metadata-text": (
        json.dumps(event("charge.refunded", charge(metadata="payment"), "evt_m")),
        "metadata",
    ),
    "amount-refunded-text": (
        json.dumps(event("charge.refunded", charge(amount_refunded="lots"), "evt_m")),
        "amount_refunded",
    ),
    "amount-refunded-negative": (
        json.dumps(event("charge.refunded", charge(amount_refunded=-5), "evt_m")),
        "amount_refunded",
    ),
    "type-number": (json.dumps({"id": "evt_m", "type": 7, "data": {"object": {}}}), "type"),
    "id-list": (json.dumps({"id": ["evt_m"], "type": "x", "data": {"object": {}}}), "id"),
    "payment-intent-object": (
        json.dumps(event("charge.refunded", charge(payment_intent={"id": "pi"}), "evt_m")),
        "payment_intent",
    ),
    "client-reference-number": (
        json.dumps(event("checkout.session.completed", {"client_reference_id": 5}, "evt_m")),
        "client_reference_id",
    ),
    "nul": (json.dumps(event("charge.refunded", charge(description="a\x00b"), "evt_m")), "NUL"),
    "surrogate": (
        json.dumps(event("charge.refunded", charge(description="\ud800"), "evt_m")),
        "surrogate",
    ),
    "deep": (
        json.dumps(event("charge.refunded", charge(description="<deep>"), "evt_m")).replace(
            '"<deep>"', "[" * 5000 + "]" * 5000
        ),
        "nested",
    ),
    "not-json": ("{", "JSON"),
    "long-id": (json.dumps({"id": "e" * 300, "type": "x", "data": {"object": {}}}), "id"),
}


@pytest.mark.parametrize(("body", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_signed_events_the_portal_cannot_read_are_refused_logged_and_kept(
    client, stripe_tenant, stripe_api, caplog, body, reason
):
    payment = pending_payment(client, stripe_tenant)
    caplog.set_level(logging.WARNING, logger="billing.payments.views")

    answer = sign_and_post(client, stripe_tenant, body)
    again = sign_and_post(client, stripe_tenant, body)  # Stripe retries: still one record

    assert answer.status_code == again.status_code == 400
    assert answer.json()["error"] == "invalid" and reason in answer.json()["detail"]
    kept = ProcessorEvent.objects.get()
    assert kept.state == "failed" and reason in kept.outcome
    assert kept.tenant == stripe_tenant
    json.dumps(kept.payload, ensure_ascii=False).encode()  # stored as readable Unicode
    assert any(reason in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    payment.refresh_from_db()
    assert payment.status == "pending"


def test_a_bad_signature_is_still_not_stored(client, stripe_tenant, stripe_api):
    header = stripe.WebhookSignature.generate_signature_header("[]", "whsec_attacker")
    answer = client.post(
        f"/pay/{stripe_tenant.slug}/-/stripe/webhook",
        "[]",
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )
    assert answer.status_code == 400 and not ProcessorEvent.objects.exists()


# -- staff see every deferred or failed event ----------------------------------------------------


def test_staff_list_processor_events_by_state_with_the_reason(personas, client, stripe_api):
    tenant = stripe_on(personas.tenant_a)
    payment = pending_payment(client, tenant)
    deliver(client, tenant, refund_event(payment, 12000, "evt_early"))
    sign_and_post(client, tenant, MALFORMED["amount-refunded-text"][0])
    deliver(client, tenant, event("customer.created", {"id": "cus_1"}, "evt_other"))
    other = stripe_on(personas.tenant_b)
    sign_and_post(client, other, json.dumps({"id": "evt_bravo", "data": None}))
    staff = personas.client(personas.owner_a)
    url = reverse("admin:payments_processorevent_changelist")

    everything = staff.get(url).content.decode()
    deferred = staff.get(url, {"state__exact": "deferred"}).content.decode()
    failed = staff.get(url, {"state__exact": "failed"}).content.decode()

    assert "evt_early" in everything and "evt_other" in everything
    assert "evt_bravo" not in everything  # another tenant's
    assert "evt_early" in deferred and "evt_m" not in deferred and "evt_other" not in deferred
    assert "waits for the payment to succeed" in deferred
    assert "evt_m" in failed and "evt_early" not in failed and "amount_refunded" in failed
    detail = staff.get(
        reverse(
            "admin:payments_processorevent_change",
            args=[ProcessorEvent.objects.get(event_id="evt_m").pk],
        )
    )
    assert detail.status_code == 200 and "lots" in detail.content.decode()


# -- events stored before states were -------------------------------------------------------------


def test_refunds_dropped_before_this_fix_wait_again_or_are_shown_to_staff(tenant):
    """The migration names every stored event's state. A refund the old code dropped as
    "no change" because its payment had not succeeded waits again while the payment is
    open; if the payment has succeeded since, the refund was lost: failed, for staff."""
    executor = MigrationExecutor(connection)
    executor.migrate([("payments", "0004_refunds_in_halo")])
    old = executor.loader.project_state([("payments", "0004_refunds_in_halo")]).apps
    OldPayment = old.get_model("payments", "Payment")
    OldEvent = old.get_model("payments", "ProcessorEvent")
    payments = {
        status: OldPayment.objects.create(
            tenant_id=tenant.pk,
            invoice_ref="1",
            idempotency_key=f"k-{status}-{refunded}",
            processor="stripe",
            amount=Decimal("120.00"),
            currency="GBP",
            status=status,
            refunded_amount=Decimal(refunded),
        )
        for status, refunded in [("pending", 0), ("succeeded", 0), ("refunded", 120)]
    }
    stored = {
        "early-open": ("charge.refunded", payments["pending"], "pending", 12000),
        "early-lost": ("charge.refunded", payments["succeeded"], "pending", 12000),
        "early-covered": ("charge.refunded", payments["refunded"], "created", 12000),
        "late": ("charge.refunded", payments["succeeded"], "succeeded", 100),
        "moved": ("checkout.session.completed", payments["succeeded"], None, None),
    }
    for event_id, (kind, payment, was, refunded) in stored.items():
        obj = {"id": "ch_1", "payment_intent": f"pi_{event_id}", "amount_refunded": refunded}
        OldEvent.objects.create(
            tenant_id=tenant.pk, processor="stripe", event_id=event_id, type=kind,
            payment_id=payment.pk, payload={"id": event_id, "data": {"object": obj}},
            outcome=f"no change: the payment is already {was}" if was else "pending → succeeded",
        )  # fmt: skip
    OldEvent.objects.create(
        tenant_id=tenant.pk, processor="stripe", event_id="other", type="customer.created",
        payload=[], outcome="ignored: not an event the portal acts on",
    )  # fmt: skip

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    events = {e.event_id: e for e in ProcessorEvent.objects.all()}
    states = {event_id: event.state for event_id, event in events.items()}
    assert states == {
        "early-open": "deferred",
        "early-lost": "failed",
        "early-covered": "no_change",
        "late": "no_change",
        "moved": "applied",
        "other": "ignored",
    }
    assert events["early-open"].refunded_total == Decimal("120.00")
    assert events["early-open"].reference == "pi_early-open"
    assert "correct by hand" in events["early-lost"].outcome
    # The one still open is taken off when its payment succeeds.
    payment = Payment.objects.get(pk=payments["pending"].pk)
    payment.move(Payment.Status.SUCCEEDED, source="webhook", reference="pi_early-open")
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("refunded", Decimal("120.00"))


# -- any signed event -----------------------------------------------------------------------------

signed_events = st.one_of(
    st.builds(
        lambda amount: refund_event(SimpleNamespace(public_id="p"), amount, "evt_r"),
        st.integers(0, 12000),
    ),
    st.builds(lambda: event("checkout.session.completed", {"client_reference_id": "p"}, "e")),
    st.builds(lambda: event("payment_intent.payment_failed", {"id": "pi_1"}, "e")),
).flatmap(mutated)


@given(body=st.one_of(signed_events, json_values.map(lambda v: json.dumps(v).encode())))
def test_any_signed_event_is_applied_or_refused_and_kept_never_a_500(client, stripe_tenant, body):
    """Signed (so past the signature check) but otherwise anything."""
    before = ProcessorEvent.objects.count()
    answer = sign_and_post(client, stripe_tenant, body.decode())
    event_kind(f"answer {answer.status_code}")
    assert answer.status_code in (200, 400), answer.content
    if answer.status_code == 400:
        assert answer.json()["error"] == "invalid" and answer.json()["detail"]
        kept = ProcessorEvent.objects.filter(state="failed")
        assert ProcessorEvent.objects.count() in (before, before + 1) and kept.exists()
    else:
        result = answer.json()["result"]
        assert result.startswith(("duplicate", "ignored", "no change", "deferred")) or "→" in result
