"""The partner's customers and invoices, whichever system issued them.

Halo is the master of what invoice sync copies here (`source=halo`): rows are keyed by Halo id
per tenant and rewritten in place by every sync, so nothing here is edited by hand. Portal
invoices (`source=portal`) will share the same table, so pay links, PDFs and payments have
one invoice model to work with.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db import models
from django.utils import timezone

from integrations.halo.records import custom_field_text
from portal.models import Tenant


class InvoiceNumberField(models.TextChoices):
    """Which number the portal shows and looks invoices up by (a tenant setting)."""

    HALO_ID = "halo_id", "Halo invoice ID"
    THIRD_PARTY = "third_party", "Third-party invoice number (thirdpartyinvoicenumber)"


def number_field(tenant):
    """The tenant's invoice number setting (kept with the invoice sync settings)."""
    settings = getattr(tenant, "invoice_sync_settings", None)
    return settings.number_field if settings else InvoiceNumberField.HALO_ID


class Customer(models.Model):
    """A Halo client of the partner: who invoices are addressed to."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="customers")
    halo_id = models.IntegerField("Halo client ID")
    name = models.CharField(max_length=255)
    account_ref = models.CharField(
        "account reference",
        max_length=100,
        blank=True,
        help_text="Halo's accounts ID of the client (else its ref), printed on invoices.",
    )
    billing_email = models.EmailField("billing email", max_length=254, blank=True)
    billing_first_name = models.CharField(max_length=100, blank=True)
    billing_last_name = models.CharField(max_length=100, blank=True)
    inactive = models.BooleanField(default=False)
    custom_fields = models.JSONField(default=list, blank=True, help_text="As Halo sends them.")
    halo_last_modified = models.DateTimeField(null=True, blank=True)
    synced = models.DateTimeField(null=True, blank=True, help_text="Last written from Halo.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "halo_id"], name="billing_customer_unique_halo_id"
            )
        ]

    def __str__(self):
        return self.name

    @property
    def billing_contact(self):
        return " ".join(filter(None, [self.billing_first_name, self.billing_last_name]))

    def custom_field(self, name):
        """A Halo custom field by name (e.g. "CFVendorCustomerId"): trimmed text, '' when
        unset (as `HaloClientRecord.custom_field`)."""
        for field in self.custom_fields or []:
            if field.get("name") == name:
                return custom_field_text(field.get("value"))
        return ""


class Contract(models.Model):
    """A Halo ClientContract, kept for its agreement subtype (which drives auto-pay)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="contracts")
    halo_id = models.IntegerField("Halo contract ID")
    client_halo_id = models.IntegerField(null=True, blank=True)
    ref = models.CharField(max_length=100, blank=True)
    subtype_id = models.IntegerField("agreement subtype ID", null=True, blank=True)
    subtype_name = models.CharField("agreement subtype", max_length=100, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "halo_id"], name="billing_contract_unique_halo_id"
            )
        ]

    def __str__(self):
        return self.ref or f"Contract {self.halo_id}"


