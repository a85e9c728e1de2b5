"""Worker entry points of reminders, their job on the run ledger, and the hook on landed
payments."""

import logging
from datetime import timedelta

from django.dispatch import receiver
from django.utils import timezone

from billing.payments.models import Payment
from billing.payments.signals import payment_succeeded
from billing.reminders import dunning, emails
from billing.reminders.models import PaymentNotice, Reminder, ReminderSettings
from portal import ledger
from portal.jobs import enqueue
from portal.models import Tenant

log = logging.getLogger(__name__)


def start_reminder_runs(now=None):
    """Every 15 minutes: each tenant with reminders on and past its send hour (in its own
    time zone) gets a run; runs are idempotent, so a repeat or an overlap sends nothing
    twice, and invoices synced later in the day still get theirs."""
    now = now or timezone.now()
    started = 0
    for settings in ReminderSettings.objects.filter(enabled=True).select_related("tenant"):
        if settings.day_due(now) is not None:
            enqueue(send_tenant_reminders, settings.tenant_id)
            started += 1
    return started


def send_tenant_reminders(tenant_id):
    return len(dunning.send_due_reminders(Tenant.objects.get(pk=tenant_id)))


def send_reminder_again(reminder_id):
    reminder = Reminder.objects.select_related("tenant", "invoice__customer").get(pk=reminder_id)
    return dunning.send_again(reminder)


@receiver(payment_succeeded, dispatch_uid="reminders.payment_landed")
def payment_landed(sender, payment, **kwargs):
    """Inside the transaction that records the success: queue the staff email with it, for
    tenants that want one."""
    if ReminderSettings.objects.filter(tenant_id=payment.tenant_id, payment_notices=True).exists():
        enqueue(send_payment_notice, payment.pk)


def send_payment_notice(payment_id):
    """Once per payment (claimed first, like reminders); answers whether it was sent."""
    payment = Payment.objects.select_related("tenant", "invoice__customer").get(pk=payment_id)
    options = ReminderSettings.for_tenant(payment.tenant)
    if not options.payment_notices:
        return False
    to = options.notice_recipients()
    if not to:
        log.warning("Payment email of tenant %s: nobody to send it to", payment.tenant_id)
        return False
    notice = PaymentNotice.claim(payment)
    if notice is None:
        return False  # sent (or being sent) already
    notice.to = ", ".join(to)
    try:
        emails.send_payment_notice(payment, to)
    except Exception as error:
        log.exception("Payment email of payment %s not sent", payment.pk)
        notice.status = PaymentNotice.Status.FAILED
        notice.error = f"{type(error).__name__}: {error}"[:500]
    else:
        notice.status = PaymentNotice.Status.SENT
    notice.save(update_fields=["to", "status", "error"])
    return notice.status == PaymentNotice.Status.SENT


# On the durable run ledger: a fleet-wide sweep every 15 minutes (each tenant's sends are
# idempotent, so a sweep lost with a worker is made good by the next one).
ledger.register(
    ledger.Job(
        name="reminders",
        label="Payment reminders",
        run=lambda row: f"{start_reminder_runs()} tenant(s) with reminders due",
        next_slot=ledger.every(15),
        retry_for=timedelta(minutes=15),
    )
)
