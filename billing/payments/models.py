"""Online payment of invoices: settings, pay pages, payments, and what Halo must be told.

Exactly-once is enforced by the schema, not only by code paths: one payment in flight per
invoice (a conditional unique constraint), one payment per pay-page form render (a unique
idempotency key), one stored copy per processor webhook event, one auto-pay attempt per
invoice per day, and status moves that only go forward under a row lock.
"""

import hashlib
import secrets
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.db.models.functions import TruncMonth
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from billing.models import Customer, Invoice, InvoiceNumberField, number_field
from billing.payments import signals
from portal import crypto
from portal.models import OnePerTenant, Tenant

CENT = Decimal("0.01")
#: Payment fields any later processor message may still fill in while blank.
CARD_FIELDS = ("card_brand", "card_last4")
#: Smallest partial payment (a processor's own minimum may be higher).
MIN_PARTIAL = Decimal("1.00")
REFUNDED_FIRST = "Refunded at the processor before Halo recorded it: nothing written to Halo."
REFUNDED_AFTER_SENDING = "Refunded in full: the refund entry removes it from Halo if it landed."
NOT_IN_HALO = "Halo holds no record of this payment: nothing to change there."


def new_token():
    """192 random bits, URL-safe: for pay pages and payments' public ids."""
    return secrets.token_urlsafe(24)


class PaymentSettings(OnePerTenant):
    """A tenant's choices for online payment; created with safe defaults on first use."""

    cached_on_tenant = True  # read on every PDF and pay page

    class Processor(models.TextChoices):
        TEST = "test", "Test processor (demo cards, no real money)"
        STRIPE = "stripe", "Stripe"

    class ChargeOn(models.TextChoices):
        INVOICE_DATE = "invoice_date", "On the invoice date"
        DUE_DATE = "due_date", "On the due date"

    class LinkCheck(models.TextChoices):
        OFF = "off", "No: open the pay page at once"
        AMOUNT = "amount", "Ask for the invoice's total"
        EMAIL = "email", "Ask for the billing email address"

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="payment_settings")
    processor = models.CharField(max_length=10, choices=Processor.choices, default=Processor.TEST)
    stripe_secret_key_encrypted = models.TextField(editable=False, default="")
    stripe_webhook_secret_encrypted = models.TextField(editable=False, default="")
    use_halo_pdf = models.BooleanField(
        "use Halo invoice PDF",
        default=False,
        help_text="Show customers the PDF Halo made instead of the portal's own PDF.",
    )
    pdf_fallback = models.BooleanField(
        "fall back to the other PDF",
        default=True,
        help_text="When the chosen PDF is unavailable, show the other one.",
    )
    allow_partial = models.BooleanField(
        "allow partial payments",
        default=False,
        help_text="Off: customers pay the amount due in full. On: they may pay less.",
    )
    halo_pay_buttons = models.BooleanField(
        "add pay button to Halo invoices",
        default=False,
        help_text="Write each unpaid invoice's pay link into Halo "
        "(generic_online_invoice_payment_url), so Halo's portal shows a Pay button; new "
        "invoices get it within minutes of arriving.",
    )
    pay_unknown_invoices = models.BooleanField(
        "take payments for unknown invoices",
        default=False,
        help_text="A link naming an invoice the portal does not know shows a form for any "
        "amount. Leave off: a generic pay form invites double and mistaken payments.",
    )
    link_check = models.CharField(
        "ask before showing a pay page",
        max_length=10,
        choices=LinkCheck.choices,
        default=LinkCheck.OFF,
        help_text="A link naming the invoice by its number (the link in Halo's invoice email) "
        "can be guessed: Halo's numbers are sequential. Ask the customer for something on "
        "the invoice first; a right answer is remembered for their browser session, wrong "
        "ones count as misses. Pay buttons in Halo and pay links in PDFs carry the pay "
        "page's secret address and are never asked. Invoices without a billing email are "
        "asked for their total.",
    )
    halo_payment_method = models.PositiveIntegerField(
        "Halo payment method",
        null=True,
        blank=True,
        help_text="The ID of the payment method Halo should file online payments under "
        "(sent as the InvoicePayment's method). Blank: Halo's default.",
    )
    autopay_hour = models.PositiveSmallIntegerField(
        "auto-pay hour",
        default=9,
        validators=[MaxValueValidator(23)],
        help_text="Hour of the day (the tenant's time zone) auto-pay runs.",
    )
    autopay_charge_on = models.CharField(
        "charge auto-pay invoices",
        max_length=12,
        choices=ChargeOn.choices,
        default=ChargeOn.INVOICE_DATE,
    )
    autopay_retry_days = models.PositiveSmallIntegerField(
        "days between retries",
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(30)],
        help_text="After a failed auto-pay charge, wait this many days before trying again.",
    )
    autopay_max_attempts = models.PositiveSmallIntegerField(
        "attempts per invoice",
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="Auto-pay gives up on an invoice after this many failed charges.",
    )
    autopay_last_run = models.DateField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "payment settings"
        verbose_name_plural = "payment settings"

    def __str__(self):
        return f"Payments of {self.tenant}"

    # -- Stripe secrets (Fernet ciphertext at rest) ----------------------------------------
    @property
    def stripe_secret_key(self):
        return _decrypted(self.stripe_secret_key_encrypted)

    @property
    def stripe_webhook_secret(self):
        return _decrypted(self.stripe_webhook_secret_encrypted)

    @sensitive_variables()
    def set_stripe_secrets(self, secret_key="", webhook_secret=""):
        """Encrypt and store the keys given; blanks keep what is stored."""
        if secret_key:
            self.stripe_secret_key_encrypted = crypto.encrypt(secret_key)
        if webhook_secret:
            self.stripe_webhook_secret_encrypted = crypto.encrypt(webhook_secret)

    # -- behaviour ---------------------------------------------------------------------------
    def processor_impl(self, name=None):
        from billing.payments.processors import get_processor

        return get_processor(name or self.processor, self)

    def amount_to_charge(self, due, requested=None):
        """What to charge against `due`: always all of it unless partial payments are on, and
        then the requested amount when it is between the minimum and `due`. Raises ValueError
        with a customer-facing message otherwise. Never trusts more than the server's `due`."""
        if not self.allow_partial or requested is None:
            return due
        requested = Decimal(requested).quantize(CENT)
        if requested > due:
            raise ValueError("You cannot pay more than the amount due.")
        if requested < min(MIN_PARTIAL, due):
            raise ValueError(f"The smallest payment is {min(MIN_PARTIAL, due)}.")
        return requested

    def pay_link_template(self):
        """The link to paste into Halo's invoice email template (Halo fills in the variable)."""
        variable = (
            "$THIRDPARTYINVOICENUMBER"
            if number_field(self.tenant) == InvoiceNumberField.THIRD_PARTY
            else "$INVOICEID"
        )
        return settings.PORTAL_BASE_URL + reverse(
            "payments:link", args=[self.tenant.slug, "REF"]
        ).replace("REF", variable)

    def stripe_webhook_url(self):
        return settings.PORTAL_BASE_URL + reverse(
            "payments:stripe-webhook", args=[self.tenant.slug]
        )

    def autopay_day_due(self, now=None):
        """The tenant's local date when auto-pay should run now, or None (not its hour yet,
        or already run today)."""
        local = (now or timezone.now()).astimezone(self.tenant.tz)
        if local.hour < self.autopay_hour:
            return None
        day = local.date()
        return day if self.autopay_last_run is None or self.autopay_last_run < day else None

    def claim_autopay_run(self, day):
        """Mark `day`'s run as taken; exactly one worker wins (a conditional UPDATE)."""
        free = Q(autopay_last_run__isnull=True) | Q(autopay_last_run__lt=day)
        return bool(PaymentSettings.objects.filter(free, pk=self.pk).update(autopay_last_run=day))


