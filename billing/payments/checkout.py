"""Starting a payment: the one path from a pay page, an unknown-invoice form or auto-pay
to a processor.

Two short transactions around the processor call, never a lock held across the network.
The first locks the invoice row, replays a form already submitted (same idempotency key),
checks what is owed and claims the invoice's single in-flight slot (a unique constraint
backs the check); the second applies the processor's answer. The amount is computed here
from the invoice, never taken from the browser beyond a partial amount it may ask for.
"""

from decimal import Decimal

from django.db import IntegrityError, transaction

from billing.models import Invoice
from billing.payments.models import (
    Balance,
    Payment,
    PaymentAllocation,
    PaymentEvent,
    PaymentSettings,
    oldest_first,
)
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
    return _start(processor, payment, card=card, method=method)


def _start(processor, payment, *, card=None, method=None):
    """Send a just-claimed payment to the processor, outside any transaction, and apply its
    answer (a processor that cannot be reached fails the payment: nothing was charged)."""
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


# -- several invoices, one charge ------------------------------------------------------------

CHANGED = (
    "The amounts due have changed since this page was shown. Nothing was charged: check "
    "the new amounts and pay again."
)
MIXED_CURRENCIES = "Invoices in different currencies cannot be paid together: pay them apart."
NOT_YOURS = "Invoice {} is not an open invoice on this account."
EMPTY = "Choose at least one invoice to pay."
IN_FLIGHT_SEVERAL = "A payment for one of these invoices is already in progress."


def payable_invoices(customer):
    """The customer's invoices that may still be paid online, oldest first: issued, not
    voided, paid or deleted in Halo. (Balances decide what is still due on each.)"""
    invoices = (
        Invoice.objects.filter(tenant_id=customer.tenant_id, customer=customer)
        .unpaid()
        .exclude(source=Invoice.Source.PORTAL, posted=False)
    )
    return sorted(invoices.select_related("tenant"), key=oldest_first)


def pay_several(
    tenant, customer, invoice_ids, *, key, requested=None, expected_total=None, card=None, **details
):
    """One charge for several of `customer`'s invoices (`invoice_ids`; None: every open
    one, "the whole balance"), once for this `key`; answers the Payment, new or the one the
    key already made. The amount is split over the invoices oldest first
    (`PaymentAllocation.plan`); with partial payments on, `requested` may be less than
    their total and the last invoice it reaches is paid in part. `expected_total` is the
    total the customer was shown: when the amounts due have changed since, nothing is
    charged (`CannotPay(CHANGED)`)."""
    settings = PaymentSettings.for_tenant(tenant)
    processor = settings.processor_impl()
    if processor.unavailable_reason():
        raise CannotPay(UNAVAILABLE)
    with transaction.atomic():
        payment, created = _claim_several(
            settings, customer, invoice_ids, key, requested, expected_total, processor.name, details
        )
    if not created:
        return payment
    return _start(processor, payment, card=card)


def _claim_several(settings, customer, invoice_ids, key, requested, expected, processor, details):
    """(payment, created), under the row locks of the customer's open invoices (taken in
    id order: two payments over overlapping invoices queue, never deadlock), so a single
    pay page, auto-pay and another tab see this payment in flight or wait for it."""
    invoices = list(
        Invoice.objects.select_for_update()
        .filter(pk__in=[i.pk for i in payable_invoices(customer)])
        .select_related("tenant")
        .order_by("pk")
    )
    replay = Payment.objects.filter(idempotency_key=key).first()
    if replay is not None:
        if replay.tenant_id != settings.tenant_id or replay.kind != Payment.Kind.SEVERAL:
            raise CannotPay("This payment form has expired. Please reload the page.")
        return replay, False
    by_id = {invoice.pk: invoice for invoice in invoices}
    if invoice_ids is None:
        chosen = invoices
    else:
        if not invoice_ids:
            raise CannotPay(EMPTY)
        missing = [pk for pk in invoice_ids if pk not in by_id]
        if missing:
            raise CannotPay(NOT_YOURS.format(_number_of(settings.tenant, missing[0])))
        chosen = [by_id[pk] for pk in dict.fromkeys(invoice_ids)]
    dues = []
    for invoice in chosen:
        balance = Balance(invoice)
        if balance.in_flight is not None and invoice_ids is None:
            continue  # the whole balance: what is not already being paid
        if balance.in_flight is not None:
            raise CannotPay(
                f"A payment for invoice {invoice.display_number()} is already in progress."
            )
        if balance.due > 0:
            dues.append((invoice, balance.due))
        elif invoice_ids is not None:
            raise CannotPay(f"Invoice {invoice.display_number()} has nothing left to pay.")
    if not dues:
        raise CannotPay("There is nothing left to pay on this account.")
    currencies = {invoice.currency or settings.tenant.currency for invoice, _ in dues}
    if len(currencies) > 1:
        raise CannotPay(MIXED_CURRENCIES)
    total = sum((due for _, due in dues), Decimal(0))
    if expected is not None and expected != total:
        raise CannotPay(CHANGED)
    try:
        amount = settings.amount_to_charge(total, requested)
    except ValueError as error:
        raise CannotPay(str(error)) from None
    shares = PaymentAllocation.plan(dues, amount)
    try:
        with transaction.atomic():
            payment = Payment.objects.create(
                tenant=settings.tenant,
                invoice=None,
                idempotency_key=key,
                kind=Payment.Kind.SEVERAL,
                processor=processor,
                amount=amount,
                currency=currencies.pop(),
                invoice_ref=several_ref([invoice for invoice, _ in shares]),
                **details,
            )
            PaymentAllocation.objects.bulk_create(
                PaymentAllocation(payment=payment, invoice=invoice, position=n, amount=share)
                for n, (invoice, share) in enumerate(shares)
            )
    except IntegrityError:
        replay = Payment.objects.filter(idempotency_key=key).first()
        if replay is not None:
            return replay, False
        raise CannotPay(IN_FLIGHT_SEVERAL) from None
    return payment, True


def several_ref(invoices):
    """The payment's `invoice_ref` (64 characters): "1001, 1002 and 1003", or the first
    few and how many more."""
    numbers = [invoice.display_number() for invoice in invoices]
    text = numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"
    shown = len(numbers)
    while len(text) > 64 and shown > 1:
        shown -= 1
        text = f"{', '.join(numbers[:shown])} and {len(numbers) - shown} more"
    return text[:64]


def _number_of(tenant, invoice_id):
    """How a refused id is named to the customer: its number when it is this tenant's
    invoice, else the id as typed (another tenant's invoice shows nothing of it)."""
    invoice = Invoice.objects.filter(tenant=tenant, pk=invoice_id).first()
    return invoice.display_number() if invoice else str(invoice_id)


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
    """Where a hosted checkout sends a customer who backs out: the pay page (a payment for
    several invoices: its own page), which asks the processor to close the checkout so the
    invoices can be paid again."""
    if payment.kind == Payment.Kind.SEVERAL:
        return f"{payment.public_url()}?cancelled=1"  # the receipt page closes it
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
