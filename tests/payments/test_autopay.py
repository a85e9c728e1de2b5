"""Auto-pay: flagged invoices charged with the customer's saved card, once each, at most once
a day, retried per the tenant's settings; the forecast shows exactly what the run does."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

from billing.payments import autopay
from billing.payments.models import AutoPayAttempt, AutoPaySkip, Payment, PaymentSettings
from billing.payments.processors.test import DECLINE
from portal import ledger
from tests import factories
from tests.payments.conftest import open_invoice, settings_for

pytestmark = pytest.mark.django_db(transaction=True)
zone_utc = ZoneInfo("UTC")
TODAY = timezone.localdate()


@pytest.fixture
def rule(personas):
    return factories.autopay_rule(personas.tenant_a, subtype_name="Managed Services")


def flagged(tenant, rule, card="4242", agreed=None, **fields):
    """An auto-pay invoice of a customer who agreed to auto-pay (`agreed`; by default two
    months ago) before it was dated."""
    invoice = open_invoice(tenant, autopay_rule=rule, **fields)
    factories.saved_payment_method(
        tenant,
        customer=invoice.customer,
        last4=card,
        reference=f"test_pm_{card}_x",
        consented_at=agreed or timezone.now() - timedelta(days=60),
    )
    return invoice


def test_charges_each_flagged_invoice_once(personas, rule, mailoutbox):
    tenant = personas.tenant_a
    invoice = flagged(tenant, rule)

    [attempt] = autopay.run(tenant, TODAY)

    payment = attempt.payment
    assert (payment.kind, payment.status, payment.amount) == ("autopay", "succeeded", 120)
    assert [e.source for e in payment.events.all()] == ["autopay", "processor"]
    assert payment.payer_email == invoice.customer.billing_email
    assert mailoutbox[0].to == [invoice.customer.billing_email]  # the customer's receipt
    # Again today, tomorrow, next week: never charged twice.
    assert autopay.run(tenant, TODAY) == []
    assert autopay.run(tenant, TODAY + timedelta(days=1)) == []
    assert autopay.run(tenant, TODAY + timedelta(days=7)) == []
    assert Payment.objects.count() == 1


def test_failed_charges_retry_per_settings_and_email_the_tenant(personas, rule, mailoutbox):
    tenant = personas.tenant_a
    settings_for(tenant, autopay_retry_days=2, autopay_max_attempts=2)
    invoice = flagged(tenant, rule, card=DECLINE[-4:])

    [first] = autopay.run(tenant, TODAY)

    assert first.payment.status == "failed"
    staff, customer = mailoutbox
    assert staff.to == [personas.owner_a.email]
    assert "declined" in staff.body and invoice.display_number() in staff.subject
    assert "The customer was emailed too" in staff.body and "/account/" in staff.body
    # The customer hears too: pay now, or replace the card on the account page.
    assert customer.to == [invoice.customer.billing_email]
    assert customer.subject.startswith(
        f"We could not charge your card for invoice {invoice.display_number()}"
    )
    assert "Nothing was charged" in customer.body and "declined" in customer.body
    assert "/pay/" in customer.body and "/account/" in customer.body
    assert personas.owner_a.email not in customer.to  # staff addresses stay staff's

    def reason(day):
        [plan] = autopay.plan(tenant, day)
        return plan.skip

    assert reason(TODAY) == "Already tried today"
    assert reason(TODAY + timedelta(days=1)).startswith("Last charge failed; next try")
    assert autopay.run(tenant, TODAY + timedelta(days=1)) == []
    [second] = autopay.run(tenant, TODAY + timedelta(days=2))
    assert second.payment.status == "failed"
    assert reason(TODAY + timedelta(days=9)) == "Gave up after 2 failed charges"
    assert AutoPayAttempt.objects.count() == 2 and len(mailoutbox) == 4


def test_a_card_saved_after_auto_pay_gave_up_is_tried_afresh(personas, rule):
    """The emails tell the customer to replace the card: the new card gets its own number of
    attempts, not the old card's spent ones."""
    from billing.payments.models import SavedPaymentMethod

    tenant = personas.tenant_a
    settings_for(tenant, autopay_retry_days=1, autopay_max_attempts=1)
    invoice = flagged(tenant, rule, card=DECLINE[-4:])
    [failed] = autopay.run(tenant, TODAY)
    assert failed.payment.status == "failed"
    [plan] = autopay.plan(tenant, TODAY + timedelta(days=3))
    assert plan.skip == "Gave up after 1 failed charges"
    old = SavedPaymentMethod.objects.get(customer=invoice.customer, active=True)
    old.revoke()
    factories.saved_payment_method(
        tenant,
        customer=invoice.customer,
        reference="test_pm_4242_new",
        consented_at=timezone.now(),
        covers_from=old.first_covered_day(tenant.tz),
    )
    [plan] = autopay.plan(tenant, TODAY + timedelta(days=3))
    assert plan.charges and plan.method.last4 == "4242"


def test_at_most_one_attempt_per_invoice_per_day_in_the_database(personas, rule):
    invoice = flagged(personas.tenant_a, rule)
    factories.autopay_attempt(personas.tenant_a, invoice=invoice, day=TODAY)
    with pytest.raises(IntegrityError):
        factories.autopay_attempt(personas.tenant_a, invoice=invoice, day=TODAY)


