"""django-q2 entry points of payments, and the schedules that sweep up after them."""

import logging
from datetime import date

from django.utils import timezone
from django_q.models import Schedule

from billing.payments import autopay, checkout, emails, enumeration, outbox
from billing.payments.models import Payment, PaymentEvent, PaymentSettings
from portal.jobs import enqueue
from portal.models import Tenant
from portal.schedules import register

log = logging.getLogger(__name__)


def deliver_outbox(ids=None):
    return outbox.deliver(ids)


def send_receipt(payment_id):
    payment = Payment.objects.select_related("tenant", "invoice").get(pk=payment_id)
    payment.learn_card()
    emails.send_receipt(payment)


def send_autopay_failure(payment_id):
    emails.send_autopay_failure(
        Payment.objects.select_related("tenant", "invoice__customer").get(pk=payment_id)
    )


def send_pay_link_alert(alert_id):
    return enumeration.email_owners(alert_id)


def add_pay_links(tenant_id):
    """Queue and write the pay links of a tenant's unpaid invoices (admin action, sweep)."""
    queued = outbox.queue_pay_links(Tenant.objects.get(pk=tenant_id))
    return queued and outbox.deliver()


def add_pay_links_everywhere():
    """Every few minutes: new invoices get their pay link (in Halo for tenants with pay
    buttons on; on the portal's own invoices for every tenant taking payments)."""
    for settings in PaymentSettings.objects.select_related("tenant"):
        outbox.link_portal_invoices(settings.tenant)
        if settings.halo_pay_buttons:
            outbox.queue_pay_links(settings.tenant)
    return outbox.deliver()


def start_autopay_runs():
    """Start each tenant's daily run once its hour has come (in its own time zone)."""
    now = timezone.now()
    for settings in PaymentSettings.objects.select_related("tenant"):
        day = settings.autopay_day_due(now)
        if day and settings.claim_autopay_run(day):
            enqueue(run_autopay, settings.tenant_id, day.isoformat())


def run_autopay(tenant_id, day):
    attempts = autopay.run(Tenant.objects.get(pk=tenant_id), date.fromisoformat(day))
    return len(attempts)


def close_stale_payments():
    """Release invoices whose payment never got going, or whose hosted checkout outlived
    its expiry without the processor's webhook saying so."""
    for payment in Payment.objects.abandoned():
        payment.move(
            Payment.Status.FAILED,
            source=PaymentEvent.Source.SYSTEM,
            detail="no answer from the processor",
            failure_code="abandoned",
            failure_message="This payment was not completed. Nothing was charged.",
        )
    for payment in Payment.objects.stale_checkouts().select_related("tenant"):
        checkout.close_checkout(payment)


register(
    "payments.deliver_outbox",
    "billing.payments.tasks.deliver_outbox",
    schedule_type=Schedule.MINUTES,
    minutes=1,
    repeats=-1,
)
register(
    "payments.add_pay_links",
    "billing.payments.tasks.add_pay_links_everywhere",
    schedule_type=Schedule.MINUTES,
    minutes=5,
    repeats=-1,
)
register(
    "payments.autopay",
    "billing.payments.tasks.start_autopay_runs",
    schedule_type=Schedule.MINUTES,
    minutes=10,
    repeats=-1,
)
register(
    "payments.close_stale_payments",
    "billing.payments.tasks.close_stale_payments",
    schedule_type=Schedule.MINUTES,
    minutes=10,
    repeats=-1,
)
