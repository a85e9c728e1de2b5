"""Portal invoicing: billing runs, portal invoices and their numbers, and stored PDFs.

Portal invoices are `billing.Invoice` rows (source "portal") with `billing.InvoiceLine` lines,
like Halo's, so pay pages and payments have one invoice model. `PortalInvoice` adds what only
the portal knows: status, number, billing period, credit notes and export to Halo. Invoices of
either source get `PdfVersion`s; `PdfServed` says which version each channel handed out.
"""

import hashlib
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from billing.invoicing.document_builder import document_line
from billing.models import Customer, Invoice, InvoiceLine
from integrations.billing_sync.models import OrganisationMapping, UsageCount
from portal.models import OnePerTenant, Organisation, Product, Tenant

PAY_LINK_WARNING = (
    "Prints the invoice's pay link, with a QR code of it, on the remittance slip when online "
    "payments give the invoice one and money is due. Off by default: some email filters "
    "block or quarantine PDFs that carry payment links, so invoices emailed as attachments "
    "may not reach your customers. Test with their mail before switching it on."
)


class InvoicingSettings(OnePerTenant):
    """A tenant's invoice document and portal billing choices (created with defaults)."""

    cached_on_tenant = True  # read on every PDF and pay page

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="invoicing_settings"
    )
    pay_link_in_pdf = models.BooleanField(
        "put the pay link in the PDF", default=False, help_text=PAY_LINK_WARNING
    )
    attach_pdf_on_export = models.BooleanField(
        "attach PDF to exported invoices",
        default=True,
        help_text="Export to Halo uploads the invoice PDF as an attachment of the Halo "
        "invoice, so Halo shows and emails the same PDF as the portal.",
    )
    payment_instructions = models.TextField(
        blank=True,
        help_text="Printed under “How to pay” on every invoice's remittance slip: bank "
        "details, references, one per line. Blank: asks customers to quote the number.",
    )
    tax_rate = models.DecimalField(
        "tax rate (%)",
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Charged on portal invoice lines. Halo invoices keep their own rates.",
    )
    tax_label = models.CharField(max_length=20, default="Tax", help_text="VAT, GST, Sales tax…")
    payment_terms_days = models.PositiveSmallIntegerField(
        "payment terms (days)",
        default=30,
        validators=[MaxValueValidator(365)],
        help_text="Portal invoices fall due this many days after issue (so do Halo invoices "
        "that have no due date).",
    )
    number_prefix = models.CharField(
        max_length=12,
        default="INV-",
        blank=True,
        help_text="Portal invoice numbers are this prefix and six digits (INV-000001). "
        "Numbers already issued keep the prefix they were issued with.",
    )

    class Meta:
        verbose_name = "invoicing settings"
        verbose_name_plural = "invoicing settings"

    def __str__(self):
        return f"Invoicing of {self.tenant}"

    def format_number(self, sequence):
        return f"{self.number_prefix}{sequence:06d}"

    def due_date(self, issued_on):
        return issued_on + timedelta(days=self.payment_terms_days)


