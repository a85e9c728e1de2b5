"""Sending: each step once, on its day, from the tenant's send hour in its time zone; never
twice across workers, re-runs and restarts; stopped for paid, voided and auto-pay invoices
and for customers who opted out."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone

from billing.models import Invoice
from billing.payments import display
from billing.payments.models import AutoPayAttempt, AutoPaySkip, Payment, PaymentSettings
from billing.reminders import dunning, emails
from billing.reminders.models import Reminder, ReminderOptOut, ReminderSettings
from tests import factories
from tests.reminders.conftest import DUE, at, open_invoice


def run_days(tenant, first, last, hour=10):
    """A run at `hour` on every day from `first` to `last` (days from DUE), twice a day."""
    for day in range(first, last + 1):
        dunning.send_due_reminders(tenant, at(day, hour))
        dunning.send_due_reminders(tenant, at(day, hour, 15))


def steps_sent(invoice):
    return sorted(
        Reminder.objects.filter(invoice=invoice, status=Reminder.Status.SENT).values_list(
            "step", flat=True
        )
    )


def test_default_schedule_sends_each_step_once_on_its_day(tenant, mailoutbox):
    invoice = open_invoice(tenant)
    run_days(tenant, -10, 30)

    assert steps_sent(invoice) == [-3, 1, 7, 14]
    assert len(mailoutbox) == 4
    days = dict(Reminder.objects.filter(invoice=invoice).values_list("step", "day"))
    assert days == {step: DUE + timedelta(days=step) for step in (-3, 1, 7, 14)}
    assert [m.to for m in mailoutbox] == [[invoice.customer.billing_email]] * 4
    assert [m.subject for m in mailoutbox] == [
        f"Invoice {invoice.display_number()} from Acme IT is due on {display.day(DUE, tenant)}",
        f"Reminder: invoice {invoice.display_number()} from Acme IT is overdue",
        f"Reminder: invoice {invoice.display_number()} from Acme IT is overdue",
        f"Final reminder: invoice {invoice.display_number()} from Acme IT is overdue",
    ]


def test_the_tenants_schedule_decides(tenant, mailoutbox):
    ReminderSettings.objects.filter(tenant=tenant).update(steps=[0, 30])
    invoice = open_invoice(tenant)
    run_days(tenant, -5, 40)
    assert steps_sent(invoice) == [0, 30]
    assert "is due today" in mailoutbox[0].subject


def test_nothing_before_the_send_hour_in_the_tenants_time_zone(tenant, mailoutbox):
    """09:00 in London and in Sydney are different instants."""
    sydney = factories.tenant("sydney")
    sydney.time_zone = "Australia/Sydney"
    sydney.save()
    ReminderSettings.objects.create(tenant=sydney, enabled=True)
    london_invoice = open_invoice(tenant, due=DUE)
    sydney_invoice = open_invoice(sydney, due=DUE)

    assert dunning.send_due_reminders(tenant, at(1, 8, 59)) == []
    assert dunning.send_due_reminders(sydney, at(1, 8, 59, tz="Australia/Sydney")) == []
    # 09:00 in London is 20:00 (summer: 18:00) in Sydney the same day: Sydney's reminder
    # is due by then; London's goes out at 09:00 London time.
    london_nine = at(1, 9)
    assert [r.invoice for r in dunning.send_due_reminders(tenant, london_nine)] == [london_invoice]
    assert [r.invoice for r in dunning.send_due_reminders(sydney, london_nine)] == [sydney_invoice]
    assert len(mailoutbox) == 2


def test_switched_off_sends_nothing(tenant, mailoutbox):
    ReminderSettings.objects.filter(tenant=tenant).update(enabled=False)
    open_invoice(tenant)
    run_days(tenant, -5, 20)
    assert not mailoutbox and not Reminder.objects.exists()


def test_a_missed_day_is_caught_up_but_old_steps_never_burst(tenant, mailoutbox):
    """Worker down on the day of step 1: it goes out the day after. Switched on 9 days late:
    only the latest step (7) goes, not 1 as well."""
    late = open_invoice(tenant)
    dunning.send_due_reminders(tenant, at(2))
    assert steps_sent(late) == [1]
    assert "is now 2 days overdue" in mailoutbox[0].body  # how late it really is

    ReminderSettings.objects.filter(tenant=tenant).update(enabled=False)
    switched_on_late = open_invoice(tenant, due=DUE + timedelta(days=20))
    ReminderSettings.objects.filter(tenant=tenant).update(enabled=True)
    dunning.send_due_reminders(tenant, at(20 + 9))
    assert steps_sent(switched_on_late) == [7]

    # A step more than CATCH_UP_DAYS late is not sent at all.
    forgotten = open_invoice(tenant, due=DUE + timedelta(days=40))
    dunning.send_due_reminders(tenant, at(40 + 14 + 3))
    assert steps_sent(forgotten) == []


def test_restart_and_rerun_send_nothing_twice(tenant, mailoutbox):
    invoice = open_invoice(tenant)
    first = dunning.send_due_reminders(tenant, at(1))
    # A restarted worker runs the same schedule again, the same minute and later that day.
    assert dunning.send_due_reminders(tenant, at(1)) == []
    assert dunning.send_due_reminders(tenant, at(1, 17)) == []
    assert [r.step for r in first] == [1]
    assert len(mailoutbox) == 1
    assert Reminder.objects.get(invoice=invoice).status == Reminder.Status.SENT


def test_two_workers_interleaved_send_once(tenant, mailoutbox, monkeypatch):
    """Worker A plans, worker B runs from start to end, then A goes on: A's claim finds B's
    row and sends nothing (any database: the unique constraint decides)."""
    open_invoice(tenant)
    open_invoice(tenant)
    real_plan = dunning.plan
    b_sent = []

    def plan_then_other_worker(*args, **kwargs):
        planned = real_plan(*args, **kwargs)
        if not b_sent:
            monkeypatch.setattr(dunning, "plan", real_plan)
            b_sent.extend(dunning.send_due_reminders(tenant, at(1)))
        return planned

    monkeypatch.setattr(dunning, "plan", plan_then_other_worker)
    a_sent = dunning.send_due_reminders(tenant, at(1))

    assert len(b_sent) == 2 and a_sent == []
    assert len(mailoutbox) == 2
    assert Reminder.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_each_step_once(tenant, mailoutbox):
    """Two threads with their own database connections run the same minute's schedule."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite's in-memory test database answers a simultaneous "
            "write with 'table is locked' instead of waiting"
        )
    invoices = [open_invoice(tenant) for _ in range(5)]
    barrier = threading.Barrier(2)
    claimed, errors = [], []

    def worker():
        try:
            barrier.wait(10)
            claimed.extend(dunning.send_due_reminders(tenant, at(1)))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert sorted(r.invoice_id for r in claimed) == sorted(i.pk for i in invoices)
    assert len(mailoutbox) == 5
    assert sorted(m.to[0] for m in mailoutbox) == sorted(i.customer.billing_email for i in invoices)
    assert Reminder.objects.filter(status=Reminder.Status.SENT).count() == 5


