"""django-q2 entry points of payments, and the schedules that sweep up after them."""

import logging
from datetime import date, timedelta

from django.dispatch import receiver
from django.utils import timezone

from billing.payments import autopay, card_setup, checkout, emails, enumeration, outbox, signals
from billing.payments.models import CardSetup, Payment, PaymentEvent, PaymentSettings
from portal import ledger
from portal.jobs import enqueue
from portal.models import Tenant

log = logging.getLogger(__name__)


def deliver_outbox(ids=None):
    return outbox.deliver(ids)


# What the models announce, queued here (the models do not import this module).
@receiver(signals.outbox_row_written, dispatch_uid="payments.deliver_written_row")
def _deliver_written_row(sender, row_id, **kwargs):
    enqueue(deliver_outbox, [row_id])


@receiver(signals.payment_succeeded, dispatch_uid="payments.send_receipt")
def _send_receipt_of(sender, payment, **kwargs):
    enqueue(send_receipt, payment.pk)


@receiver(signals.autopay_failed, dispatch_uid="payments.send_autopay_failure")
def _tell_autopay_failure(sender, payment, **kwargs):
    enqueue(send_autopay_failure, payment.pk)


@receiver(signals.card_saved, dispatch_uid="payments.send_card_saved")
def _tell_card_saved(sender, setup, **kwargs):
    enqueue(send_card_saved, setup.pk)


def send_card_saved(setup_id):
    emails.send_card_saved(
        CardSetup.objects.select_related("tenant", "customer", "saved").get(pk=setup_id)
    )


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


def autopay_subjects():
    return [(s.tenant_id, s) for s in PaymentSettings.objects.select_related("tenant")]


def autopay_next_slot(settings, after):
    """Each tenant's daily run at its auto-pay hour, in its own time zone."""
    return ledger.daily_at(settings.autopay_hour, settings.tenant.tz, after)


def run_autopay_slot(row):
    """A tenant's daily auto-pay run (the ledger's job). Charging is exactly-once per
    invoice and day by itself (AutoPayAttempt), so a run resumed after its worker died
    charges only what the first attempt had not reached."""
    settings = PaymentSettings.for_tenant(row.tenant)
    day = timezone.localtime(row.slot, row.tenant.tz).date()
    settings.claim_autopay_run(day)  # the forecast's "ran today" marker
    attempts = autopay.run(row.tenant, day)
    return f"{len(attempts)} invoice(s) charged or tried"


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
    for setup in CardSetup.objects.stale().select_related("tenant"):
        try:  # one that cannot be closed (say, a key that no longer decrypts) stops no other
            card_setup.cancel(setup, card_setup.EXPIRED, wait_for_answer=True)
        except Exception:
            log.exception("Card setup %s could not be closed", setup.pk)


ledger.register(
    ledger.Job(
        name="halo_outbox",
        label="Halo outbox (payments and pay links written to Halo)",
        run=lambda row: f"{outbox.deliver() or 0} delivered",
        next_slot=ledger.every(1),
        retry_for=timedelta(minutes=1),
    )
)
ledger.register(
    ledger.Job(
        name="pay_links",
        label="Pay links for new invoices",
        run=lambda row: f"{add_pay_links_everywhere() or 0} delivered",
        next_slot=ledger.every(5),
        retry_for=timedelta(minutes=5),
    )
)
ledger.register(
    ledger.Job(
        name="autopay",
        label="Auto-pay",
        run=run_autopay_slot,
        next_slot=autopay_next_slot,
        subjects=autopay_subjects,
    )
)
ledger.register(
    ledger.Job(
        name="stale_payments",
        label="Payments left without an answer",
        run=lambda row: close_stale_payments() or "",
        next_slot=ledger.every(10),
        retry_for=timedelta(minutes=10),
    )
)