def _queue_delivery(row_id):
    """Deliver an outbox row on the worker once it commits (see `signals`)."""
    signals.outbox_row_written.send(HaloOutbox, row_id=row_id)


def _decrypted(ciphertext):
    return crypto.decrypt(ciphertext) if ciphertext else ""


def is_issued(invoice):
    """Portal invoices are unposted drafts until issued: not shown, not payable."""
    return invoice.posted or invoice.source != Invoice.Source.PORTAL


def invoice_for_ref(tenant, ref):
    """The one invoice a customer-facing `ref` names: an open one if any, else the latest;
    None when unknown or when several open invoices share the number (the customer asks)."""
    found = (
        Invoice.objects.for_ref(tenant, ref)
        .filter(deleted_in_halo=False)
        .exclude(source=Invoice.Source.PORTAL, posted=False)
        .select_related("pay_page")
    )
    found = list(found[:10])
    for invoice in found:
        invoice.tenant = tenant
    open_ = [invoice for invoice in found if invoice.is_open]
    if len(open_) > 1:
        return None
    return open_[0] if open_ else (found[0] if found else None)


class PayLinkAlert(models.Model):
    """An incident: pay-link lookups of a tenant finding nothing, from one address or across
    the tenant, often enough to look like someone walking invoice numbers
    (`billing.payments.enumeration`). One is open per tenant at a time; it closes once
    quiet for `PAYMENTS_ALERT_QUIET` seconds. Its owners are emailed once, when it opens."""

    #: Addresses kept per incident (more are counted across the tenant, not listed).
    MAX_ADDRESSES = 20

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    is_open = models.BooleanField("open", default=True, editable=False)
    started = models.DateTimeField(editable=False)
    last_seen = models.DateTimeField(editable=False)
    reason = models.CharField(max_length=300, editable=False, help_text="What opened it.")
    tenant_misses = models.PositiveIntegerField(
        "most misses across the tenant",
        default=0,
        editable=False,
        help_text="In one window of PAYMENTS_ALERT_WINDOW seconds, as counted when it rose.",
    )
    addresses = models.JSONField(
        default=dict,
        editable=False,
        help_text="Client address → most misses from it in one window.",
    )
    emailed = models.DateTimeField(null=True, blank=True, editable=False)
    emailed_to = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-started"]
        verbose_name = "pay-link alert"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"], condition=Q(is_open=True), name="paylinkalert_one_open"
            )
        ]

    def __str__(self):
        return f"Pay-link alert of {self.started:%Y-%m-%d %H:%M}"


class PayPageQuerySet(models.QuerySet):
    def for_invoices(self, invoices):
        """The pay page of each invoice (created where missing), by invoice id."""
        invoices = {invoice.pk: invoice for invoice in invoices}
        pages = {page.invoice_id: page for page in self.filter(invoice__in=invoices)}
        if missing := invoices.keys() - pages.keys():
            self.bulk_create(
                [PayPage(tenant_id=invoices[pk].tenant_id, invoice_id=pk) for pk in missing],
                ignore_conflicts=True,  # a concurrent request made it: read it below
            )
            pages |= {page.invoice_id: page for page in self.filter(invoice__in=missing)}
        for page in pages.values():
            page.invoice = invoices[page.invoice_id]
        return pages


