"""Saving a card for auto-pay without paying anything: the account page's "Replace card" and
"Set up auto-pay" (`card_pages` shows the form and the result).

The processor checks the card (the test processor's card form; Stripe Checkout in setup
mode) and only a card it accepted is saved, replacing the customer's card
(`SavedPaymentMethod.replace`). One setup per rendered form (`idempotency_key`), so a
double submit opens one Checkout; the processor call happens outside any transaction.

Stripe's answer is read from its API (the secret key authenticates it), when the customer
comes back and when its signed `checkout.session.*` webhook names the setup, whichever
comes first: `CardSetup.finish` applies it once.
"""

import logging

from django.db import IntegrityError, transaction

from billing.payments import display
from billing.payments.checkout import CannotPay
from billing.payments.models import CardSetup, PaymentSettings, ProcessorEvent
from billing.payments.processors import Outcome, ProcessorError
from portal.jobs import enqueue

log = logging.getLogger(__name__)

UNAVAILABLE = "Cards cannot be saved online right now. Please contact us to set up auto-pay."
UNREACHABLE = "We could not reach the card processor. Nothing changed: try again shortly."
CANCELLED = "You left the card form before the card was saved. Nothing changed."
EXPIRED = "The card form expired before the card was saved. Nothing changed."


class CannotSetUp(CannotPay):
    """No card may be saved now; `message` says why, for the customer (as a payment's)."""


def consent_text(tenant, customer=None, covers_from=None):
    """What a customer agrees to by saving a card for auto-pay, here or on a pay page. A
    card that replaces another keeps covering what the replaced card's consent covered
    (`covers_from`); otherwise the consent covers invoices dated from today on."""
    contact = tenant.support_email or tenant.support_phone or tenant.brand_name
    dated = (
        f"dated from {display.day(covers_from, tenant)} (when auto-pay was first agreed)"
        if covers_from
        else "dated from today (not earlier ones)"
    )
    whose = f"{customer.name}'s" if customer else "my organisation's"
    return (
        f"I authorise {tenant.brand_name} to charge this card for {whose} invoices {dated} "
        f"that are set to auto-pay, for the amount due on each, until I withdraw this consent "
        f"by removing the card on my account page or by contacting {contact}."
    )


def current_card(customer):
    return customer.saved_payment_methods.active().first()


def covered_from(customer):
    """The first invoice date the customer's current card covers, which a replacement
    keeps; None without a card."""
    card = current_card(customer)
    return card.first_covered_day(customer.tenant.tz) if card is not None else None


def start(customer, *, key, card=None, consent_email="", client_ip=None, urls):
    """The setup this form (`key`) started, new or replayed. `urls(setup)` answers the
    (return, cancel) addresses for a hosted form. Raises `CannotSetUp`."""
    options = PaymentSettings.for_tenant(customer.tenant)
    processor = options.processor_impl()
    if processor.unavailable_reason():
        raise CannotSetUp(UNAVAILABLE)
    covers_from = covered_from(customer)
    try:
        with transaction.atomic():
            setup = CardSetup.objects.create(
                tenant=customer.tenant,
                customer=customer,
                idempotency_key=key,
                processor=processor.name,
                consent_text=consent_text(customer.tenant, customer, covers_from),
                consent_email=consent_email,
                client_ip=client_ip or None,
                covers_from=covers_from,
            )
    except IntegrityError:
        replay = CardSetup.objects.filter(idempotency_key=key, customer=customer).first()
        if replay is None:
            raise CannotSetUp("This form has expired. Please reload the page.") from None
        return replay
    return_url, cancel_url = urls(setup)
    try:
        outcome = processor.start_setup(
            setup, card=card, return_url=return_url, cancel_url=cancel_url
        )
    except ProcessorError as error:
        outcome = Outcome("failed", failure_message=UNREACHABLE, detail=str(error)[:500])
    if outcome.status == "pending":
        CardSetup.objects.filter(pk=setup.pk).update(
            checkout_session=outcome.checkout_session,
            checkout_url=outcome.checkout_url,
            detail=outcome.detail[:500],
        )
        setup.refresh_from_db()
    else:
        setup.finish(outcome)
    log.info("Card setup %s of customer %s: %s", setup.pk, customer.pk, setup.status)
    return setup


def _processor(setup):
    return PaymentSettings.for_tenant(setup.tenant).processor_impl(setup.processor)


def refresh(setup):
    """Ask the processor how a pending hosted setup stands, and apply it."""
    if setup.status != CardSetup.Status.PENDING or not setup.checkout_session:
        return setup
    setup.finish(_processor(setup).refresh_setup(setup))
    return setup


def cancel(setup, message=CANCELLED, *, wait_for_answer=False):
    """Close a pending setup: the customer backed out of the hosted form, or (the stale
    sweep, `wait_for_answer`) it outlived the form's expiry. Nothing is saved, unless the
    processor answers that the card was saved meanwhile. With `wait_for_answer` a processor
    that cannot be asked leaves it pending for the next sweep, so a card the customer did
    save is never recorded as refused; one that never reached the processor (no hosted
    form) is closed at once either way."""
    if setup.status != CardSetup.Status.PENDING:
        return setup
    outcome = _processor(setup).cancel_setup(setup) if setup.checkout_session else None
    if outcome is None and setup.checkout_session and wait_for_answer:
        return setup
    if outcome is None or outcome.status == "failed":
        outcome = Outcome("failed", failure_message=message)
    setup.finish(outcome)
    return setup


def received(tenant, processor, event):
    """A verified webhook event naming a setup: (state, outcome) for its `ProcessorEvent`.
    The setup is finished from the processor's API on the worker (`finish_from_processor`),
    so the webhook answers at once and a lost or repeated event changes nothing."""
    State = ProcessorEvent.State
    setup = CardSetup.objects.filter(
        tenant=tenant, processor=processor, public_id=event.card_setup_id
    ).first()
    if setup is None:
        return State.IGNORED, "ignored: no card setup of this tenant matches"
    if setup.status != CardSetup.Status.PENDING:
        return State.NO_CHANGE, f"no change: the card setup is already {setup.status}"
    transaction.on_commit(lambda: enqueue(finish_from_processor, setup.pk))
    return State.APPLIED, "card setup: checking it with the processor"


def finish_from_processor(setup_id):
    """Worker task: finish a pending setup from the processor's API."""
    setup = CardSetup.objects.filter(pk=setup_id).first()
    if setup is not None:
        refresh(setup)