class InvoiceCounter(models.Model):
    """The last portal invoice number a tenant issued. Issuing locks this one row, so
    numbers are gapless: one is taken only by the transaction that issues the invoice."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="+")
    last_number = models.PositiveIntegerField(default=0)

    def __str__(self):
        return f"{self.tenant}: {self.last_number}"

    @classmethod
    def take(cls, tenant, count):
        """The next `count` numbers; call inside the issuing transaction."""
        counter, _ = cls.objects.select_for_update().get_or_create(tenant=tenant)
        first = counter.last_number + 1
        counter.last_number += count
        counter.save(update_fields=["last_number"])
        return range(first, first + count)


class BillingRun(models.Model):
    """One billing period of a tenant: a draft invoice per organisation that has usage or
    one-off charges. Runs stay as the record of what was billed; they are never deleted."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="billing_runs")
    period_start = models.DateField()
    period_end = models.DateField()
    created = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        editable=False,
        related_name="+",
    )

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.CheckConstraint(
                condition=Q(period_end__gte=F("period_start")),
                name="billingrun_period_in_order",
                violation_error_message="The period must end on or after its first day.",
            ),
            models.UniqueConstraint(
                fields=["tenant", "period_start"],
                name="billingrun_unique_start",
                violation_error_message="There is already a billing run for this period.",
            ),
        ]

    def __str__(self):
        return f"Billing run {self.period_start:%d %b %Y} – {self.period_end:%d %b %Y}"

    def clean(self):
        if not (self.tenant_id and self.period_start and self.period_end):
            return
        overlapping = BillingRun.objects.filter(
            tenant_id=self.tenant_id,
            period_start__lte=self.period_end,
            period_end__gte=self.period_start,
        ).exclude(pk=self.pk)
        if overlapping.exists():
            raise ValidationError(
                f"The period overlaps {overlapping.first()}: customers would be billed twice."
            )

    @transaction.atomic
    def build_drafts(self):
        """Create or refresh a draft per organisation from its current usage counts and
        one-off charges; organisations already issued in this run are left alone.
        Answers counts: drafts created, refreshed and removed (nothing left to bill)."""
        issued = set(
            self.invoices.exclude(status=PortalInvoice.Status.DRAFT).values_list(
                "organisation_id", flat=True
            )
        )
        drafts = {d.organisation_id: d for d in self.invoices.drafts().select_related("invoice")}
        usage = {}
        counts = UsageCount.objects.filter(
            tenant=self.tenant, quantity__gt=0, organisation__active=True, product__active=True
        ).select_related("product")
        for count in counts.order_by("product__name", "product__sku"):
            usage.setdefault(count.organisation_id, []).append(count)
        charges = {}
        for charge in OneOffCharge.objects.filter(
            Q(invoice__isnull=True) | Q(invoice__in=[d.invoice_id for d in drafts.values()]),
            tenant=self.tenant,
        ).select_related("product"):
            charges.setdefault(charge.organisation_id, []).append(charge)

        billable = (usage.keys() | charges.keys()) - issued
        gone = [d for org_id, d in drafts.items() if org_id not in billable]
        Invoice.objects.filter(pk__in=[d.invoice_id for d in gone]).delete()
        organisations = Organisation.objects.in_bulk(billable - drafts.keys())
        created = 0
        for org_id in sorted(billable):
            draft = drafts.get(org_id)
            if draft is None:
                draft = PortalInvoice.objects.create_draft(
                    organisations[org_id], self.period_start, self.period_end, run=self
                )
                created += 1
            draft.fill(usage.get(org_id, []), charges.get(org_id, []))
        return {"created": created, "refreshed": len(billable) - created, "removed": len(gone)}


class PortalInvoiceQuerySet(models.QuerySet):
    def drafts(self):
        return self.filter(status=PortalInvoice.Status.DRAFT)

    def issued(self):
        return self.exclude(status=PortalInvoice.Status.DRAFT)

    def exportable(self):
        """Issued invoices, credited ones included (Halo voids them); credit notes stay here:
        Halo takes no negative invoices."""
        return self.issued().filter(credit_note_of=None)

    def issue(self, user=None):
        """Number and issue the drafts among these, in one transaction per call: numbers
        come from the tenant's counter row, locked until commit, so two staff issuing at
        once get consecutive numbers and a failed issue leaves no gap. Answers the
        invoices issued (a draft issued meanwhile by someone else is skipped)."""
        with transaction.atomic():
            drafts = list(
                self.drafts()
                .select_for_update(of=("self",))
                .select_related("invoice", "tenant", "organisation")
                .order_by("tenant_id", "organisation__name", "pk")
            )
            for tenant_id in dict.fromkeys(d.tenant_id for d in drafts):
                batch = [d for d in drafts if d.tenant_id == tenant_id]
                tenant = batch[0].tenant
                numbers = InvoiceCounter.take(tenant, len(batch))
                today = timezone.localdate(timezone=tenant.tz)
                for details, sequence in zip(batch, numbers, strict=True):
                    details._mark_issued(sequence, today, user)
        return drafts


# Bases of their own: the form of from_queryset that django-stubs' mypy plugin can follow.
_PortalInvoiceManagerBase = models.Manager.from_queryset(PortalInvoiceQuerySet)


class PortalInvoiceManager(_PortalInvoiceManagerBase):
    def create_draft(self, organisation, period_start, period_end, *, run=None, **extra):
        """A draft and its `billing.Invoice` row (unposted, no number until issued)."""
        tenant = organisation.tenant
        mapping = (
            OrganisationMapping.objects.filter(organisation=organisation)
            .select_related("halo_client")
            .first()
        )
        customer = (
            Customer.objects.filter(tenant=tenant, halo_id=mapping.halo_client.halo_id).first()
            if mapping
            else None
        )
        invoice = Invoice.objects.create(
            tenant=tenant,
            source=Invoice.Source.PORTAL,
            customer=customer,
            currency=tenant.currency,
            posted=False,
        )
        return self.create(
            invoice=invoice,
            tenant=tenant,
            organisation=organisation,
            run=run,
            period_start=period_start,
            period_end=period_end,
            **extra,
        )