class AutoPayRule(models.Model):
    """Invoices under contracts of this agreement subtype are paid automatically.

    Saving a rule re-flags the tenant's invoices, so the flag on every invoice always
    matches the rules (the sync flags new invoices the same way).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="autopay_rules")
    halo_subtype_id = models.IntegerField("agreement subtype ID")
    subtype_name = models.CharField("agreement subtype", max_length=100)
    enabled = models.BooleanField("auto-pay on", default=True)

    class Meta:
        ordering = ["subtype_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "halo_subtype_id"],
                name="billing_autopayrule_unique_subtype",
                violation_error_message="There is already a rule for this agreement subtype.",
            )
        ]

    def __str__(self):
        return f"{self.subtype_name} ({'on' if self.enabled else 'off'})"

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        self.reflag_invoices()

    def reflag_invoices(self):
        invoices = Invoice.objects.filter(tenant_id=self.tenant_id)
        invoices.filter(autopay_rule=self).exclude(contract_subtype_id=self.halo_subtype_id).update(
            autopay_rule=None
        )
        invoices.filter(contract_subtype_id=self.halo_subtype_id).update(
            autopay_rule=self if self.enabled else None
        )

    @classmethod
    def enabled_by_subtype(cls, tenant):
        return {
            rule.halo_subtype_id: rule for rule in cls.objects.filter(tenant=tenant, enabled=True)
        }


@dataclass(frozen=True)
class AgeingBucket:
    """Open invoices by how many days past their due date they are (no due date: current)."""

    key: str  # the invoice list's filter value
    label: str
    first: int | None  # first day overdue, or None
    last: int | None  # last day overdue, or None

    def holds(self, days_overdue):
        first, last = self.first, self.last
        return (first is None or days_overdue >= first) and (last is None or days_overdue <= last)

    def due_dates(self, today):
        """The condition on `due_date` for an invoice `today` to be in this bucket."""
        condition = models.Q()
        if self.first is not None:
            condition &= models.Q(due_date__lte=today - timedelta(days=self.first))
        if self.last is not None:
            condition &= models.Q(due_date__gte=today - timedelta(days=self.last))
        if self.first is None:
            condition |= models.Q(due_date=None)
        return condition


#: Receivables ageing, as customers' statements, the invoice list and its chart read it.
AGEING_BUCKETS = (
    AgeingBucket("current", "Current", None, 0),
    AgeingBucket("1-30", "1–30 days", 1, 30),
    AgeingBucket("31-60", "31–60 days", 31, 60),
    AgeingBucket("61-90", "61–90 days", 61, 90),
    AgeingBucket("over-90", "Over 90 days", 91, None),
)


def ageing_bucket_of(days_overdue):
    """The index in `AGEING_BUCKETS` of an amount `days_overdue` days past its due date."""
    for index, bucket in enumerate(AGEING_BUCKETS):
        if bucket.holds(days_overdue):
            return index
    raise AssertionError(days_overdue)  # the buckets cover every integer


class InvoiceQuerySet(models.QuerySet):
    def drafts(self):
        """Portal invoices not issued yet: unposted until then, and owing nothing."""
        return self.filter(source=Invoice.Source.PORTAL, posted=False)

    def unpaid(self):
        """Money still owed: issued, not paid in full, not voided, not deleted in Halo."""
        return (
            self.filter(voided=False, deleted_in_halo=False)
            .exclude(payment_status=Invoice.PaymentStatus.PAID)
            .exclude(source=Invoice.Source.PORTAL, posted=False)  # drafts
        )

    def overdue(self, today: date | None = None):
        """Unpaid and past the due date on `today`, the tenant's date (as the ageing takes
        it; the server's when not given): the date decides, not Halo's last status."""
        return self.unpaid().filter(due_date__lt=today or timezone.localdate())

    def paid(self):
        return self.filter(payment_status=Invoice.PaymentStatus.PAID, voided=False)

    def in_ageing_bucket(self, key, today: date):
        """Unpaid invoices in the ageing bucket `key` (an `AgeingBucket.key`) on `today`."""
        bucket = next(b for b in AGEING_BUCKETS if b.key == key)
        return self.unpaid().filter(bucket.due_dates(today))

    def ageing(self, today: date):
        """Amounts due of unpaid invoices by currency and ageing bucket on `today`, in one
        query: `{currency: [(amount, invoices) per bucket of AGEING_BUCKETS]}` ('' is the
        currency of invoices that name none)."""
        sums: dict[str, models.Aggregate] = {}
        for index, bucket in enumerate(AGEING_BUCKETS):
            condition = bucket.due_dates(today)
            sums[f"due_{index}"] = models.Sum("amount_due", filter=condition)
            sums[f"count_{index}"] = models.Count("pk", filter=condition)
        rows = self.unpaid().order_by().values("currency").annotate(**sums)
        return {
            row["currency"]: [
                (row[f"due_{i}"] or Decimal(0), row[f"count_{i}"])
                for i in range(len(AGEING_BUCKETS))
            ]
            for row in rows
        }

    def for_ref(self, tenant, ref):
        """Invoices a customer-facing reference names, per the tenant's number setting:
        the Halo invoice ID, or the third-party invoice number."""
        ref = str(ref).strip()
        invoices = self.filter(tenant=tenant)
        if number_field(tenant) == InvoiceNumberField.THIRD_PARTY:
            if not ref:
                return invoices.none()
            # Portal-issued invoices are known by their own number (what their PDF shows).
            portal_number = models.Q(source=Invoice.Source.PORTAL, invoice_number=ref)
            return invoices.filter(models.Q(third_party_number=ref) | portal_number)
        # isdigit() alone accepts other scripts' digits ("١٢٣").
        is_id = ref.isascii() and ref.isdigit()
        return invoices.filter(halo_id=int(ref)) if is_id else invoices.none()


class InvoiceFacts:
    """An invoice's number and state as customers see them, from its own fields alone.

    `Invoice` has them, and so do the plain rows that long lists read instead of models
    (`billing.accounts.statement.ListedInvoice`): building hundreds of models costs more
    than the page around them, and the rules stay written once."""

    __slots__ = ()

    def display_number(self):
        """The number customers see: per the tenant's setting, falling back to the Halo ID
        (no third-party number yet), then to the portal's own number."""
        if self.source == Invoice.Source.PORTAL:
            # The portal's own gapless number, also after export to Halo; drafts have none.
            return self.invoice_number or "Draft"
        if number_field(self.tenant) == InvoiceNumberField.THIRD_PARTY and self.third_party_number:
            return self.third_party_number
        if self.halo_id is not None:
            return str(self.halo_id)
        return self.invoice_number

    @property
    def is_draft(self):
        """A portal invoice not issued yet (as `InvoiceQuerySet.drafts`)."""
        return self.source == Invoice.Source.PORTAL and not self.posted

    @property
    def is_open(self):
        return (
            not self.voided
            and not self.deleted_in_halo
            and not self.is_draft
            and self.payment_status != Invoice.PaymentStatus.PAID
        )


