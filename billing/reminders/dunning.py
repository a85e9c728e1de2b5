"""Which reminders go out when, and sending them.

`plan(tenant, day)` decides for every open invoice of the tenant which step of the schedule is
due on `day` and whether it can go (or why not); `send_due_reminders` sends exactly what it
says, and the preview shows it for tomorrow, so what staff see is what happens.

A step is due on its day (due date + its offset). One the portal could not send then (the
worker was down, reminders were just switched on) still goes `CATCH_UP_DAYS` later, unless a
later step is due by then: a customer gets the latest reminder, never a burst of old ones.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.utils import timezone

from billing.models import Invoice
from billing.payments import autopay
from billing.payments.models import (
    AutoPayAttempt,
    Balance,
    Payment,
    PaymentSettings,
    SavedPaymentMethod,
)
from billing.reminders.models import (
    CATCH_UP_DAYS,
    Reminder,
    ReminderSettings,
    step_label,
)
from portal.models import Tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    """One invoice's step due on `day`; `skip` says why it does not go out ("" when it does)."""

    invoice: Invoice
    step: int
    day: date
    to: str = ""
    skip: str = ""
    final: bool = False  # the schedule's last step after the due date

    @property
    def goes_out(self):
        return not self.skip

    @property
    def key(self):
        return (self.invoice.pk, self.step)

    @property
    def step_label(self):
        return step_label(self.step)

    @property
    def offset(self):
        """Days from the due date to the day it goes out: the step's, unless caught up late
        (the email says how late the invoice really is)."""
        return (self.day - self.invoice.due_date).days


def current_step(steps, due_date, day):
    """The latest step of `steps` (sorted) whose day has come by `day`, if still within its
    catch-up days; else None."""
    latest = None
    for step in steps:
        if due_date + timedelta(days=step) <= day:
            latest = step
    if latest is None or (day - due_date - timedelta(days=latest)).days > CATCH_UP_DAYS:
        return None
    return latest


def plan(tenant: Tenant, day: date, done=frozenset()) -> list[Due]:
    """Every step due on `day` and not sent yet (nor in `done`: keys of steps to count as
    sent, for the preview), with why it cannot go when it cannot."""
    settings = ReminderSettings.for_tenant(tenant)
    steps = settings.sorted_steps()
    if not steps:
        return []
    earliest = day - timedelta(days=steps[-1] + CATCH_UP_DAYS)
    latest = day - timedelta(days=steps[0])
    invoices = (
        Invoice.objects.filter(tenant=tenant, due_date__range=(earliest, latest))
        .unpaid()
        .exclude(source=Invoice.Source.PORTAL, posted=False)  # drafts
        .select_related("tenant__invoice_sync_settings", "customer__reminder_opt_out")
        .order_by("due_date", "pk")
    )
    candidates = []
    for invoice in invoices:
        step = current_step(steps, invoice.due_date, day)
        if step is not None:
            candidates.append((invoice, step))
    if not candidates:
        return []
    sent = set(
        Reminder.objects.filter(invoice__in=[invoice for invoice, _ in candidates]).values_list(
            "invoice_id", "step"
        )
    )
    autopay = AutoPayCover(tenant, [invoice for invoice, _ in candidates])
    final = steps[-1] if steps[-1] > 0 else None
    found = []
    for invoice, step in candidates:
        if (invoice.pk, step) in sent or (invoice.pk, step) in done:
            continue
        invoice.tenant = tenant
        customer = invoice.customer
        to = customer.billing_email if customer else ""
        found.append(
            Due(
                invoice,
                step,
                day,
                to=to,
                skip=_why_not(invoice, to, autopay),
                final=step == final,
            )
        )
    return found


def _why_not(invoice, to, autopay):
    customer = invoice.customer
    if customer is None:
        return "No customer on the invoice"
    if not to:
        return "The customer has no billing email in Halo"
    if hasattr(customer, "reminder_opt_out"):
        return "The customer opted out of reminders"
    if reason := autopay.covers(invoice):
        return reason
    balance = Balance(invoice)
    if balance.in_flight is not None:
        return "A payment is in progress"
    if balance.due <= 0:
        return "Paid; waiting to be recorded in Halo"
    return ""


class AutoPayCover:
    """Whether auto-pay will charge an invoice (then no reminder: the customer has agreed to
    be charged). Only invoices an auto-pay rule flags, with the customer's active consent
    given by the invoice date, that staff have not taken out of auto-pay and that auto-pay has
    not given up on; a customer's other invoices still get reminders."""

    def __init__(self, tenant, invoices):
        flagged = [invoice for invoice in invoices if invoice.autopay_rule_id is not None]
        self.methods, self.failures, self.skipped = {}, {}, set()
        # Auto-pay runs only for tenants with payment settings and a working processor.
        self.settings = PaymentSettings.objects.filter(tenant=tenant).first() if flagged else None
        if self.settings is None or self.settings.processor_impl().unavailable_reason():
            self.settings = None
            return
        self.methods = {
            method.customer_id: method
            for method in SavedPaymentMethod.objects.active().filter(
                tenant=tenant, customer__in={i.customer_id for i in flagged}
            )
        }
        # Failed charges on the customer's current card, counted as auto-pay counts them.
        attempts = defaultdict(list)
        for attempt in AutoPayAttempt.objects.filter(
            invoice__in=flagged, payment__status=Payment.Status.FAILED
        ).select_related("payment"):
            attempts[attempt.invoice_id].append(attempt)
        self.failures = {
            invoice.pk: len(
                autopay.failed_days(attempts[invoice.pk], self.methods.get(invoice.customer_id))
            )
            for invoice in flagged
        }
        self.skipped = set(
            Invoice.objects.filter(
                pk__in=[i.pk for i in flagged], autopay_skip__isnull=False
            ).values_list("pk", flat=True)
        )

    def covers(self, invoice):
        """Why no reminder goes because auto-pay will charge it, or ""."""
        if self.settings is None or invoice.autopay_rule_id is None:
            return ""
        if autopay.why_not_covered(
            self.settings,
            invoice,
            self.methods.get(invoice.customer_id),
            skipped=invoice.pk in self.skipped,
            failures=self.failures.get(invoice.pk, 0),
        ):
            return ""
        return "Auto-pay will charge it (the customer's saved card)"