class PortalInvoice(models.Model):
    """What the portal adds to an invoice it issues itself.

    Drafts are rebuilt freely; issuing gives the next gapless number and freezes the
    invoice: from then on only a credit note changes what the customer owes.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ISSUED = "issued", "Issued"
        CREDITED = "credited", "Credited"

    invoice = models.OneToOneField(
        Invoice, on_delete=models.CASCADE, related_name="portal", editable=False
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="portal_invoices")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="portal_invoices"
    )
    run = models.ForeignKey(
        BillingRun,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="invoices",
        editable=False,
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.DRAFT, editable=False
    )
    period_start = models.DateField()
    period_end = models.DateField()
    sequence = models.PositiveIntegerField(null=True, blank=True, editable=False)
    number = models.CharField(max_length=64, blank=True, editable=False)
    issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        editable=False,
        related_name="+",
    )
    credit_note_of = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="credit_note",
        editable=False,
    )
    exported_at = models.DateTimeField("exported to Halo", null=True, blank=True, editable=False)
    export_error = models.TextField(blank=True, editable=False)
    halo_attachment_id = models.IntegerField(null=True, blank=True, editable=False)
    attached_pdf = models.ForeignKey(
        "PdfVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text="The PDF version attached to the Halo invoice.",
    )

    objects = PortalInvoiceManager()

    class Meta:
        ordering = ["-issued_at", "organisation__name"]
        verbose_name = "portal invoice"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "sequence"], name="portalinvoice_unique_number"
            )
        ]

    def __str__(self):
        if self.credit_note_of_id:
            return f"Credit note {self.number}"
        return f"Invoice {self.number}" if self.number else f"Draft for {self.organisation}"

    @property
    def is_draft(self):
        return self.status == self.Status.DRAFT

    @property
    def version_label(self):
        """The note beside the PDF's title, or None."""
        if self.is_draft:
            return "Draft – not issued"
        if self.credit_note_of_id:
            return f"Credit note for {self.credit_note_of.number}"
        if self.status == self.Status.CREDITED:
            return f"Credited by {self.credit_note.number} – do not pay"
        return None

    def fill(self, usage_counts, charges):
        """Replace a draft's lines: usage counts times product prices for the period, then
        one-off charges (claimed by this draft)."""
        tax_rate = InvoicingSettings.for_tenant(self.tenant).tax_rate
        lines = [
            InvoiceLine(
                code=count.product.sku,
                description=count.product.name,
                quantity=count.quantity,
                unit_price=count.product.unit_price,
                tax_rate=tax_rate,
                start_date=self.period_start,
                end_date=self.period_end,
            )
            for count in usage_counts
        ] + [
            InvoiceLine(
                code=charge.product.sku if charge.product else "",
                description=charge.description,
                quantity=charge.quantity,
                unit_price=charge.unit_price,
                tax_rate=tax_rate,
            )
            for charge in charges
        ]
        self.set_lines(lines)
        OneOffCharge.objects.filter(pk__in=[c.pk for c in charges]).update(invoice=self.invoice)

    def set_lines(self, lines):
        """Store unsaved lines on the invoice, priced as the PDF prices them, and total it."""
        invoice = self.invoice
        for position, line in enumerate(lines):
            line.invoice, line.position = invoice, position
            priced = document_line(line)
            line.net_amount, line.tax_amount = priced.net, priced.tax
            line.total = line.net_amount + line.tax_amount
        InvoiceLine.objects.filter(invoice=invoice).delete()
        InvoiceLine.objects.bulk_create(lines)
        invoice.tax_total = sum((line.tax_amount for line in lines), 0)
        invoice.total = sum((line.total for line in lines), 0)
        invoice.amount_due = invoice.total - invoice.amount_paid
        invoice.save(update_fields=["total", "tax_total", "amount_due"])

    def _mark_issued(self, sequence, issued_on, user):
        invoicing = InvoicingSettings.for_tenant(self.tenant)
        self.sequence, self.number = sequence, invoicing.format_number(sequence)
        self.status, self.issued_at, self.issued_by = self.Status.ISSUED, timezone.now(), user
        self.save(update_fields=["sequence", "number", "status", "issued_at", "issued_by"])
        invoice = self.invoice
        invoice.invoice_number = invoice.third_party_number = self.number
        invoice.invoice_date, invoice.due_date = issued_on, invoicing.due_date(issued_on)
        invoice.posted = True
        invoice.save(
            update_fields=[
                "invoice_number",
                "third_party_number",
                "invoice_date",
                "due_date",
                "posted",
            ]
        )

    def credit(self, user=None):
        """Cancel this issued invoice in full with a credit note (issued at once, numbered
        from the same sequence). The invoice becomes credited and voided for payment; the
        credit note owes nothing. Answers the credit note."""
        with transaction.atomic():
            original = (
                PortalInvoice.objects.select_for_update(of=("self",))
                .select_related("invoice", "organisation")
                .get(pk=self.pk)
            )
            if original.status != self.Status.ISSUED or original.credit_note_of_id:
                raise ValidationError(f"{original} is not an issued invoice: nothing to credit.")
            note = PortalInvoice.objects.create_draft(
                original.organisation,
                original.period_start,
                original.period_end,
                credit_note_of=original,
            )
            lines = original.invoice.lines.all()
            note.set_lines(
                [
                    InvoiceLine(
                        code=line.code,
                        description=line.description,
                        long_description=line.long_description,
                        item_halo_id=line.item_halo_id,
                        quantity=-line.quantity,
                        unit_price=line.unit_price,
                        tax_rate=line.tax_rate,
                        start_date=line.start_date,
                        end_date=line.end_date,
                    )
                    for line in lines
                ]
            )
            PortalInvoice.objects.filter(pk=note.pk).issue(user)
            Invoice.objects.filter(pk=note.invoice_id).update(
                payment_status=Invoice.PaymentStatus.PAID, amount_due=0
            )
            original.status = self.Status.CREDITED
            original.save(update_fields=["status"])
            Invoice.objects.filter(pk=original.invoice_id).update(voided=True)
        note.refresh_from_db()
        return note

    def record_export(self, *, exported, error=""):
        """Remember an export's outcome (the Halo id itself is on the invoice)."""
        self.export_error = error
        if exported:
            self.exported_at = timezone.now()
        self.save(
            update_fields=["export_error", "exported_at", "halo_attachment_id", "attached_pdf"]
        )


