"""Payment reminders (dunning): a tenant's schedule, one durable record per invoice and step,
customers' opt-outs, and the staff notice of a payment that landed.

Never twice: a reminder is *claimed* by inserting its row (unique per invoice and step) in a
transaction of its own, committed before the email is sent, so two workers, a re-run and a
restart find the row and move on. A worker that dies between the claim and the send leaves
the row "sending": it is never sent again by itself (at most once per step), and after
`UNCONFIRMED_AFTER` it shows as *unconfirmed* to staff, who can send it again by hand.
"""

from datetime import timedelta
from email.utils import getaddresses

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, validate_email
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import Customer, Invoice
from portal.models import OnePerTenant, Tenant

DEFAULT_STEPS = (-3, 1, 7, 14)
#: Steps lie within this many days of the due date, either side.
STEP_RANGE = 120
MAX_STEPS = 10
#: A step the portal could not send on its day (worker down, reminders just switched on) still
#: goes out this many days later, unless a later step is due by then.
CATCH_UP_DAYS = 2
#: A claim not confirmed sent or failed after this long: its worker died while sending.
UNCONFIRMED_AFTER = timedelta(minutes=15)


def default_steps():
    return list(DEFAULT_STEPS)


def validate_steps(value):
    if not isinstance(value, list) or not all(
        isinstance(step, int) and not isinstance(step, bool) for step in value
    ):
        raise ValidationError("Enter whole numbers of days, for example -3, 1, 7, 14.")
    if len(value) > MAX_STEPS:
        raise ValidationError(f"At most {MAX_STEPS} reminders per invoice.")
    if len(set(value)) != len(value):
        raise ValidationError("Each day may appear once.")
    if any(abs(step) > STEP_RANGE for step in value):
        raise ValidationError(f"Days lie between -{STEP_RANGE} and {STEP_RANGE}.")


def parse_addresses(text):
    """Email addresses from text separated by commas, semicolons or lines; ValidationError
    naming the first one that is not an address."""
    found = [address for _, address in getaddresses([text.replace(";", ",").replace("\n", ",")])]
    addresses = []
    for address in filter(None, (a.strip() for a in found)):
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(f"{address!r} is not an email address.") from None
        if address.lower() not in {a.lower() for a in addresses}:
            addresses.append(address)
    return addresses


def validate_addresses(text):
    parse_addresses(text)


class ReminderSettings(OnePerTenant):
    """A tenant's reminder schedule and the staff notice of payments; off until switched on
    (customers must not start getting emails because the portal was upgraded)."""

    class Recipients(models.TextChoices):
        OWNERS = "owners", "The tenant's owners"
        LIST = "list", "These addresses"

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="reminder_settings"
    )
    enabled = models.BooleanField(
        "send payment reminders",
        default=False,
        help_text="Email customers about unpaid invoices on the days below. Reminders stop "
        "once an invoice is paid or voided, and for invoices auto-pay will charge.",
    )
    steps = models.JSONField(
        "schedule",
        default=default_steps,
        validators=[validate_steps],
        help_text="Days relative to the invoice's due date, separated by commas: -3 is three "
        "days before, 0 the due date, 7 a week after. Each goes out once per invoice.",
    )
    send_hour = models.PositiveSmallIntegerField(
        "send from",
        default=9,
        validators=[MaxValueValidator(23)],
        help_text="Hour of the day (the tenant's time zone) from which the day's reminders go out.",
    )
    from_name = models.CharField(
        "from name", max_length=100, blank=True, help_text="Blank: the tenant's display name."
    )
    reply_to = models.EmailField(
        "reply-to address", blank=True, help_text="Blank: the tenant's support email."
    )
    payment_notices = models.BooleanField(
        "email staff when a payment lands",
        default=False,
        help_text="One email per payment taken online or by auto-pay.",
    )
    payment_notice_to = models.CharField(
        "send payment emails to",
        max_length=10,
        choices=Recipients.choices,
        default=Recipients.OWNERS,
    )
    payment_notice_emails = models.TextField(
        "payment email addresses",
        blank=True,
        validators=[validate_addresses],
        help_text="When sending to these addresses: one per line or separated by commas.",
    )

    class Meta:
        verbose_name = "reminder settings"
        verbose_name_plural = "reminder settings"

    def __str__(self):
        return f"Reminders of {self.tenant}"

    def clean(self):
        listed = self.payment_notice_to == self.Recipients.LIST
        if self.payment_notices and listed and not self.payment_notice_emails.strip():
            raise ValidationError({"payment_notice_emails": "Enter at least one address."})

    def sorted_steps(self):
        return sorted(set(self.steps or []))

    def day_due(self, now):
        """The tenant's local date when reminders should go out at `now`, or None (switched
        off, or before the send hour there)."""
        local = now.astimezone(self.tenant.tz)
        return local.date() if self.enabled and local.hour >= self.send_hour else None

    def notice_recipients(self):
        if self.payment_notice_to == self.Recipients.LIST:
            return parse_addresses(self.payment_notice_emails)
        return sorted(set(self.tenant.owner_emails()))


