"""Customers racing each other for one invoice, really at once (threads with their own
database connections): exactly one payment is taken and recorded."""

import threading

import pytest
from django.db import connection, connections

from billing.payments import checkout
from billing.payments.models import HaloOutbox, Payment
from billing.payments.processors import CardDetails
from billing.payments.processors.test import SUCCESS
from tests.payments.conftest import open_invoice

CARD = CardDetails(number=SUCCESS, exp_month=12, exp_year=2039, cvc="123")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("keys", [["tab"] * 6, [f"tab-{n}" for n in range(6)]])
def test_simultaneous_submits_take_one_payment(tenant, keys):
    """The same form six times (a frantic double click), or six tabs: one charge."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite's in-memory test database answers a simultaneous "
            "write with 'table is locked' instead of waiting"
        )
    invoice = open_invoice(tenant)
    barrier = threading.Barrier(len(keys))
    answers = []

    def submit(key):
        try:
            barrier.wait(10)
            answers.append(checkout.pay(tenant, invoice, key=key, card=CARD))
        except checkout.CannotPay as refusal:
            answers.append(refusal.message)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == len(keys)
    payment = Payment.objects.get()
    assert payment.status == "succeeded" and payment.amount == invoice.amount_due
    assert HaloOutbox.objects.filter(payment=payment).count() == 1
    refusals = [a for a in answers if isinstance(a, str)]
    if len(set(keys)) == 1:
        assert not refusals and {a.pk for a in answers} == {payment.pk}
    else:
        assert len(refusals) == len(keys) - 1
