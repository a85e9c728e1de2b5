"""Starting a payment: the one path from a pay page, an unknown-invoice form or auto-pay
to a processor.

Two short transactions around the processor call, never a lock held across the network.
The first locks the invoice row, replays a form already submitted (same idempotency key),
checks what is owed and claims the invoice's single in-flight slot (a unique constraint
backs the check); the second applies the processor's answer. The amount is computed here
from the invoice, never taken from the browser beyond a partial amount it may ask for.
"""

from django.db import IntegrityError, transaction

from billing.models import Invoice
from billing.payments.models import Balance, Payment, PaymentEvent, PaymentSettings
from billing.payments.processors import Outcome, ProcessorError

IN_FLIGHT = "A payment for this invoice is already in progress."
NOTHING_DUE = "There is nothing left to pay on this invoice."
UNAVAILABLE = "Online payment is not available right now. Please contact us to pay."
UNREACHABLE = "We could not reach the card processor. Nothing was charged: try again shortly."


class CannotPay(Exception):
    """Nothing may be charged now; the message says why, for the customer."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def pay(
    tenant,
    invoice,
    *,
    key,
    kind=Payment.Kind.PAY_PAGE,
    requested=None,
    card=None,
    method=None,
    **details,
):
    """Charge `invoice` (None for an unknown invoice, with `requested` and `invoice_ref`)
    once for this `key`; answers the Payment, new or the one the key already made.

    `card` is the built-in form's card (test processor), `method` a saved one (auto-pay);
    `details` are Payment fields: payer_email, save_method, consent_text, client_ip,
    invoice_ref.
    """
    settings = PaymentSettings.for_tenant(tenant)
    processor = settings.processor_impl(method.processor if method else None)
    if processor.unavailable_reason():
        raise CannotPay(UNAVAILABLE)
    payment, created = _claim(settings, invoice, key, kind, requested, processor.name, details)
    if not created:
        return payment
    source = PaymentEvent.Source.AUTOPAY if method else PaymentEvent.Source.CUSTOMER
    payment.move(Payment.Status.PENDING, source=source, detail=f"sent to {processor.name}")
    try:
        if method:
            outcome = processor.charge_saved(payment, method)
        else:
            outcome = processor.start(
                payment,
                card=card,
                return_url=payment.public_url(),
                cancel_url=cancel_url(payment),
            )
    except ProcessorError as error:
        outcome = Outcome(
            "failed", failure_code="processor_error", failure_message=UNREACHABLE, detail=str(error)
        )
    payment.apply(outcome, source=PaymentEvent.Source.PROCESSOR)
    return payment


def _claim(settings, invoice, key, kind, requested, processor, details):
    """(payment, created): the payment this key made, or a new one in the in-flight slot."""
    with transaction.atomic():
        if invoice is not None:
            # Serialises every start on this invoice: two tabs, double clicks, auto-pay.
            invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
        replay = Payment.objects.filter(idempotency_key=key).first()
        if replay is not None:
            if replay.tenant_id != settings.tenant_id or replay.invoice_id != getattr(
                invoice, "pk", None
            ):
                raise CannotPay("This payment form has expired. Please reload the page.")
            return replay, False
        if invoice is None:
            amount, currency = requested, settings.tenant.currency
        else:
            amount, currency = _amount(settings, invoice, requested), invoice.currency
            details.setdefault("invoice_ref", invoice.display_number())
        try:
            with transaction.atomic():
                payment = Payment.objects.create(
                    tenant=settings.tenant,
                    invoice=invoice,
                    idempotency_key=key,
                    kind=kind,
                    processor=processor,
                    amount=amount,
                    currency=currency or settings.tenant.currency,
                    **details,
                )
        except IntegrityError:
            # A racing request with the same key, or another payment took the slot.
            replay = Payment.objects.filter(idempotency_key=key).first()
            if replay is not None:
                return replay, False
            raise CannotPay(IN_FLIGHT) from None
    return payment, True


def _amount(settings, invoice, requested):
    balance = Balance(invoice)
    if balance.in_flight is not None:
        raise CannotPay(IN_FLIGHT)
    if balance.due <= 0:
        raise CannotPay(NOTHING_DUE)
    try:
        return settings.amount_to_charge(balance.due, requested)
    except ValueError as error:
        raise CannotPay(str(error)) from None


def cancel_url(payment):
    """Where a hosted checkout sends a customer who backs out: the pay page, which asks
    the processor to close the checkout so the invoice can be paid again."""
    if payment.invoice is None:
        return payment.public_url()
    from billing.payments.models import PayPage

    page = PayPage.for_invoice(payment.invoice)
    return f"{page.public_url()}?cancelled={payment.public_id}"


def close_checkout(payment):
    """Close a hosted checkout the customer left, or one past its expiry that no webhook
    settled, and apply what the processor then says (paid, or closed unpaid)."""
    if not payment.checkout_session:
        return False
    processor = PaymentSettings.for_tenant(payment.tenant).processor_impl(payment.processor)
    outcome = processor.cancel(payment)
    return outcome is not None and payment.apply(outcome, source=PaymentEvent.Source.SYSTEM)