def step_label(step):
    if step < 0:
        return f"{-step} day{'s' if step != -1 else ''} before due"
    if step == 0:
        return "On the due date"
    return f"{step} day{'s' if step != 1 else ''} overdue"


class ReminderQuerySet(models.QuerySet):
    def unconfirmed(self, now=None):
        old = (now or timezone.now()) - UNCONFIRMED_AFTER
        return self.filter(status=Reminder.Status.SENDING, claimed_at__lt=old)

    def need_attention(self, now=None):
        """Failed, or claimed by a worker that never said how it went."""
        old = (now or timezone.now()) - UNCONFIRMED_AFTER
        sending_long = Q(status=Reminder.Status.SENDING, claimed_at__lt=old)
        return self.filter(Q(status=Reminder.Status.FAILED) | sending_long)


class Reminder(models.Model):
    """One step of one invoice's reminders: claimed once, then sent, failed or cancelled."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Not sent"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="reminders")
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="reminders"
    )
    step = models.SmallIntegerField(help_text="Days from the due date.")
    due_date = models.DateField(help_text="The invoice's due date when it was claimed.")
    day = models.DateField(help_text="The day it went out for (the tenant's time zone).")
    to = models.EmailField("sent to", blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING)
    claimed_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1)
    error = models.CharField(max_length=500, blank=True, help_text="Why it was not sent.")

    objects = ReminderQuerySet.as_manager()

    class Meta:
        ordering = ["-claimed_at"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "step"], name="reminder_once_per_step")
        ]
        indexes = [models.Index(fields=["tenant", "status", "-claimed_at"])]

    def __str__(self):
        return f"Reminder of invoice {self.invoice.display_number()} ({step_label(self.step)})"

    @property
    def step_label(self):
        return step_label(self.step)

    @property
    def is_unconfirmed(self):
        return (
            self.status == self.Status.SENDING
            and self.claimed_at < timezone.now() - UNCONFIRMED_AFTER
        )

    @property
    def state(self):
        if self.is_unconfirmed:
            return "Unconfirmed: the worker stopped while sending; it may not have gone out"
        if self.status in (self.Status.FAILED, self.Status.CANCELLED) and self.error:
            return f"{self.get_status_display()}: {self.error}"
        return self.get_status_display()

    @classmethod
    def claim(cls, due, now):
        """Take `due`'s step for sending: the new row, or None when another worker, an
        earlier run or a previous life of this one took it. Committed at once (durable):
        the claim must be on disk before anything is sent."""
        try:
            with transaction.atomic(durable=True):
                return cls.objects.create(
                    tenant_id=due.invoice.tenant_id,
                    invoice=due.invoice,
                    customer=due.invoice.customer,
                    step=due.step,
                    due_date=due.invoice.due_date,
                    day=due.day,
                    to=due.to,
                    claimed_at=now,
                )
        except IntegrityError:
            return None

    def reclaim(self, now):
        """Staff's "send again" of a failed or unconfirmed reminder: claimed again (once,
        by a conditional update), or False when it was sent or another try took it."""
        again = Q(status=self.Status.FAILED) | Q(
            status=self.Status.SENDING, claimed_at__lt=now - UNCONFIRMED_AFTER
        )
        taken = Reminder.objects.filter(again, pk=self.pk).update(
            status=self.Status.SENDING,
            claimed_at=now,
            attempts=models.F("attempts") + 1,
            error="",
        )
        if taken:
            self.refresh_from_db()
        return bool(taken)

    def finish(self, status, error="", to=None):
        self.status, self.error = status, error[:500]
        fields = ["status", "error"]
        if to is not None:
            self.to = to
            fields.append("to")
        if status == self.Status.SENT:
            self.sent_at = timezone.now()
            fields.append("sent_at")
        self.save(update_fields=fields)


class ReminderOptOut(models.Model):
    """A customer who gets no more reminders: from the link in a reminder, or set by staff
    (delete the row to send them again)."""

    class Source(models.TextChoices):
        LINK = "link", "The customer, from a reminder's link"
        STAFF = "staff", "Staff"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer = models.OneToOneField(
        Customer, on_delete=models.CASCADE, related_name="reminder_opt_out"
    )
    source = models.CharField(
        "opted out by", max_length=10, choices=Source.choices, default=Source.STAFF
    )
    note = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField("since", default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )

    class Meta:
        ordering = ["-created"]
        verbose_name = "reminder opt-out"

    def __str__(self):
        return f"No reminders for {self.customer}"


class PaymentNotice(models.Model):
    """The staff email about one payment that landed: claimed once per payment (the
    unique payment), as reminders are."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    payment = models.OneToOneField(
        "payments.Payment", on_delete=models.CASCADE, related_name="staff_notice"
    )
    to = models.TextField("sent to", blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENDING)
    created = models.DateTimeField(default=timezone.now, editable=False)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "payment email to staff"
        verbose_name_plural = "payment emails to staff"

    def __str__(self):
        return f"Payment email of {self.created:%Y-%m-%d %H:%M}"

    @classmethod
    def claim(cls, payment):
        try:
            with transaction.atomic(durable=True):
                return cls.objects.create(tenant_id=payment.tenant_id, payment=payment)
        except IntegrityError:
            return None