class WorkerDied(BaseException):
    """The process ends mid-send (a kill): no except clause of the portal catches it."""


def test_a_crash_between_claim_and_send_is_never_resent_by_itself(tenant, mailoutbox, monkeypatch):
    """At most once per step: the claim is committed before sending, so after a crash the
    step stays claimed ("sending"), is not sent again by the schedule, and shows as
    unconfirmed to staff after 15 minutes; staff may send it again, once."""
    invoice = open_invoice(tenant)

    def die(due, reminder=None):
        raise WorkerDied

    monkeypatch.setattr(emails, "send_reminder", die)
    with pytest.raises(WorkerDied):
        dunning.send_due_reminders(tenant, at(1))
    monkeypatch.undo()

    reminder = Reminder.objects.get(invoice=invoice)
    assert reminder.status == Reminder.Status.SENDING
    assert dunning.send_due_reminders(tenant, at(1, 11)) == []
    assert dunning.send_due_reminders(tenant, at(2)) == []
    assert not mailoutbox

    assert not Reminder.objects.need_attention(now=at(1, 10, 10)).exists()
    assert list(Reminder.objects.need_attention(now=at(1, 10, 16))) == [reminder]
    # Staff: send again. A second click (or a second worker) does nothing more.
    assert dunning.send_again(reminder, now=at(1, 10, 16)) is True
    reminder.refresh_from_db()
    assert dunning.send_again(reminder, now=at(1, 10, 17)) is False
    assert reminder.status == Reminder.Status.SENT and reminder.attempts == 2
    assert len(mailoutbox) == 1