class PayPage(models.Model):
    """An invoice's pay page, at an unguessable URL (Halo ids and invoice numbers are
    sequential, so the page is never addressed by them)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    invoice = models.OneToOneField(Invoice, on_delete=models.CASCADE, related_name="pay_page")
    token = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)

    objects = PayPageQuerySet.as_manager()

    def __str__(self):
        return f"Pay page of {self.invoice}"

    def get_absolute_url(self):
        return reverse("payments:pay", args=[self.invoice.tenant.slug, self.token])

    @classmethod
    def for_invoice(cls, invoice):
        try:
            return invoice.pay_page
        except cls.DoesNotExist:
            return cls.objects.for_invoices([invoice])[invoice.pk]

    def public_url(self):
        return settings.PORTAL_BASE_URL + self.get_absolute_url()


class Balance:
    """What is still owed on an invoice from the payer's point of view: Halo's amount due,
    less payments taken but not yet recorded in Halo, and any payment still in flight."""

    def __init__(self, invoice):
        self.invoice = invoice
        live = [*Payment.IN_FLIGHT, Payment.Status.SUCCEEDED]
        active = Payment.objects.filter(invoice=invoice, status__in=live).order_by()
        active = [p for p in active if p.is_in_flight or p.recorded is None]
        # Its shares of payments for several invoices count the same way.
        shares = PaymentAllocation.objects.filter(invoice=invoice, payment__status__in=live)
        shares = [a for a in shares.select_related("payment").order_by() if a.recorded is None]
        self.in_flight = next((p for p in active if p.is_in_flight), None) or next(
            (a.payment for a in shares if a.payment.is_in_flight), None
        )
        self.unrecorded = sum((p.net_amount for p in active if not p.is_in_flight), Decimal(0))
        self.unrecorded += sum(
            (a.net_amount for a in shares if not a.payment.is_in_flight), Decimal(0)
        )
        open_due = invoice.amount_due - self.unrecorded if invoice.is_open else Decimal(0)
        self.due = max(open_due, Decimal(0))


class PaymentQuerySet(models.QuerySet):
    def in_flight(self):
        return self.filter(status__in=Payment.IN_FLIGHT)

    def stale_checkouts(self):
        """Hosted checkouts still open well past their expiry: the processor's expiry
        webhook never arrived, so ask the processor (see `checkout.close_checkout`)."""
        age = timedelta(minutes=settings.PAYMENTS_STRIPE_SESSION_MINUTES + 15)
        return self.filter(status=Payment.Status.PENDING, created__lt=timezone.now() - age).exclude(
            checkout_session=""
        )

    def collected_by_month(self, since, tz):
        """Money taken from `since` by month (in time zone `tz`) and currency, in one query:
        rows of `month`, `currency`, `collected` (payments that succeeded, refunded since
        or not) and `refunded` (what of those was given back)."""
        taken = [Payment.Status.SUCCEEDED, Payment.Status.REFUNDED]
        return (
            self.filter(status__in=taken, succeeded_at__gte=since)
            .annotate(month=TruncMonth("succeeded_at", tzinfo=tz))
            .order_by()
            .values("month", "currency")
            .annotate(collected=models.Sum("amount"), refunded=models.Sum("refunded_amount"))
        )

    def abandoned(self, age=timedelta(minutes=10)):
        """In flight without any processor answer for `age`: the process starting them
        died, so the customer never reached the processor."""
        return self.in_flight().filter(
            reference="", checkout_session="", updated__lt=timezone.now() - age
        )


class Payment(models.Model):
    """One attempt to pay an invoice, whichever way it started; its moves are in `events`."""

    class Status(models.TextChoices):
        CREATED = "created", "Created"
        PENDING = "pending", "Pending"
        FAILED = "failed", "Failed"
        SUCCEEDED = "succeeded", "Succeeded"
        REFUNDED = "refunded", "Refunded"

    class Kind(models.TextChoices):
        PAY_PAGE = "pay_page", "Pay page"
        AUTOPAY = "autopay", "Auto-pay"
        UNLISTED = "unlisted", "Unknown invoice"
        SEVERAL = "several", "Several invoices"

    #: Moves only go up this order; a late or repeated processor message never undoes one.
    #: Failed ranks below succeeded: a success the processor reports after a failure means
    #: money was taken, and must be recorded.
    RANK = {
        Status.CREATED: 0,
        Status.PENDING: 1,
        Status.FAILED: 2,
        Status.SUCCEEDED: 3,
        Status.REFUNDED: 4,
    }
    IN_FLIGHT = (Status.CREATED, Status.PENDING)

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="payments")
    invoice = models.ForeignKey(
        # RESTRICT: an invoice with payments is never deleted alone (only with its tenant).
        Invoice,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="payments",
    )
    invoice_ref = models.CharField(
        "invoice number", max_length=64, help_text="As the customer saw it."
    )
    public_id = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    idempotency_key = models.CharField(max_length=64, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PAY_PAGE)
    processor = models.CharField(max_length=10, choices=PaymentSettings.Processor.choices)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    refunded_amount = models.DecimalField(
        max_digits=14, decimal_places=2, default=0, help_text="Refunded at the processor so far."
    )
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CREATED)
    reference = models.CharField(
        "processor reference",
        max_length=255,
        blank=True,
        help_text="The processor's id of the charge; sent to Halo as thirdpartyid.",
    )
    checkout_session = models.CharField(max_length=255, blank=True)
    checkout_url = models.URLField(max_length=1000, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    payer_email = models.EmailField(blank=True)
    save_method = models.BooleanField(
        "consented to auto-pay", default=False, help_text="The payer ticked the consent box."
    )
    consent_text = models.TextField(blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)
    recorded = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the invoice took it into account (in Halo, or the portal's invoice).",
    )

    objects = PaymentQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(status__in=["created", "pending"]),
                name="payment_one_in_flight_per_invoice",
            ),
            models.UniqueConstraint(
                fields=["tenant", "processor", "reference"],
                condition=~Q(reference=""),
                name="payment_unique_processor_reference",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "status", "-created"])]

    def __str__(self):
        return f"{self.get_status_display()} payment of {self.amount} {self.currency}"

    def get_absolute_url(self):
        return reverse("payments:payment", args=[self.tenant.slug, self.public_id])

    def customer(self):
        """Who paid: the invoice's customer, or that of the invoices a payment for several
        covers (one customer's); None for an invoice the portal does not know."""
        if self.invoice_id is not None:
            return self.invoice.customer
        share = self.allocations.select_related("invoice__customer").first()
        return share.invoice.customer if share is not None else None

    @property
    def is_in_flight(self):
        return self.status in self.IN_FLIGHT

    @property
    def net_amount(self):
        """What the payer has paid and kept paid: the amount less refunds."""
        return self.amount - self.refunded_amount

    def public_url(self):
        return settings.PORTAL_BASE_URL + self.get_absolute_url()

    def halo_reference(self):
        """Halo's `thirdpartyid`: the processor's id, unique per payment (the natural key
        that keeps a retried create from recording a payment twice)."""
        return self.reference or f"portal-{self.public_id}"

    def move(self, status, *, source, detail="", event_id="", **fields):
        """Move forward to `status` under a row lock, filling `fields`; answers whether it
        moved. The same status only fills fields still blank; a lower one changes nothing."""
        with transaction.atomic():
            current = Payment.objects.select_for_update().get(pk=self.pk)
            before = current.status
            moved = self.RANK[status] > self.RANK[before]
            if moved:
                changes = {**fields, "status": status}
                if status == self.Status.SUCCEEDED:
                    changes.update(succeeded_at=timezone.now(), failure_code="", failure_message="")
            else:
                # A repeat fills what is still blank; a late message only the card's details.
                names = fields if status == before else CARD_FIELDS
                changes = {k: fields[k] for k in names if fields.get(k) and not getattr(current, k)}
            for name, value in changes.items():
                setattr(current, name, value)
            if changes:
                current.save()
            if moved:
                current.events.create(
                    from_status=before,
                    to_status=status,
                    source=source,
                    detail=detail[:500],
                    processor_event=event_id,
                )
                if status not in self.IN_FLIGHT:
                    # Frees the invoices' in-flight slots (a unique constraint per invoice).
                    current.allocations.update(in_flight=False)
                current._moved(status)
        self.refresh_from_db()
        return moved

    def apply(self, outcome, *, source, event_id=""):
        """Apply a processor's `Outcome`; keeps the card when the payer consented."""
        if outcome.refunded is not None:
            return self.refund(
                outcome.refunded, source=source, detail=outcome.detail, event_id=event_id
            )
        with transaction.atomic():
            moved = self.move(
                outcome.status,
                source=source,
                detail=outcome.detail,
                event_id=event_id,
                **outcome.fields(),
            )
            if moved and self.status == self.Status.SUCCEEDED and self.save_method:
                if outcome.method is not None:
                    SavedPaymentMethod.save_from(self, outcome.method)
        return moved

    def learn_card(self):
        """Ask the processor which card paid when its messages did not say (Stripe
        Checkout): receipts and the admin show the brand and last 4 digits."""
        if self.card_last4 or not self.reference or self.status != self.Status.SUCCEEDED:
            return
        options = PaymentSettings.for_tenant(self.tenant)
        if card := options.processor_impl(self.processor).card(self):
            self.card_brand, self.card_last4 = card[0].title()[:20], card[1][:4]
            Payment.objects.filter(pk=self.pk).update(
                card_brand=self.card_brand, card_last4=self.card_last4
            )

    def refund(self, total, *, source, detail="", event_id=""):
        """The processor has refunded `total` of this payment so far (processors report the
        running total, so a repeated or late report changes nothing). All of it moves the
        payment to refunded; any of it is taken off the invoice, in Halo through the outbox.
        Answers whether anything changed."""
        with transaction.atomic():
            current = Payment.objects.select_for_update().get(pk=self.pk)
            total = min(Decimal(total).quantize(CENT), current.amount)
            paid = (self.Status.SUCCEEDED, self.Status.REFUNDED)
            if current.status not in paid or total <= current.refunded_amount:
                return False
            refunded_now = total - current.refunded_amount
            Payment.objects.filter(pk=self.pk).update(refunded_amount=total)
            self.refunded_amount = current.refunded_amount = total
            if total == current.amount:
                self.move(self.Status.REFUNDED, source=source, detail=detail, event_id=event_id)
            else:
                current.events.create(
                    from_status=current.status,
                    to_status=current.status,
                    source=source,
                    detail=f"{refunded_now} refunded ({total} of {current.amount} so far). "
                    f"{detail}"[:500],
                    processor_event=event_id,
                )
            current._take_refund_off_invoice(refunded_now)
        self.refresh_from_db()
        return True

    def refund_or_wait(self, total, *, source, detail="", event_id=""):
        """The processor reports `total` of this payment refunded so far. A paid payment
        takes it at once (`refund`: answers whether anything changed). One not succeeded
        (yet) answers None: the caller keeps the report as a deferred `ProcessorEvent`, in
        this transaction, and the move to succeeded applies it (`_apply_early_refunds`).
        The row lock taken here, held to the end of the caller's transaction, orders the
        report against that move: one sees the other."""
        if Decimal(total) <= 0:
            return False
        with transaction.atomic():
            current = Payment.objects.select_for_update().get(pk=self.pk)
            if current.status in (self.Status.SUCCEEDED, self.Status.REFUNDED):
                return self.refund(total, source=source, detail=detail, event_id=event_id)
            current.events.create(
                from_status=current.status,
                to_status=current.status,
                source=source,
                detail=f"{Decimal(total).quantize(CENT)} reported refunded before the payment "
                f"succeeded: taken off when it does. {detail}"[:500],
                processor_event=event_id,
            )
        return None

    def _apply_early_refunds(self):
        """Under the row lock, just moved to succeeded: refunds the processor reported
        before (deferred events, or ones naming only this payment's charge, which the
        portal learnt with the success) go through `refund` now, in the same transaction,
        so the invoice (in Halo through the outbox) never counts money that went back."""
        early = ProcessorEvent.objects.filter(
            tenant_id=self.tenant_id, processor=self.processor, refunded_total__isnull=False
        )
        mine = Q(payment=self, state=ProcessorEvent.State.DEFERRED)
        if self.reference:
            mine |= Q(payment=None, reference=self.reference, state=ProcessorEvent.State.IGNORED)
        events = list(early.filter(mine).order_by("-refunded_total", "received", "pk"))
        if not events:
            return
        latest = events[0]  # processors report running totals: the largest is the latest
        self.refund(
            latest.refunded_total,
            source=PaymentEvent.Source.WEBHOOK,
            detail="Reported before the payment succeeded.",
            event_id=latest.event_id,
        )
        ProcessorEvent.objects.filter(pk__in=[e.pk for e in events]).update(
            payment=self,
            state=ProcessorEvent.State.APPLIED,
            outcome=f"applied when the payment succeeded: {self.refunded_amount} of "
            f"{self.amount} refunded",
        )

    def _take_refund_off_invoice(self, refunded_now):
        """Called under the payment's row lock, which `outbox.claim_payment_write` takes too:
        a payment not yet sent to Halo is sent less its refunds (or not at all); once Halo
        may hold it, a refund row corrects it there. A portal invoice Halo does not hold is
        corrected at once. A payment for several invoices does this per allocation, for
        the allocations the refund reaches (`PaymentAllocation.spread_refund`)."""
        if self.kind == self.Kind.SEVERAL:
            for allocation, share in PaymentAllocation.spread_refund(self):
                allocation.take_refund_off_invoice(share)
            return
        record = HaloOutbox.objects.filter(payment=self, kind=HaloOutbox.Kind.PAYMENT).first()
        if record is None:
            if self.recorded is not None:
                self._count_on_invoice(-refunded_now)
        elif record.sent is None:
            if self.net_amount <= 0:
                record.drop(REFUNDED_FIRST)
        else:
            HaloOutbox.queue_refund(self)

    def _moved(self, status):
        if status == self.Status.SUCCEEDED:
            self._record_success()
            self._apply_early_refunds()
            signals.payment_succeeded.send(Payment, payment=self)
        elif status == self.Status.FAILED and self.kind == self.Kind.AUTOPAY:
            signals.autopay_failed.send(Payment, payment=self)

    def _record_success(self):
        """Tell the invoice: through the Halo outbox, or at once for a portal invoice that
        Halo does not hold."""
        if self.kind == self.Kind.SEVERAL:
            for allocation in self.allocations.select_related("invoice"):
                allocation.record_success()
            return
        if self.invoice is not None and self.invoice.halo_id is None:
            self.mark_recorded(locally=True)
            return
        outbox = HaloOutbox.objects.create(
            tenant_id=self.tenant_id, kind=HaloOutbox.Kind.PAYMENT, payment=self
        )
        _queue_delivery(outbox.pk)

    def mark_recorded(self, *, locally):
        """The invoice now counts this payment. `locally`: take it off the portal's copy of
        the invoice by hand (a portal invoice, or Halo's updated invoice could not be read)."""
        if locally:
            self._count_on_invoice(self.net_amount)
        self.recorded = timezone.now()
        Payment.objects.filter(pk=self.pk).update(recorded=self.recorded)

    def _count_on_invoice(self, paid):
        count_on_invoice(self.invoice_id, paid)


def count_on_invoice(invoice_id, paid):
    """Add `paid` (less than 0 for a refund) to the portal's copy of the invoice."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    invoice.amount_paid = max(invoice.amount_paid + paid, Decimal(0))
    invoice.amount_due = max(invoice.total - invoice.amount_paid, Decimal(0))
    if invoice.amount_due <= 0:
        invoice.payment_status = Invoice.PaymentStatus.PAID
    elif invoice.amount_paid > 0:
        invoice.payment_status = Invoice.PaymentStatus.PARTLY_PAID
    else:
        invoice.payment_status = Invoice.PaymentStatus.UNPAID
    invoice.save(update_fields=["amount_paid", "amount_due", "payment_status"])


def oldest_first(invoice):
    """The order a payment for several invoices is allocated in: the oldest invoice first
    (by invoice date, then due date; undated ones last), ties by when they were made."""
    return (invoice.invoice_date or date.max, invoice.due_date or date.max, invoice.pk)


class PaymentAllocation(models.Model):
    """The share of one invoice in a payment for several invoices (`Payment.Kind.SEVERAL`):
    one card charge, split over the invoices oldest first when it is made. Each share is
    recorded in Halo as its own `InvoicePayment` (an outbox row per allocation, keyed by
    the invoice and the charge's reference), so Halo sees one payment per invoice.

    Refunds come back newest allocation first (`spread_refund`): a partial refund reopens
    the most recent invoices and leaves the oldest debts settled; a full refund reverses
    every allocation. `in_flight` mirrors the payment while it is created or pending, so
    the schema allows one payment in flight per invoice here too.
    """

    TENANT_PATH = "payment__tenant"

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="allocations")
    # RESTRICT, as on Payment: an invoice with payments is never deleted alone.
    invoice = models.ForeignKey(Invoice, on_delete=models.RESTRICT, related_name="allocations")
    position = models.PositiveSmallIntegerField(help_text="0 is the oldest invoice.")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    refunded_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    in_flight = models.BooleanField(default=True, editable=False)
    recorded = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the invoice took it into account (in Halo, or the portal's invoice).",
    )

    class Meta:
        ordering = ["payment", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["payment", "invoice"], name="paymentallocation_one_per_invoice"
            ),
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(in_flight=True),
                name="paymentallocation_one_in_flight_per_invoice",
            ),
        ]

    def __str__(self):
        return f"{self.amount} of {self.payment} to invoice {self.invoice_id}"

    @property
    def net_amount(self):
        return self.amount - self.refunded_amount

    @staticmethod
    def plan(dues, amount=None):
        """[(invoice, share)]: `amount` (all of it when None) over `dues`, a list of
        (invoice, amount due), oldest invoice first; invoices it does not reach get
        nothing and are left out. The last one reached may get part of what it owes."""
        left = sum((due for _, due in dues), Decimal(0)) if amount is None else amount
        shares = []
        for invoice, due in sorted(dues, key=lambda pair: oldest_first(pair[0])):
            if left <= 0:
                break
            share = min(due, left)
            shares.append((invoice, share))
            left -= share
        return shares

    @classmethod
    def spread_refund(cls, payment):
        """Under the payment's row lock: set each allocation's refunded amount so they add
        up to the payment's, newest allocation first; answers [(allocation, refunded now)]
        for those that changed."""
        allocations = list(
            payment.allocations.select_for_update().select_related("invoice").order_by("-position")
        )
        left, changed = payment.refunded_amount, []
        for allocation in allocations:
            refunded = min(allocation.amount, max(left, Decimal(0)))
            left -= refunded
            if refunded > allocation.refunded_amount:
                changed.append((allocation, refunded - allocation.refunded_amount))
                allocation.refunded_amount = refunded
                cls.objects.filter(pk=allocation.pk).update(refunded_amount=refunded)
        return changed

    def record_success(self):
        """Tell the invoice about this share: through the Halo outbox, or at once for a
        portal invoice Halo does not hold."""
        if self.invoice.halo_id is None:
            self.mark_recorded(locally=True)
            return
        row = HaloOutbox.objects.create(
            tenant_id=self.invoice.tenant_id,
            kind=HaloOutbox.Kind.PAYMENT,
            payment_id=self.payment_id,
            allocation=self,
        )
        _queue_delivery(row.pk)

    def take_refund_off_invoice(self, refunded_now):
        """As `Payment._take_refund_off_invoice`, for this share (under the payment's lock)."""
        record = HaloOutbox.objects.filter(allocation=self, kind=HaloOutbox.Kind.PAYMENT).first()
        if record is None:
            if self.recorded is not None:
                count_on_invoice(self.invoice_id, -refunded_now)
        elif record.sent is None:
            if self.net_amount <= 0:
                record.drop(REFUNDED_FIRST)
        else:
            HaloOutbox.queue_refund(self.payment, allocation=self)

    def mark_recorded(self, *, locally):
        """The invoice now counts this share; the payment is recorded once all are."""
        if locally:
            count_on_invoice(self.invoice_id, self.net_amount)
        self.recorded = timezone.now()
        PaymentAllocation.objects.filter(pk=self.pk).update(recorded=self.recorded)
        siblings = PaymentAllocation.objects.filter(payment_id=self.payment_id, recorded=None)
        if not siblings.exists():
            Payment.objects.filter(pk=self.payment_id).update(recorded=self.recorded)


class PaymentEvent(models.Model):
    """One status move of a payment: who or what moved it, and why."""

    TENANT_PATH = "payment__tenant"

    class Source(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        PROCESSOR = "processor", "Processor answer"
        WEBHOOK = "webhook", "Processor webhook"
        AUTOPAY = "autopay", "Auto-pay"
        SYSTEM = "system", "Portal"

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=10, choices=Payment.Status.choices)
    to_status = models.CharField(max_length=10, choices=Payment.Status.choices)
    source = models.CharField(max_length=10, choices=Source.choices)
    detail = models.CharField(max_length=500, blank=True)
    processor_event = models.CharField("processor event ID", max_length=255, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self):
        return f"{self.from_status} → {self.to_status}"


class ProcessorEvent(models.Model):
    """A processor webhook event whose signature checked, stored once: processors repeat and
    reorder them. `state` and `outcome` say what became of it; staff filter by state."""

    class State(models.TextChoices):
        APPLIED = "applied", "Applied"
        NO_CHANGE = "no_change", "No change"
        IGNORED = "ignored", "Ignored"
        DEFERRED = "deferred", "Deferred: waits for its payment"
        FAILED = "failed", "Failed: needs attention"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    processor = models.CharField(max_length=10, choices=PaymentSettings.Processor.choices)
    event_id = models.CharField("event ID", max_length=255)
    type = models.CharField(max_length=100, blank=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.APPLIED)
    outcome = models.CharField("what happened", max_length=300, blank=True)
    reference = models.CharField(
        "processor reference",
        max_length=255,
        blank=True,
        help_text="The charge the event names (a payment's processor reference).",
    )
    refunded_total = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="For a refund: the total refunded so far, as the processor reported it.",
    )
    payload = models.JSONField()
    received = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received"]
        verbose_name = "processor webhook event"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "processor", "event_id"], name="processorevent_unique_id"
            )
        ]
        indexes = [models.Index(fields=["tenant", "state", "-received"])]

    def __str__(self):
        return f"{self.type or 'event'} {self.event_id}"

    @classmethod
    def keep_malformed(cls, tenant, processor, malformed, body):
        """Keep a signed event the portal could not read, for staff (once per event id, or
        per body when it has no readable id: the processor retries the same body)."""
        event_id = malformed.event_id or f"unreadable-{hashlib.sha256(body).hexdigest()}"
        try:
            with transaction.atomic():
                return cls.objects.create(
                    tenant=tenant,
                    processor=processor,
                    event_id=event_id,
                    type=malformed.type,
                    state=cls.State.FAILED,
                    outcome=f"refused: {malformed.reason}"[:300],
                    payload=malformed.payload,
                )
        except IntegrityError:
            return cls.objects.get(tenant=tenant, processor=processor, event_id=event_id)