class Invoice(InvoiceFacts, models.Model):
    """One invoice of the partner to a customer; the one table for every source."""

    class Source(models.TextChoices):
        HALO = "halo", "Halo"
        PORTAL = "portal", "Portal"  # issued by a portal billing run (billing.invoicing)

    class PaymentStatus(models.TextChoices):
        UNPAID = "unpaid", "Unpaid"
        OVERDUE = "overdue", "Overdue"
        PARTLY_PAID = "partly_paid", "Partly paid"
        PAID = "paid", "Paid"

    #: Halo's `paymentstatus` integers.
    HALO_PAYMENT_STATUS = {
        0: PaymentStatus.UNPAID,
        -1: PaymentStatus.OVERDUE,
        1: PaymentStatus.PARTLY_PAID,
        2: PaymentStatus.PAID,
    }

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invoices")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.HALO)
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="invoices"
    )
    halo_id = models.IntegerField("Halo invoice ID", null=True, blank=True)
    invoice_number = models.CharField(max_length=64, blank=True, help_text="Halo's invoicenumber.")
    third_party_number = models.CharField(
        "third-party number",
        max_length=64,
        blank=True,
        help_text="Halo's thirdpartyinvoicenumber (the accounting system's number).",
    )
    reference = models.CharField(max_length=255, blank=True)
    invoice_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    date_paid = models.DateTimeField(null=True, blank=True)
    halo_created = models.DateTimeField(null=True, blank=True)
    halo_last_modified = models.DateTimeField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    tax_total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    amount_paid = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    amount_due = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    payment_status = models.CharField(
        max_length=12, choices=PaymentStatus.choices, default=PaymentStatus.UNPAID
    )
    posted = models.BooleanField(default=True)
    voided = models.BooleanField(default=False)
    deleted_in_halo = models.BooleanField(
        default=False, help_text="Halo answered 404 for it: it was deleted there."
    )
    contract_halo_id = models.IntegerField("Halo contract ID", null=True, blank=True)
    contract_subtype_id = models.IntegerField("agreement subtype ID", null=True, blank=True)
    contract_subtype_name = models.CharField("agreement subtype", max_length=100, blank=True)
    autopay_rule = models.ForeignKey(
        AutoPayRule,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invoices",
        verbose_name="auto-pay rule",
    )
    pay_link_url = models.URLField(
        "pay link", max_length=500, blank=True, help_text="generic_online_invoice_payment_url"
    )
    synced = models.DateTimeField(null=True, blank=True, help_text="Last written from Halo.")
    created = models.DateTimeField(default=timezone.now, editable=False)

    objects = InvoiceQuerySet.as_manager()

    class Meta:
        ordering = ["-invoice_date", "-halo_id"]
        constraints = [
            # NULLs are distinct: portal invoices without a Halo id never collide.
            models.UniqueConstraint(
                fields=["tenant", "halo_id"], name="billing_invoice_unique_halo_id"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "third_party_number"]),
            models.Index(fields=["tenant", "invoice_date"]),
        ]

    def __str__(self):
        return f"Invoice {self.display_number()}"

    @property
    def bill_to(self):
        """Whom the invoice is addressed to: the Halo client, or the organisation a portal
        invoice bills ('' when neither is known)."""
        if self.customer_id:
            return self.customer.name
        details = getattr(self, "portal", None)  # billing.invoicing.PortalInvoice
        return details.organisation.name if details is not None else ""

    @property
    def status_label(self):
        if self.deleted_in_halo:
            return "Deleted in Halo"
        if self.is_draft:
            return "Draft"
        if self.voided:
            return "Voided"
        today = timezone.localdate(timezone=self.tenant.tz)  # the tenant's, as the ageing
        if self.is_open and self.due_date and self.due_date < today:
            return self.PaymentStatus.OVERDUE.label
        return self.get_payment_status_display()


class InvoiceLine(models.Model):
    TENANT_PATH = "invoice__tenant"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    halo_id = models.IntegerField("Halo line ID", null=True, blank=True)
    item_halo_id = models.IntegerField("Halo item ID", null=True, blank=True)
    code = models.CharField(max_length=100, blank=True)
    description = models.CharField(max_length=500, blank=True)
    long_description = models.TextField(blank=True)
    quantity = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    unit_price = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    net_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    tax_rate = models.DecimalField(max_digits=7, decimal_places=4, default=0)
    tax_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "position"]

    def __str__(self):
        return self.description or self.code or f"Line {self.position + 1}"