def test_a_failed_send_is_kept_for_staff_not_retried(tenant, mailoutbox, monkeypatch):
    invoice = open_invoice(tenant)

    def refuse(due, reminder=None):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(emails, "send_reminder", refuse)
    dunning.send_due_reminders(tenant, at(1))
    monkeypatch.undo()
    dunning.send_due_reminders(tenant, at(1, 11))

    reminder = Reminder.objects.get(invoice=invoice)
    assert reminder.status == Reminder.Status.FAILED
    assert "Connection refused" in reminder.state
    assert list(Reminder.objects.need_attention(now=at(1, 11))) == [reminder]
    assert not mailoutbox
    assert dunning.send_again(reminder, now=at(1, 12))
    assert len(mailoutbox) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"payment_status": Invoice.PaymentStatus.PAID, "amount_due": Decimal(0)},
        {"voided": True},
        {"deleted_in_halo": True},
    ],
    ids=["paid", "voided", "deleted"],
)
def test_paid_or_voided_invoices_get_no_more(tenant, mailoutbox, change):
    invoice = open_invoice(tenant)
    run_days(tenant, -5, 3)
    assert steps_sent(invoice) == [-3, 1]
    Invoice.objects.filter(pk=invoice.pk).update(**change)
    run_days(tenant, 4, 30)
    assert steps_sent(invoice) == [-3, 1]
    assert len(mailoutbox) == 2


def test_paid_between_the_plan_and_the_send_is_cancelled(tenant, mailoutbox, monkeypatch):
    invoice = open_invoice(tenant)
    real_plan = dunning.plan

    def plan_then_paid(*args, **kwargs):
        planned = real_plan(*args, **kwargs)
        Invoice.objects.filter(pk=invoice.pk).update(payment_status="paid", amount_due=0)
        return planned

    monkeypatch.setattr(dunning, "plan", plan_then_paid)
    dunning.send_due_reminders(tenant, at(1))
    reminder = Reminder.objects.get(invoice=invoice)
    assert reminder.status == Reminder.Status.CANCELLED
    assert not mailoutbox


def test_a_payment_not_yet_in_halo_stops_them(tenant, mailoutbox):
    """Paid on the pay page, not recorded in Halo yet: Halo's invoice still says unpaid."""
    invoice = open_invoice(tenant)
    factories.payment(tenant, invoice=invoice, status=Payment.Status.SUCCEEDED)
    dunning.send_due_reminders(tenant, at(1))
    assert not mailoutbox
    (due,) = dunning.plan(tenant, DUE + timedelta(days=1))
    assert due.skip == "Paid; waiting to be recorded in Halo"


def test_partly_paid_invoices_are_reminded_of_what_is_left(tenant, mailoutbox):
    open_invoice(tenant, amount_due=Decimal("45.50"), payment_status="partly_paid")
    dunning.send_due_reminders(tenant, at(1))
    (message,) = mailoutbox
    assert "£45.50" in message.body and "Invoice total: £120.00" in message.body


def autopay_invoice(tenant, consented_days_before=40, **fields):
    PaymentSettings.for_tenant(tenant)
    rule = factories.autopay_rule(tenant)
    invoice = open_invoice(tenant, autopay_rule=rule, **fields)
    factories.saved_payment_method(
        tenant,
        customer=invoice.customer,
        consented_at=timezone.now() - timedelta(days=consented_days_before),
    )
    Invoice.objects.filter(pk=invoice.pk).update(
        invoice_date=timezone.localdate() - timedelta(days=consented_days_before - 5)
    )
    invoice.refresh_from_db()
    return invoice


def test_auto_pay_invoices_get_none(tenant, mailoutbox):
    autopay_invoice(tenant)
    run_days(tenant, -5, 20)
    assert not mailoutbox and not Reminder.objects.exists()
    (due,) = dunning.plan(tenant, DUE + timedelta(days=1))
    assert due.skip.startswith("Auto-pay will charge it")