class HaloOutboxQuerySet(models.QuerySet):
    def due(self, now=None):
        return self.filter(
            status=HaloOutbox.Status.PENDING, next_attempt__lte=now or timezone.now()
        )


class HaloOutbox(models.Model):
    """A write the portal owes Halo, retried until it lands: a payment to record, or a pay
    link to put on an invoice. Rows stay for the record; failures show Halo's message."""

    class Kind(models.TextChoices):
        PAYMENT = "payment", "Record payment"
        REFUND = "refund", "Record refund"
        PAY_LINK = "pay_link", "Add pay link"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed: needs attention"
        NOT_NEEDED = "not_needed", "Not needed"

    #: A claimed row is not retried by another worker for this long (it may be mid-call).
    LEASE = timedelta(minutes=10)

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.CASCADE, related_name="outbox_rows"
    )
    invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    allocation = models.ForeignKey(
        PaymentAllocation,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="outbox_rows",
        help_text="For a payment of several invoices: the invoice's share this row records.",
    )
    url = models.URLField("pay link", max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    sent = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="First sent to Halo: from then on Halo may hold it, whatever the answer was.",
    )
    next_attempt = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    halo_id = models.CharField("Halo record ID", max_length=64, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    delivered = models.DateTimeField(null=True, blank=True)

    objects = HaloOutboxQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "Halo outbox entry"
        verbose_name_plural = "Halo outbox"
        constraints = [
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(kind="pay_link", status__in=["pending", "failed"]),
                name="halooutbox_one_open_pay_link_per_invoice",
            ),
            models.UniqueConstraint(
                fields=["payment"],
                condition=Q(kind="payment", allocation__isnull=True),
                name="halooutbox_one_record_per_payment",
            ),
            models.UniqueConstraint(
                fields=["payment"],
                condition=Q(kind="refund", status__in=["pending", "failed"])
                & Q(allocation__isnull=True),
                name="halooutbox_one_open_refund_per_payment",
            ),
            models.UniqueConstraint(
                fields=["allocation"],
                condition=Q(kind="payment"),
                name="halooutbox_one_record_per_allocation",
            ),
            models.UniqueConstraint(
                fields=["allocation"],
                condition=Q(kind="refund", status__in=["pending", "failed"]),
                name="halooutbox_one_open_refund_per_allocation",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt"])]

    def __str__(self):
        return f"{self.get_kind_display()} ({self.get_status_display().lower()})"

    @classmethod
    def queue_refund(cls, payment, allocation=None):
        """A row correcting Halo's record of `payment` (of its `allocation`, for a payment
        of several invoices) to what is left of it after refunds; an open one is reused
        (it sends the latest figure) and put back in line."""
        open_rows = cls.objects.filter(
            payment=payment,
            allocation=allocation,
            kind=cls.Kind.REFUND,
            status__in=[cls.Status.PENDING, cls.Status.FAILED],
        )
        if not open_rows.update(status=cls.Status.PENDING, next_attempt=timezone.now()):
            row = cls.objects.create(
                tenant_id=payment.tenant_id,
                kind=cls.Kind.REFUND,
                payment=payment,
                allocation=allocation,
            )
            _queue_delivery(row.pk)

    def claim(self):
        """Take the row for one delivery attempt; False when another worker has it. The
        attempt is counted before Halo is called, so a worker killed mid-call leaves a
        trace and the next attempt checks Halo before creating anything."""
        now = timezone.now()
        taken = HaloOutbox.objects.due(now).filter(pk=self.pk)
        if not taken.update(next_attempt=now + self.LEASE, attempts=F("attempts") + 1):
            return False
        self.refresh_from_db()
        return True

    def succeed(self, halo_id=""):
        self._set(status=self.Status.DELIVERED, delivered=timezone.now(), halo_id=str(halo_id))

    def defer(self, error):
        """A transient failure: try again after a backoff doubling from a minute."""
        delay = min(60 * 2 ** max(self.attempts - 1, 0), settings.PAYMENTS_OUTBOX_MAX_BACKOFF)
        self._set(next_attempt=timezone.now() + timedelta(seconds=delay), last_error=str(error))

    def fail(self, error):
        """A permanent failure: it waits for staff (Retry in the admin) after a fix."""
        self._set(status=self.Status.FAILED, last_error=str(error))

    def drop(self, reason):
        self._set(status=self.Status.NOT_NEEDED, last_error=reason)

    def retry(self):
        if self.status != self.Status.FAILED:
            return False
        self._set(status=self.Status.PENDING, next_attempt=timezone.now())
        return True

    def _set(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)
        HaloOutbox.objects.filter(pk=self.pk).update(**fields)


class SavedPaymentMethodQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)


class SavedPaymentMethod(models.Model):
    """A card a customer saved on a pay page, with the consent they gave, for auto-pay.

    Only the processor's token is kept (never a card number). One is active per customer:
    saving another replaces it.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="saved_payment_methods"
    )
    processor = models.CharField(max_length=10, choices=PaymentSettings.Processor.choices)
    reference = models.CharField(
        "processor token", max_length=255, blank=True, help_text="E.g. Stripe's pm_…"
    )
    processor_customer = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    brand = models.CharField(max_length=20, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    consent_text = models.TextField()
    consented_at = models.DateTimeField()
    consent_email = models.EmailField(blank=True)
    consent_ip = models.GenericIPAddressField(null=True, blank=True)
    source_payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source_setup = models.ForeignKey(
        "CardSetup", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    covers_from = models.DateField(
        null=True,
        blank=True,
        help_text="Saved to replace a card: auto-pay keeps covering invoices from the day the "
        "replaced card's consent did (the consent text says so).",
    )
    active = models.BooleanField(default=True)
    revoked = models.DateTimeField(null=True, blank=True)

    objects = SavedPaymentMethodQuerySet.as_manager()

    class Meta:
        ordering = ["-consented_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(active=True),
                name="savedpaymentmethod_one_active_per_customer",
            )
        ]

    def __str__(self):
        return f"{self.brand or 'Card'} •••• {self.last4 or '????'}"

    @classmethod
    def save_from(cls, payment, method):
        """Keep the method a payment with consent used; it replaces the customer's last."""
        customer = payment.customer()
        if customer is None:
            return None
        return cls.replace(
            customer,
            payment.processor,
            method,
            brand=method.brand or payment.card_brand,
            last4=method.last4 or payment.card_last4,
            consent_text=payment.consent_text,
            consented_at=payment.created,
            consent_email=payment.payer_email,
            consent_ip=payment.client_ip,
            source_payment=payment,
        )

    @classmethod
    def replace(cls, customer, processor, method, **fields):
        """Save `method` (a processor's `SavedMethod`) as the customer's card for auto-pay,
        revoking the one it replaces (one is active per customer). `fields`: the consent
        and where it came from."""
        with transaction.atomic():
            # Serialises every save for this customer (a setup and a pay page finishing
            # together): the one-active-card constraint is never raced into an error.
            Customer.objects.select_for_update().filter(pk=customer.pk).first()
            cls.objects.filter(customer=customer, active=True).update(
                active=False, revoked=timezone.now()
            )
            fields.setdefault("brand", method.brand)
            fields.setdefault("last4", method.last4)
            return cls.objects.create(
                tenant_id=customer.tenant_id,
                customer=customer,
                processor=processor,
                reference=method.reference,
                processor_customer=method.processor_customer,
                details=method.details,
                **fields,
            )

    def first_covered_day(self, tz):
        """The first invoice date auto-pay may charge with this card: the day consent was
        given (in the tenant's time zone `tz`), or the earlier day a replaced card's consent
        covered (`covers_from`)."""
        agreed = timezone.localtime(self.consented_at, tz).date()
        return min(self.covers_from, agreed) if self.covers_from else agreed

    def revoke(self):
        self.active, self.revoked = False, timezone.now()
        self.save(update_fields=["active", "revoked"])


class CardSetupQuerySet(models.QuerySet):
    def stale(self):
        """Pending well past a hosted form's expiry: neither the customer's return nor the
        webhook finished them (see `tasks.close_stale_payments`)."""
        age = timedelta(minutes=settings.PAYMENTS_STRIPE_SESSION_MINUTES + 15)
        return self.filter(status=CardSetup.Status.PENDING, created__lt=timezone.now() - age)


class CardSetup(models.Model):
    """A customer saving a card for auto-pay without paying anything, from their account
    page: the processor checks the card (Stripe: Checkout in setup mode, a SetupIntent) and
    only then is it saved, replacing the customer's card (`SavedPaymentMethod.replace`).

    Nothing is charged, so nothing is in flight: a setup abandoned at the processor stays
    pending and is simply never finished. Finishing is idempotent (a row lock and the
    status), so the customer's return and the processor's webhook may both try."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the processor"
        SUCCEEDED = "succeeded", "Card saved"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="card_setups")
    public_id = models.CharField(max_length=64, unique=True, default=new_token, editable=False)
    idempotency_key = models.CharField(max_length=64, unique=True)
    processor = models.CharField(max_length=10, choices=PaymentSettings.Processor.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    checkout_session = models.CharField(max_length=255, blank=True)
    checkout_url = models.URLField(max_length=1000, blank=True)
    consent_text = models.TextField()
    consent_email = models.EmailField(blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    covers_from = models.DateField(null=True, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    saved = models.ForeignKey(
        SavedPaymentMethod, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    finished = models.DateTimeField(null=True, blank=True)

    objects = CardSetupQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "card setup"

    def __str__(self):
        return f"Card setup {self.public_id[:8]} ({self.get_status_display()})"

    def finish(self, outcome):
        """Apply the processor's `Outcome` once: succeeded saves the card (replacing the
        customer's), failed keeps why. Answers whether this call changed anything."""
        if outcome is None or outcome.status == Payment.Status.PENDING:
            return False
        with transaction.atomic():
            current = CardSetup.objects.select_for_update().get(pk=self.pk)
            if current.status != self.Status.PENDING:
                self.refresh_from_db()
                return False
            if outcome.status == Payment.Status.SUCCEEDED and outcome.method is not None:
                current.saved = SavedPaymentMethod.replace(
                    current.customer,
                    current.processor,
                    outcome.method,
                    consent_text=current.consent_text,
                    consented_at=current.created,
                    consent_email=current.consent_email,
                    consent_ip=current.client_ip,
                    covers_from=current.covers_from,
                    source_setup=current,
                )
                current.status = self.Status.SUCCEEDED
            else:
                current.status = self.Status.FAILED
                current.failure_message = (outcome.failure_message or "The card was refused.")[:500]
            current.detail = outcome.detail[:500]
            current.finished = timezone.now()
            current.save()
            if current.status == self.Status.SUCCEEDED:
                signals.card_saved.send(CardSetup, setup=current)
        self.refresh_from_db()
        return True


class AutoPaySkip(models.Model):
    """Staff took one invoice out of auto-pay (delete the row to put it back)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    invoice = models.OneToOneField(Invoice, on_delete=models.CASCADE, related_name="autopay_skip")
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "auto-pay skip"

    def __str__(self):
        return f"Skip auto-pay of {self.invoice}"


class AutoPayAttemptQuerySet(models.QuerySet):
    def failed(self):
        return self.filter(payment__status=Payment.Status.FAILED)


class AutoPayAttempt(models.Model):
    """One auto-pay charge of an invoice; at most one per invoice per day (the constraint).
    How it went is its payment's status (a Stripe charge may settle later, by webhook)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="autopay_attempts")
    day = models.DateField(help_text="In the tenant's time zone.")
    payment = models.OneToOneField(
        Payment, null=True, blank=True, on_delete=models.SET_NULL, related_name="autopay_attempt"
    )
    note = models.CharField(max_length=500, blank=True, help_text="Why nothing was charged.")
    created = models.DateTimeField(default=timezone.now, editable=False)

    objects = AutoPayAttemptQuerySet.as_manager()

    class Meta:
        ordering = ["-day", "-created"]
        verbose_name = "auto-pay attempt"
        constraints = [
            models.UniqueConstraint(fields=["invoice", "day"], name="autopayattempt_once_a_day")
        ]

    def __str__(self):
        return f"Auto-pay of {self.invoice} on {self.day}"

    @property
    def outcome(self):
        if self.payment is None:
            return f"Not charged: {self.note}" if self.note else "Not charged"
        if self.payment.status == Payment.Status.FAILED:
            return f"Failed: {self.payment.failure_message or self.payment.failure_code}"
        return self.payment.get_status_display()