#: A run stops claiming after this long and leaves the rest to the next run (15 minutes
#: later), well inside the worker's task timeout, which would kill it mid-send.
RUN_BUDGET_SECONDS = 600


def send_due_reminders(
    tenant: Tenant, now: datetime | None = None, clock=time.monotonic
) -> list[Reminder]:
    """Send the reminders due at `now` (from the send hour of the tenant's day); answers the
    reminders this call claimed. Idempotent: run it as often as you like, from as many
    workers: each step is claimed once (`Reminder.claim`) before it is sent."""
    from billing.reminders import emails

    now = now or timezone.now()
    settings = ReminderSettings.for_tenant(tenant)
    day = settings.day_due(now)
    if day is None:
        return []
    claimed = []
    stop_at = clock() + RUN_BUDGET_SECONDS
    for due in plan(tenant, day):
        if not due.goes_out:
            continue
        if clock() > stop_at:
            log.info("Reminders of tenant %s: the rest go out with the next run", tenant.pk)
            break
        reminder = Reminder.claim(due, now)
        if reminder is None:
            continue  # another worker, or an earlier run, has it
        claimed.append(reminder)
        deliver(reminder, due, emails.send_reminder)
    return claimed


def deliver(reminder, due, send):
    """Send a claimed reminder, unless the invoice was paid, voided or opted out since the
    plan was made (then it is cancelled with why); a failure is kept for staff."""
    invoice = (
        Invoice.objects.select_related("tenant__invoice_sync_settings", "customer")
        .filter(pk=reminder.invoice_id)
        .first()
    )
    if invoice is None or not invoice.is_open:
        reminder.finish(Reminder.Status.CANCELLED, "The invoice was paid or voided first")
        return
    fresh = Due(invoice, due.step, due.day, to=due.to, final=due.final)
    again = plan_one(fresh)
    if again.skip:
        reminder.finish(Reminder.Status.CANCELLED, again.skip)
        return
    try:
        send(again, reminder)
    except Exception as error:
        log.exception("Reminder %s of invoice %s not sent", reminder.pk, invoice.pk)
        reminder.finish(Reminder.Status.FAILED, f"{type(error).__name__}: {error}")
        return
    reminder.finish(Reminder.Status.SENT, to=again.to)


def plan_one(due):
    """`due` checked again against the invoice as it is now."""
    customer = due.invoice.customer
    to = customer.billing_email if customer else ""
    skip = _why_not(due.invoice, to, AutoPayCover(due.invoice.tenant, [due.invoice]))
    return Due(due.invoice, due.step, due.day, to=to, skip=skip, final=due.final)


def send_again(reminder: Reminder, now: datetime | None = None) -> bool:
    """Staff's decision to send a failed or unconfirmed reminder once more (the customer may
    get it twice if the unconfirmed one went out); answers whether it was tried."""
    from billing.reminders import emails

    now = now or timezone.now()
    if not reminder.reclaim(now):
        return False
    steps = ReminderSettings.for_tenant(reminder.tenant).sorted_steps()
    due = Due(
        reminder.invoice,
        reminder.step,
        reminder.day,
        to=reminder.to,
        final=bool(steps) and reminder.step == steps[-1] and reminder.step > 0,
    )
    deliver(reminder, due, emails.send_reminder)
    return True


@dataclass(frozen=True)
class Preview:
    today: date
    tomorrow: date
    pending_today: list[Due]  # due today and not sent yet (before the send hour, or failing)
    tomorrow_due: list[Due]

    @property
    def tomorrow_sends(self):
        return [due for due in self.tomorrow_due if due.goes_out]

    @property
    def tomorrow_skips(self):
        return [due for due in self.tomorrow_due if not due.goes_out]


def preview(tenant: Tenant, now: datetime | None = None) -> Preview:
    """What goes out tomorrow (the tenant's day), counting today's reminders as sent: they go
    out today, so they are not tomorrow's."""
    now = now or timezone.now()
    today = now.astimezone(tenant.tz).date()
    pending = plan(tenant, today)
    tomorrow = today + timedelta(days=1)
    going_today = frozenset(due.key for due in pending if due.goes_out)
    return Preview(today, tomorrow, pending, plan(tenant, tomorrow, done=going_today))
