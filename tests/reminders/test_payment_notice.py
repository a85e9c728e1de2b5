"""The staff email when a payment lands: off by default; on, one email per payment to the
owners or the listed addresses, however often the success is reported or the task runs."""

import pytest

from billing.payments import checkout
from billing.payments.models import Payment, PaymentEvent
from billing.payments.processors import CardDetails
from billing.payments.processors.test import SUCCESS
from billing.reminders import tasks
from billing.reminders.models import PaymentNotice, ReminderSettings
from portal.models import Membership
from tests.conftest import make_staff
from tests.reminders.conftest import BASE_URL, open_invoice

CARD = CardDetails(number=SUCCESS, exp_month=12, exp_year=2039, cvc="123")


@pytest.fixture
def owners(tenant):
    make_staff("owner-1", tenant, Membership.Role.OWNER)
    make_staff("owner-2", tenant, Membership.Role.OWNER)
    make_staff("viewer-1", tenant, Membership.Role.VIEWER)
    return ["owner-1@example.com", "owner-2@example.com"]


def notices(mailoutbox):
    return [m for m in mailoutbox if m.subject.startswith("Payment received")]


def portal_invoice(tenant):
    """A portal invoice Halo does not hold: a payment is recorded on it at once."""
    return open_invoice(tenant, source="portal", halo_id=None, invoice_number="P-0042")


@pytest.fixture
def pay(tenant, tasks_inline, django_capture_on_commit_callbacks):
    """Pay an invoice on its pay page, the queued tasks (receipt, staff email) run after."""

    def pay(invoice, key="tab", card=CARD):
        with django_capture_on_commit_callbacks(execute=True):
            return checkout.pay(tenant, invoice, key=key, card=card, payer_email="p@example.com")

    return pay


def test_off_by_default(tenant, owners, mailoutbox, pay):
    ReminderSettings.objects.filter(tenant=tenant).update(enabled=False)
    payment = pay(portal_invoice(tenant))
    assert payment.status == Payment.Status.SUCCEEDED
    assert [m.subject for m in mailoutbox if "Receipt" in m.subject]  # the payer's receipt
    assert not notices(mailoutbox) and not PaymentNotice.objects.exists()
    assert ReminderSettings._meta.get_field("payment_notices").default is False


def test_owners_get_one_email_per_payment(
    tenant, owners, mailoutbox, pay, django_capture_on_commit_callbacks
):
    ReminderSettings.objects.filter(tenant=tenant).update(payment_notices=True)
    invoice = portal_invoice(tenant)
    payment = pay(invoice)

    (message,) = notices(mailoutbox)
    assert sorted(message.to) == owners
    expected = f"Payment received: £120.00 from {invoice.customer} for invoice P-0042"
    assert message.subject == expected
    assert f"{BASE_URL}/admin/payments/payment/{payment.pk}/change/" in message.body
    assert "Pay page, Visa ending 4242" in message.body
    assert payment.public_id not in message.body + message.alternatives[0][0]

    # The success reported again, the same form resubmitted, the task run again: no more.
    with django_capture_on_commit_callbacks(execute=True):
        payment.move(Payment.Status.SUCCEEDED, source=PaymentEvent.Source.WEBHOOK)
    assert pay(invoice).pk == payment.pk
    assert tasks.send_payment_notice(payment.pk) is False
    assert len(notices(mailoutbox)) == 1
    assert PaymentNotice.objects.get().status == PaymentNotice.Status.SENT


def test_a_list_of_addresses(tenant, owners, mailoutbox, pay):
    ReminderSettings.objects.filter(tenant=tenant).update(
        payment_notices=True,
        payment_notice_to=ReminderSettings.Recipients.LIST,
        payment_notice_emails="accounts@acme.example;\nCFO <cfo@acme.example>",
    )
    pay(portal_invoice(tenant))
    (message,) = notices(mailoutbox)
    assert message.to == ["accounts@acme.example", "cfo@acme.example"]


def test_a_failed_payment_sends_none(tenant, owners, mailoutbox, pay):
    from billing.payments.processors.test import DECLINE

    ReminderSettings.objects.filter(tenant=tenant).update(payment_notices=True)
    declined = CardDetails(number=DECLINE, exp_month=12, exp_year=2039, cvc="123")
    payment = pay(portal_invoice(tenant), card=declined)
    assert payment.status == Payment.Status.FAILED
    assert not notices(mailoutbox)


def test_a_mail_failure_is_recorded_not_repeated(tenant, owners, monkeypatch, mailoutbox, queued):
    """At most once here too: a failed send is kept with its error for staff."""
    ReminderSettings.objects.filter(tenant=tenant).update(payment_notices=True)
    payment = checkout.pay(tenant, portal_invoice(tenant), key="k", card=CARD)

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("billing.reminders.emails.send_payment_notice", refuse)
    assert tasks.send_payment_notice(payment.pk) is False
    notice = PaymentNotice.objects.get()
    assert notice.status == PaymentNotice.Status.FAILED and "refused" in notice.error
    monkeypatch.undo()
    assert tasks.send_payment_notice(payment.pk) is False
    assert not notices(mailoutbox)