def test_auto_pay_customers_other_invoices_are_reminded(tenant, mailoutbox):
    """The consent covers invoices auto-pay rules flag; nothing charges the others."""
    covered = autopay_invoice(tenant)
    other = open_invoice(tenant, customer=covered.customer)
    dunning.send_due_reminders(tenant, at(1))
    assert [r.invoice for r in Reminder.objects.all()] == [other]


def test_a_replacement_card_keeps_the_old_consents_invoices_free_of_reminders(tenant, mailoutbox):
    """A card saved to replace another (account page, "Replace this card") covers the
    invoices the old consent covered, so auto-pay charges them and no reminder goes."""
    covered = autopay_invoice(tenant, consented_days_before=40)  # dated 35 days ago
    from billing.payments.models import SavedPaymentMethod

    card = SavedPaymentMethod.objects.get(customer=covered.customer)
    card.consented_at = timezone.now()  # replaced today ...
    card.covers_from = timezone.localdate() - timedelta(days=40)  # ... keeping the old cover
    card.save()
    dunning.send_due_reminders(tenant, at(1))
    assert not Reminder.objects.exists()
    card.covers_from = None  # a first consent given today: the older invoice is reminded
    card.save()
    dunning.send_due_reminders(tenant, at(1))
    assert [r.invoice for r in Reminder.objects.all()] == [covered]


def test_reminders_resume_when_auto_pay_will_not_charge(tenant, mailoutbox):
    """Staff took the invoice out of auto-pay, or auto-pay gave up after its attempts."""
    skipped = autopay_invoice(tenant)
    AutoPaySkip.objects.create(tenant=tenant, invoice=skipped)
    gave_up = autopay_invoice(tenant)
    for day in range(3):
        payment = factories.payment(tenant, invoice=gave_up, status=Payment.Status.FAILED)
        AutoPayAttempt.objects.create(
            tenant=tenant, invoice=gave_up, day=DUE - timedelta(days=day), payment=payment
        )
    dunning.send_due_reminders(tenant, at(1))
    assert sorted(r.invoice_id for r in Reminder.objects.all()) == sorted([skipped.pk, gave_up.pk])


def test_opted_out_customers_get_none(tenant, mailoutbox):
    quiet = open_invoice(tenant)
    ReminderOptOut.objects.create(tenant=tenant, customer=quiet.customer)
    other = open_invoice(tenant)
    run_days(tenant, -5, 20)
    assert {r.invoice for r in Reminder.objects.all()} == {other}
    assert all(m.to == [other.customer.billing_email] for m in mailoutbox)


def test_no_address_no_customer_no_due_date_or_draft_sends_nothing(tenant, mailoutbox):
    open_invoice(tenant, customer=factories.customer(tenant, billing_email=""))
    open_invoice(tenant, customer=None)
    factories.invoice(tenant, customer=factories.customer(tenant), due_date=None)
    open_invoice(tenant, source=Invoice.Source.PORTAL, posted=False, halo_id=None)
    run_days(tenant, -5, 20)
    assert not mailoutbox and not Reminder.objects.exists()
    reasons = {due.skip for due in dunning.plan(tenant, DUE + timedelta(days=1))}
    assert reasons == {"No customer on the invoice", "The customer has no billing email in Halo"}


def test_other_tenants_invoices_are_not_touched(tenant, mailoutbox):
    other = factories.tenant("other")
    ReminderSettings.objects.create(tenant=other, enabled=True)
    theirs = open_invoice(other)
    mine = open_invoice(tenant)
    dunning.send_due_reminders(tenant, at(1))
    assert [r.invoice for r in Reminder.objects.all()] == [mine]
    assert theirs.customer.billing_email not in {m.to[0] for m in mailoutbox}


def test_a_long_run_leaves_the_rest_to_the_next(tenant, mailoutbox):
    """A run stops claiming after its time budget (the worker's task timeout would kill it
    mid-send); the next run, 15 minutes later, sends the rest."""
    invoices = [open_invoice(tenant) for _ in range(3)]
    ticks = iter([0, 1, dunning.RUN_BUDGET_SECONDS + 1])

    def clock():
        return next(ticks, 10**6)

    first = dunning.send_due_reminders(tenant, at(1), clock=clock)
    assert len(first) == 1
    rest = dunning.send_due_reminders(tenant, at(1, 10, 15))
    assert sorted(r.invoice_id for r in first + rest) == sorted(i.pk for i in invoices)
    assert len(mailoutbox) == 3