class OneOffCharge(models.Model):
    """A charge added by staff (setup fee, hardware, a discount when negative), billed with
    the organisation's next draft. On an issued invoice it can no longer change."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="one_off_charges")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, related_name="one_off_charges"
    )
    description = models.CharField(max_length=300)
    product = models.ForeignKey(
        Product,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Optional: the line goes to Halo as this product's mapped item.",
    )
    quantity = models.DecimalField(max_digits=12, decimal_places=4, default=1)
    unit_price = models.DecimalField(
        max_digits=12, decimal_places=4, help_text="Negative for a discount or credit."
    )
    invoice = models.ForeignKey(
        Invoice,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="one_off_charges",
        editable=False,
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        editable=False,
        related_name="+",
    )

    class Meta:
        ordering = ["-created"]
        verbose_name = "one-off charge"

    def __str__(self):
        return self.description

    @property
    def is_locked(self):
        """On an issued invoice: part of what the customer was billed."""
        details = getattr(self.invoice, "portal", None) if self.invoice_id else None
        return details is not None and not details.is_draft


class PdfVersionQuerySet(models.QuerySet):
    def without_content(self):
        return self.defer("content")


_PdfVersionManagerBase = models.Manager.from_queryset(PdfVersionQuerySet)


class PdfVersionManager(_PdfVersionManagerBase):
    def current(self, invoice, source, data_key):
        """The newest stored version made from this data, bytes included, or None."""
        return (
            self.filter(invoice=invoice, source=source, data_key=data_key)
            .order_by("-number")
            .first()
        )

    def store(self, invoice, source, data_key, content, **extra):
        """`(version, created)`: the version with these bytes from this data, made once.

        Two processes storing the first version of an invoice at once end with one row:
        the unique constraints settle the race and the loser answers the winner's row.
        """
        digest = hashlib.sha256(content).hexdigest()
        same = {"invoice": invoice, "source": source, "data_key": data_key, "sha256": digest}
        for _ in range(5):
            if found := self.filter(**same).first():
                return found, False
            latest = self.filter(invoice=invoice).aggregate(n=Max("number"))["n"] or 0
            try:
                with transaction.atomic():
                    version = self.create(
                        **same, number=latest + 1, size=len(content), content=content, **extra
                    )
                return version, True
            except IntegrityError:
                continue  # someone stored this content or took this number meanwhile
        raise IntegrityError(f"Could not store a PDF version of invoice {invoice.pk}")


class PdfVersion(models.Model):
    """One immutable PDF of an invoice, served byte for byte every time it is current.

    Bytes are stored in the database, not in files: the unique constraints that settle
    concurrent renders settle the bytes too (no orphan or missing files), deleting an
    invoice removes its PDFs, and web and worker processes on several machines share
    them through PostgreSQL with no shared media volume. Lists defer the content.
    """

    TENANT_PATH = "invoice__tenant"

    class Source(models.TextChoices):
        PORTAL = "portal", "Portal (rendered)"
        HALO = "halo", "Halo (attached PDF)"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="pdf_versions")
    number = models.PositiveIntegerField("version")
    source = models.CharField(max_length=10, choices=Source.choices)
    data_key = models.CharField(
        max_length=80,
        help_text="What it was made from: a hash of the invoice data (portal) or the Halo "
        "attachment (Halo).",
    )
    sha256 = models.CharField("SHA-256", max_length=64)
    size = models.PositiveIntegerField()
    content = models.BinaryField()
    halo_attachment_id = models.IntegerField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    objects = PdfVersionManager()

    class Meta:
        ordering = ["invoice", "-number"]
        verbose_name = "PDF version"
        constraints = [
            models.UniqueConstraint(fields=["invoice", "number"], name="pdfversion_unique_number"),
            models.UniqueConstraint(
                fields=["invoice", "source", "data_key", "sha256"],
                name="pdfversion_unique_content",
            ),
        ]

    def __str__(self):
        return f"v{self.number} ({self.get_source_display()})"

    @property
    def etag(self):
        return f'"{self.sha256}"'


class PdfServed(models.Model):
    """Which version a channel served (first and last time), and any fallback.

    One row per version, channel and fallback reason, touched at most once a minute, so
    serving a PDF costs a read, not a write.
    """

    TENANT_PATH = "invoice__tenant"
    TOUCH_EVERY = timedelta(minutes=1)

    class Channel(models.TextChoices):
        API = "api", "PDF API (Halo)"
        PAY_PAGE = "pay_page", "Pay page"
        ADMIN = "admin", "Admin"
        EXPORT = "export", "Export to Halo"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="pdf_deliveries")
    version = models.ForeignKey(PdfVersion, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    fallback_reason = models.CharField(
        max_length=500, blank=True, help_text="Why the preferred source was not used."
    )
    first_served = models.DateTimeField(default=timezone.now)
    last_served = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_served"]
        verbose_name = "PDF served"
        verbose_name_plural = "PDFs served"
        constraints = [
            models.UniqueConstraint(
                fields=["version", "channel", "fallback_reason"], name="pdfserved_unique"
            )
        ]

    def __str__(self):
        return f"{self.version} via {self.get_channel_display()}"

    @classmethod
    def record(cls, version, channel, fallback_reason=""):
        reason, now = fallback_reason[:500], timezone.now()
        memo_key = (version.pk, version.created, channel, reason)
        if (seen := _logged.get(memo_key)) and now - seen < cls.TOUCH_EVERY:
            return  # this process logged it within the minute: no query at all
        if len(_logged) >= 10_000:
            _logged.clear()
        _logged[memo_key] = now
        lookup = {"version": version, "channel": channel, "fallback_reason": reason}
        row = cls.objects.filter(**lookup).only("pk", "last_served").first()
        if row is None:
            try:
                with transaction.atomic():
                    cls.objects.create(invoice_id=version.invoice_id, **lookup)
            except IntegrityError:
                pass  # a concurrent request logged it
        elif now - row.last_served >= cls.TOUCH_EVERY:
            cls.objects.filter(pk=row.pk).update(last_served=now)


# When this process last logged each version, channel and reason: serving a stored PDF again
# within the minute costs no query for the log. (`created` in the key: ids are reused when a
# database is rolled back, as between tests.)
_logged: dict[tuple[int, datetime, str, str], datetime] = {}


class InvoicePdf(Invoice):
    """Every invoice, from Halo or the portal, as the admin's "Invoice PDFs" page shows it:
    preview, versions, what each channel served, regenerate."""

    class Meta:
        proxy = True
        verbose_name = "invoice PDF"
