"""Auto-pay: invoices an auto-pay rule flags, charged with the customer's saved card.

`plan(tenant, day)` decides, for every flagged unpaid invoice, whether the run of `day`
charges it or why not; the forecast page shows exactly that list and `run` acts on it, so
what staff see is what happens. An invoice is charged at most once a day (an attempt row,
unique per invoice and day, is taken before charging) with an idempotency key made of the
invoice and the day, so even a replayed run cannot charge twice; failures are retried after
the tenant's number of days, up to its number of attempts.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction

from billing.models import Invoice
from billing.payments import checkout, display
from billing.payments.models import (
    AutoPayAttempt,
    Balance,
    Payment,
    PaymentSettings,
    SavedPaymentMethod,
)


@dataclass(frozen=True)
class Plan:
    invoice: Invoice
    skip: str = ""  # why the run does not charge it; "" when it does
    amount: Decimal | None = None
    method: SavedPaymentMethod | None = None

    @property
    def charges(self):
        return not self.skip


def plan(tenant, day):
    settings = PaymentSettings.for_tenant(tenant)
    invoices = (
        Invoice.objects.filter(tenant=tenant, autopay_rule__isnull=False)
        .unpaid()
        .select_related("tenant__invoice_sync_settings", "customer", "autopay_skip")
        .order_by("due_date", "pk")
    )
    methods = {m.customer_id: m for m in SavedPaymentMethod.objects.active().filter(tenant=tenant)}
    history = defaultdict(list)
    for attempt in AutoPayAttempt.objects.filter(tenant=tenant).select_related("payment"):
        history[attempt.invoice_id].append(attempt)
    unavailable = settings.processor_impl().unavailable_reason()
    return [
        _plan(settings, invoice, day, methods.get(invoice.customer_id), history[invoice.pk])
        if not unavailable
        else Plan(invoice, skip=f"Payments are not set up: {unavailable}")
        for invoice in invoices
    ]


def why_not_covered(settings, invoice, method, *, skipped, failures):
    """Why auto-pay will never charge `invoice` (flagged by a rule), whatever the day, or ""
    when it will: staff took it out (`skipped`), no saved card or one of another processor,
    dated before the card's consent covers, or given up after `failures` failed charges.
    The run (`_plan`) and reminders (`billing.reminders`, which send none for what auto-pay
    will charge) both ask this."""
    tenant = settings.tenant
    if method is None:
        return "No saved card: the customer has not agreed to auto-pay"
    if method.processor != settings.processor:
        return "The saved card belongs to another processor than today's"
    agreed = method.first_covered_day(tenant.tz)
    if invoice.invoice_date is not None and invoice.invoice_date < agreed:
        # The consent covers invoices from the day it was given on, never older ones.
        return (
            f"Dated before the customer agreed to auto-pay ({display.day(agreed, tenant)}):"
            " not charged; the pay link still works"
        )
    if failures >= settings.autopay_max_attempts:
        return f"Gave up after {failures} failed charges"
    if skipped:
        return "Skipped by staff"
    return ""


def failed_days(attempts, method):
    """The days an invoice's charges failed on `method`, the saved card: a card saved since
    (replacing one that kept failing) starts afresh, with its own number of attempts."""
    since = method.consented_at if method is not None else None
    return [
        a.day
        for a in attempts
        if a.payment
        and a.payment.status == Payment.Status.FAILED
        and (since is None or a.payment.created >= since)
    ]


def _plan(settings, invoice, day, method, attempts):
    tenant = settings.tenant
    skipped = getattr(invoice, "autopay_skip", None)
    if skipped is not None:
        reason = f"Skipped by staff: {skipped.reason}" if skipped.reason else "Skipped by staff"
        return Plan(invoice, skip=reason)
    charge_day = (
        invoice.due_date
        if settings.autopay_charge_on == PaymentSettings.ChargeOn.DUE_DATE
        else invoice.invoice_date
    )
    if charge_day and charge_day > day:
        return Plan(invoice, skip=f"Not due for auto-pay until {display.day(charge_day, tenant)}")
    failures = failed_days(attempts, method)
    if reason := why_not_covered(settings, invoice, method, skipped=False, failures=len(failures)):
        return Plan(invoice, skip=reason)
    if any(attempt.day == day for attempt in attempts):
        return Plan(invoice, skip="Already tried today")
    if failures:
        retry = max(failures) + timedelta(days=settings.autopay_retry_days)
        if retry > day:
            return Plan(invoice, skip=f"Last charge failed; next try {display.day(retry, tenant)}")
    balance = Balance(invoice)
    if balance.in_flight is not None:
        return Plan(invoice, skip="A payment is in progress")
    if balance.due <= 0:
        return Plan(invoice, skip="Paid; waiting to be recorded in Halo")
    return Plan(invoice, amount=balance.due, method=method)


def run(tenant, day):
    """Charge what `plan` says for `day`; answers the attempts made."""
    attempts = []
    for item in plan(tenant, day):
        if not item.charges:
            continue
        try:
            with transaction.atomic():
                attempt = AutoPayAttempt.objects.create(
                    tenant=tenant, invoice=item.invoice, day=day
                )
        except IntegrityError:
            continue  # another run took this invoice today
        customer = item.invoice.customer
        try:
            attempt.payment = checkout.pay(
                tenant,
                item.invoice,
                key=f"invoice-{item.invoice.pk}-{day.isoformat()}",
                kind=Payment.Kind.AUTOPAY,
                method=item.method,
                payer_email=customer.billing_email or item.method.consent_email,
            )
        except checkout.CannotPay as refusal:
            attempt.note = refusal.message
        attempt.save(update_fields=["payment", "note"])
        attempts.append(attempt)
    return attempts


def next_run(settings, now):
    """The local day of the next run: today until today's run has happened, else tomorrow."""
    today = now.astimezone(settings.tenant.tz).date()
    ran_today = settings.autopay_last_run is not None and settings.autopay_last_run >= today
    return today + timedelta(days=1) if ran_today else today
