"""Recording payments in Halo through the outbox, against the simulator over HTTP: Halo
down and recovering, lost answers, killed workers, refusals staff must see and retry."""

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import Invoice, InvoiceNumberField
from billing.payments import outbox
from billing.payments.models import HaloOutbox, Payment
from integrations.halo import HaloClient
from integrations.invoice_sync.runner import run_sync
from tests import factories
from tests.payments.conftest import card_form, connect, pay_url, settings_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def halo_tenant(personas, sim):
    tenant = personas.tenant_a
    connect(tenant, sim)
    return tenant


def sync(tenant, kind="initial"):
    run = run_sync(tenant, kind, "cli")
    assert run.status == "succeeded", run.error
    return run


def halo_invoice(sim, halo_id):
    return next(i for i in sim.control.state("Invoice") if i["id"] == halo_id)


def halo_payments(sim, thirdpartyid):
    return [
        p
        for p in sim.control.state("InvoicePayment")
        if p.get("thirdpartyid") == thirdpartyid and not p.get("_deleted")
    ]


def unpaid_synced_invoice(tenant, sim):
    sync(tenant)
    record = next(i for i in sim.control.state("Invoice") if i["paymentstatus"] == 0)
    return Invoice.objects.get(tenant=tenant, halo_id=record["id"])


def pay(client, invoice):
    page = client.get(pay_url(invoice))
    response = client.post(pay_url(invoice), card_form(page))
    assert response.status_code == 302
    return Payment.objects.get(invoice=invoice, status="succeeded")


def make_due():
    HaloOutbox.objects.filter(status="pending").update(next_attempt=timezone.now())


def test_payment_lands_in_halo_and_updates_the_invoice(client, halo_tenant, sim):
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    due = invoice.amount_due

    payment = pay(client, invoice)

    row = HaloOutbox.objects.get(payment=payment)
    assert (row.status, row.attempts) == ("delivered", 1)
    [recorded] = halo_payments(sim, payment.reference)
    assert (recorded["invoice_id"], Decimal(str(recorded["amount"]))) == (invoice.halo_id, due)
    assert str(recorded["id"]) == row.halo_id
    assert halo_invoice(sim, invoice.halo_id)["paymentstatus"] == 2
    invoice.refresh_from_db()
    assert (invoice.payment_status, invoice.amount_due, invoice.amount_paid) == ("paid", 0, due)
    payment.refresh_from_db()
    assert payment.recorded is not None


def test_payment_taken_while_halo_is_down_lands_once_it_recovers(
    client, halo_tenant, sim, settings
):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.2
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    sim.control.add_fault("500", path="InvoicePayment", times=10_000)

    payment = pay(client, invoice)

    row = HaloOutbox.objects.get(payment=payment)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "internal error" in row.last_error and row.next_attempt > timezone.now()
    # The customer sees it paid, and a sync while Halo still says "unpaid" changes nothing.
    sync(halo_tenant, "unpaid")
    assert Invoice.objects.get(pk=invoice.pk).amount_due == invoice.amount_due
    assert "This invoice is paid in full" in client.get(pay_url(invoice)).content.decode()
    # A day of retries: each one backs off further, never beyond the cap.
    for _ in range(4):
        make_due()
        assert outbox.deliver() == 0
    row.refresh_from_db()
    assert row.attempts == 5 and row.status == "pending"
    wait = (row.next_attempt - timezone.now()).total_seconds()
    assert 15 * 60 - 5 <= wait <= settings.PAYMENTS_OUTBOX_MAX_BACKOFF

    sim.control.clear_faults()
    make_due()
    assert outbox.deliver() == 1

    assert len(halo_payments(sim, payment.reference)) == 1
    assert halo_invoice(sim, invoice.halo_id)["paymentstatus"] == 2
    assert Invoice.objects.get(pk=invoice.pk).payment_status == "paid"
    make_due()
    assert outbox.deliver() == 0


def test_a_lost_answer_does_not_record_twice(client, halo_tenant, sim):
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    sim.control.add_fault("drop_after", path="InvoicePayment", method="POST")
    payment = pay(client, invoice)
    assert HaloOutbox.objects.get(payment=payment).status == "delivered"
    assert len(halo_payments(sim, payment.reference)) == 1


def sent_without_answer(tenant, sim, reference, **row):
    """A succeeded payment whose outbox row was sent and reached Halo, but whose worker
    never heard back (killed, or the answer was lost)."""
    invoice = unpaid_synced_invoice(tenant, sim)
    payment = factories.payment(
        tenant, invoice=invoice, status="succeeded", reference=reference,
        succeeded_at=timezone.now(),
    )  # fmt: skip
    row = HaloOutbox.objects.create(
        tenant=tenant, kind="payment", payment=payment, attempts=1, sent=timezone.now(), **row
    )
    HaloClient(tenant.halo_connections.get()).create_invoice_payments(
        [{"invoice_id": invoice.halo_id, "amount": float(invoice.amount_due),
          "thirdpartyid": reference}]
    )  # fmt: skip
    return payment, row