def test_what_is_skipped_and_why(personas, rule):
    tenant = personas.tenant_a
    settings_for(tenant, autopay_charge_on=PaymentSettings.ChargeOn.DUE_DATE)
    due = flagged(tenant, rule, due_date=TODAY)
    later = flagged(tenant, rule, due_date=TODAY + timedelta(days=5))
    no_card = open_invoice(tenant, autopay_rule=rule, due_date=TODAY)
    in_flight = flagged(tenant, rule, due_date=TODAY)
    factories.payment(tenant, invoice=in_flight, status="pending")
    skipped = flagged(tenant, rule, due_date=TODAY)
    AutoPaySkip.objects.create(tenant=tenant, invoice=skipped, reason="Disputed")
    open_invoice(tenant, due_date=TODAY)  # not flagged: not in auto-pay at all

    plans = {plan.invoice: plan for plan in autopay.plan(tenant, TODAY)}

    assert len(plans) == 5
    assert plans[due].charges and plans[due].amount == due.amount_due
    assert plans[later].skip.startswith("Not due for auto-pay until")
    assert plans[no_card].skip == "No saved card: the customer has not agreed to auto-pay"
    assert plans[in_flight].skip == "A payment is in progress"
    assert plans[skipped].skip == "Skipped by staff: Disputed"
    assert [a.invoice for a in autopay.run(tenant, TODAY)] == [due]


def test_forecast_page_shows_the_next_run_and_skips_an_invoice(personas, rule):
    tenant = personas.tenant_a
    charged = flagged(tenant, rule)
    no_card = open_invoice(tenant, autopay_rule=rule)
    url = reverse("admin:payments_paymentsettings_autopay_forecast")
    staff = personas.client(personas.owner_a)

    page = staff.get(url)

    assert [row["plan"].invoice for row in page.context["charges"]] == [charged]
    assert [row["plan"].invoice for row in page.context["skips"]] == [no_card]
    body = page.content.decode()
    assert "Will charge (1)" in body and "No saved card" in body and "£120.00" in body

    viewer = personas.client(personas.viewer_a)
    assert viewer.get(url).status_code == 200
    assert viewer.post(url, {"invoice": charged.pk, "do": "skip"}).status_code == 403
    other = personas.client(personas.owner_b)
    assert other.post(url, {"invoice": charged.pk, "do": "skip"}).status_code == 404

    staff.post(url, {"invoice": charged.pk, "do": "skip", "reason": "Customer asked"})
    assert AutoPaySkip.objects.get(invoice=charged).created_by == personas.owner_a
    assert autopay.run(tenant, TODAY) == []
    staff.post(url, {"invoice": charged.pk, "do": "unskip"})
    assert [a.invoice for a in autopay.run(tenant, TODAY)] == [charged]


def test_daily_run_starts_at_the_tenants_hour_once(personas, rule, monkeypatch):
    tenant = personas.tenant_a
    tenant.time_zone = "America/New_York"
    tenant.save()
    settings_for(tenant, autopay_hour=9)
    agreed = datetime(2026, 2, 1, tzinfo=zone_utc)
    flagged(tenant, rule, agreed=agreed, invoice_date=datetime(2026, 3, 1).date())
    zone = ZoneInfo("America/New_York")

    def at(hour, minute=0):
        """The ledger's tick at that moment, and the workers running what it sent."""
        moment = datetime(2026, 3, 10, hour, minute, tzinfo=zone)
        monkeypatch.setattr(timezone, "now", lambda: moment)
        monkeypatch.setattr(ledger, "clock", lambda: moment)
        monkeypatch.setattr(ledger, "_jobs", {"autopay": ledger.jobs()["autopay"]})
        monkeypatch.setattr("portal.ledger.enqueue", lambda func, *args, **kw: func(*args))
        ledger.tick()
        return list(AutoPayAttempt.objects.values_list("day", flat=True))

    assert at(8, 0) == []  # the slot is planned
    assert at(8, 50) == []  # 13:50 in London, but not 9:00 in New York yet
    assert at(9, 0) == [datetime(2026, 3, 10).date()]
    assert at(9, 10) == at(15, 0) == [datetime(2026, 3, 10).date()]


def test_invoices_dated_before_the_consent_are_never_charged(personas, rule):
    """The consent reads "future invoices": paying one invoice and ticking the box must not
    charge the customer's older open invoices the next morning."""
    tenant = personas.tenant_a
    older = open_invoice(tenant, autopay_rule=rule, invoice_date=TODAY - timedelta(days=20))
    factories.saved_payment_method(tenant, customer=older.customer, consented_at=timezone.now())
    newer = open_invoice(
        tenant, autopay_rule=rule, customer=older.customer, invoice_date=TODAY + timedelta(days=1)
    )
    due = TODAY + timedelta(days=1)
    plans = {item.invoice: item for item in autopay.plan(tenant, due)}
    assert not plans[older].charges
    assert "Dated before the customer agreed to auto-pay" in plans[older].skip
    assert plans[newer].charges
    [attempt] = autopay.run(tenant, due)
    assert attempt.invoice == newer and Payment.objects.get().invoice == newer