def test_a_worker_killed_mid_call_does_not_record_twice(halo_tenant, sim):
    _, row = sent_without_answer(halo_tenant, sim, "test_ch_killed")
    sim.control.clear_requests()

    assert outbox.deliver() == 1

    assert len(halo_payments(sim, "test_ch_killed")) == 1
    assert "POST /InvoicePayment" not in sim.control.requests()["by_endpoint"]
    row.refresh_from_db()
    assert row.status == "delivered" and row.attempts == 2


def test_halo_refusing_the_payment_is_shown_to_staff_who_can_retry(
    client, halo_tenant, sim, personas
):
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    # Someone recorded a cheque in Halo that the portal has not synced yet.
    halo = HaloClient(halo_tenant.halo_connections.get())
    [cheque] = halo.create_invoice_payments(
        [{"invoice_id": invoice.halo_id, "amount": float(invoice.amount_due),
          "thirdpartyid": "cheque-1"}]
    )  # fmt: skip

    payment = pay(client, invoice)

    row = HaloOutbox.objects.get(payment=payment)
    assert row.status == "failed" and "exceeds the amount due" in row.last_error
    staff = personas.client(personas.owner_a)
    listing = staff.get(reverse("admin:payments_halooutbox_changelist")).content.decode()
    assert "Failed: needs attention" in listing and "exceeds the amount due" in listing
    viewer = personas.client(personas.viewer_a)
    changelist = reverse("admin:payments_halooutbox_changelist")
    viewer.post(changelist, {"action": "retry_now", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == "failed"  # viewers cannot retry

    halo.delete("InvoicePayment", cheque["id"])  # the partner refunds the cheque
    staff.post(changelist, {"action": "retry_now", "_selected_action": [row.pk]})

    row.refresh_from_db()
    assert row.status == "delivered"
    assert len(halo_payments(sim, payment.reference)) == 1


def test_no_connection_with_payments_on_waits(client, halo_tenant, sim):
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    halo_tenant.halo_connections.update(payments=False)
    payment = pay(client, invoice)
    row = HaloOutbox.objects.get(payment=payment)
    assert row.status == "pending" and "Payments switched on" in row.last_error
    halo_tenant.halo_connections.update(payments=True)
    make_due()
    assert outbox.deliver() == 1


def test_unknown_invoice_payment_lands_once_the_invoice_arrives(client, halo_tenant, sim):
    factories.invoice_sync_settings(halo_tenant, number_field=InvoiceNumberField.THIRD_PARTY)
    settings_for(halo_tenant, pay_unknown_invoices=True)
    record = next(i for i in sim.control.state("Invoice") if i["paymentstatus"] == 0)
    ref = record["thirdpartyinvoicenumber"]
    form = client.get(f"/pay/{halo_tenant.slug}/{ref}")
    data = card_form(form, amount=str(record["amountdue"]), ref=ref)
    client.post(f"/pay/{halo_tenant.slug}/-/pay", data)
    payment = Payment.objects.get()
    row = HaloOutbox.objects.get(payment=payment)
    assert row.status == "pending" and f"No invoice {ref} in the portal yet" in row.last_error

    sync(halo_tenant)
    make_due()
    assert outbox.deliver() == 1
    payment.refresh_from_db()
    assert payment.invoice.halo_id == record["id"]
    assert halo_invoice(sim, record["id"])["paymentstatus"] == 2


# -- refunds --------------------------------------------------------------------------------


def refund_in_admin(personas, payment):
    staff = personas.client(personas.owner_a)
    changelist = reverse("admin:payments_payment_changelist")
    data = {"action": "refund", "_selected_action": [payment.pk], "post": "yes"}
    return staff.post(changelist, data, follow=True)


def test_a_refund_removes_the_payment_from_halo(client, personas, halo_tenant, sim):
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    due = invoice.amount_due
    payment = pay(client, invoice)
    assert halo_invoice(sim, invoice.halo_id)["paymentstatus"] == 2

    page = refund_in_admin(personas, payment)

    assert "1 payment(s) refunded" in page.content.decode()
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("refunded", due)
    row = HaloOutbox.objects.get(payment=payment, kind="refund")
    assert row.status == "delivered"
    assert halo_payments(sim, payment.reference) == []
    record = halo_invoice(sim, invoice.halo_id)
    assert (Decimal(str(record["amountdue"])), record["paymentstatus"]) == (due, 0)
    invoice.refresh_from_db()
    assert (invoice.amount_due, invoice.amount_paid, invoice.payment_status) == (due, 0, "unpaid")
    assert 'type="submit"' in client.get(pay_url(invoice)).content.decode()  # payable again
    # Refunding again does nothing: the payment is no longer succeeded.
    assert "only succeeded payments" in refund_in_admin(personas, payment).content.decode()
    assert HaloOutbox.objects.filter(payment=payment, kind="refund").count() == 1


def test_viewers_cannot_refund(personas, halo_tenant, sim):
    payment = factories.payment(halo_tenant, status="succeeded", reference="test_ch_v")
    staff = personas.client(personas.viewer_a)
    data = {"action": "refund", "_selected_action": [payment.pk], "post": "yes"}
    staff.post(reverse("admin:payments_payment_changelist"), data)
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("succeeded", 0)


def test_partial_refunds_lower_halos_payment_and_repeats_change_nothing(client, halo_tenant, sim):
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    due = invoice.amount_due
    payment = pay(client, invoice)

    assert payment.refund(Decimal("20.00"), source="webhook", event_id="evt_a") is True
    assert payment.refund(Decimal("20.00"), source="webhook", event_id="evt_a") is False
    assert payment.refund(Decimal("10.00"), source="webhook") is False  # an older total

    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("succeeded", Decimal("20.00"))
    [recorded] = halo_payments(sim, payment.reference)
    assert Decimal(str(recorded["amount"])) == due - 20
    record = halo_invoice(sim, invoice.halo_id)
    assert (Decimal(str(record["amountdue"])), record["paymentstatus"]) == (Decimal(20), 1)
    invoice.refresh_from_db()
    assert (invoice.amount_due, invoice.payment_status) == (20, "partly_paid")
    assert "20.00 refunded (20.00 of" in payment.events.last().detail
    assert "Refunded to you" in client.get(payment.get_absolute_url()).content.decode()

    payment.refund(due, source="webhook")  # the rest
    assert halo_payments(sim, payment.reference) == []
    assert HaloOutbox.objects.filter(payment=payment, kind="refund").count() == 2


def test_a_refund_while_halo_is_down_lands_once_it_recovers(client, halo_tenant, sim, settings):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.2
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    payment = pay(client, invoice)
    sim.control.add_fault("500", path="InvoicePayment", times=10_000)

    payment.refund(payment.amount, source="webhook")

    row = HaloOutbox.objects.get(payment=payment, kind="refund")
    assert row.status == "pending" and "internal error" in row.last_error
    assert len(halo_payments(sim, payment.reference)) == 1
    sim.control.clear_faults()
    make_due()
    assert outbox.deliver() == 1
    assert halo_payments(sim, payment.reference) == []


def test_a_refund_waits_for_the_payment_it_corrects(halo_tenant, sim):
    """Halo may hold a payment whose answer was lost: the refund row waits for the retry,
    then removes it."""
    later = timezone.now() + timezone.timedelta(minutes=5)
    payment, record = sent_without_answer(halo_tenant, sim, "test_ch_lost", next_attempt=later)

    payment.refund(payment.amount, source="webhook")
    refund = HaloOutbox.objects.get(payment=payment, kind="refund")
    refund.refresh_from_db()
    assert refund.status == "pending" and "still on its way" in refund.last_error
    assert len(halo_payments(sim, "test_ch_lost")) == 1

    make_due()
    outbox.deliver()
    record.refresh_from_db()
    refund.refresh_from_db()
    assert record.status == "not_needed" and refund.status == "delivered"
    assert halo_payments(sim, "test_ch_lost") == []


def test_payments_are_filed_under_the_chosen_halo_method(client, halo_tenant, sim):
    settings_for(halo_tenant, halo_payment_method=7)
    invoice = unpaid_synced_invoice(halo_tenant, sim)
    payment = pay(client, invoice)
    [recorded] = halo_payments(sim, payment.reference)
    assert recorded["method"] == 7


def test_refunds_of_portal_invoices_outside_halo_correct_the_portal_copy(client, halo_tenant):
    invoice = factories.invoice(
        halo_tenant, source="portal", halo_id=None, posted=True, total=Decimal("50.00"),
        amount_due=Decimal("50.00"), currency="GBP",
    )  # fmt: skip
    payment = pay(client, invoice)
    invoice.refresh_from_db()
    assert (invoice.amount_due, invoice.payment_status) == (0, "paid")

    payment.refund(Decimal("15.00"), source="webhook")

    invoice.refresh_from_db()
    assert (invoice.amount_due, invoice.amount_paid) == (Decimal("15.00"), Decimal("35.00"))
    assert invoice.payment_status == "partly_paid"
    assert not HaloOutbox.objects.exists()
