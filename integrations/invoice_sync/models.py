"""Invoice sync's settings and bookkeeping: where each tenant's sync stands, what it did,
how often staff may start it, and the webhook deliveries Halo sent."""

import hmac
import secrets
from datetime import timedelta

from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.models import InvoiceNumberField
from portal.crypto import token_digest
from portal.models import OnePerTenant, Tenant
from portal.runs import TenantRun, active_run_constraint


class InvoiceSyncSettings(OnePerTenant):
    """A tenant's choices for invoice sync, and the Basic credentials of its Halo webhook."""

    class HaloRole(models.TextChoices):
        PRIMARY = "primary", "Primary: Halo issues the invoices"
        SECONDARY = "secondary", "Secondary: the accounting system issues them, Halo mirrors"

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="invoice_sync_settings"
    )
    created_since = models.DateField(
        "invoices created since",
        null=True,
        blank=True,
        help_text="Only invoices dated on or after this day are pulled (blank: all). "
        "Moving it earlier re-reads Halo from the new date on the next sync.",
    )
    number_field = models.CharField(
        "invoice number field",
        max_length=12,
        choices=InvoiceNumberField.choices,
        default=InvoiceNumberField.HALO_ID,
        help_text="Shown on pay links, PDFs and in search, and used to look invoices up.",
    )
    halo_role = models.CharField(
        "Halo is",
        max_length=10,
        choices=HaloRole.choices,
        default=HaloRole.PRIMARY,
        help_text="As a secondary integration every invoice is synced and the manual fetch "
        "actions are not offered (the schedule and webhooks keep it current).",
    )
    webhook_username = models.CharField(max_length=64, blank=True, editable=False)
    webhook_password_digest = models.CharField(max_length=64, blank=True, editable=False)
    webhook_halo_id = models.CharField("Halo webhook ID", max_length=64, blank=True, editable=False)
    webhook_registered = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "invoice sync settings"
        verbose_name_plural = "invoice sync settings"

    def __str__(self):
        return f"Invoice sync of {self.tenant}"

    @property
    def is_primary(self):
        return self.halo_role == self.HaloRole.PRIMARY

    @property
    def cutoff(self):
        """The invoice date before which nothing is pulled (None: everything)."""
        return self.created_since if self.is_primary else None

    def new_webhook_credentials(self):
        """Generate Basic credentials (stored hashed, like API tokens: 256 random bits need
        no slow hash); returns them in plain text, once, for registering in Halo."""
        username, password = f"halo-{secrets.token_hex(6)}", secrets.token_urlsafe(32)
        self.webhook_username = username
        self.webhook_password_digest = token_digest(password)
        return username, password

    @classmethod
    def webhook_tenant_id(cls, tenant_code, username, password):
        """The id of the tenant these Basic credentials open, or None. Constant time, and an
        unknown tenant costs the same as a wrong password, so no answer reveals which it was.
        (One plain query: this runs for every delivery Halo sends.)"""
        found = cls.objects.filter(tenant__slug=tenant_code).values_list(
            "tenant_id", "webhook_username", "webhook_password_digest"
        )[:1]
        tenant_id, expected_user, expected_digest = found[0] if found else (None, "", "")
        user_ok = hmac.compare_digest(str(username).encode(), expected_user.encode())
        password_ok = hmac.compare_digest(token_digest(password).encode(), expected_digest.encode())
        return tenant_id if expected_digest and user_ok and password_ok else None


class SyncState(OnePerTenant):
    """Where a tenant's sync stands in Halo's data (the watermark).

    Invoices are read in `last_modified` order; their cursor is the newest `last_modified`
    stored, moved in the same transaction as the page it covers, so a failed run resumes
    where it stopped and nothing behind a cursor is ever skipped. Clients have no change
    time in Halo: their cursor is when the last complete read of changed clients began.
    The times are Halo's clock, never the portal's.
    """

    FEEDS = ("clients", "invoices")

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="invoice_sync_state"
    )
    clients_cursor = models.DateTimeField(null=True, blank=True)
    invoices_cursor = models.DateTimeField(null=True, blank=True)
    synced_from = models.DateField(
        null=True, blank=True, help_text="The created-since date the current pass began with."
    )
    initial_completed = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"Sync state of {self.tenant}"

    def cursor(self, feed):
        return getattr(self, f"{feed}_cursor")

    def move(self, feed, cursor):
        """Record a committed page (call inside its transaction)."""
        changes = {f"{feed}_cursor": cursor}
        SyncState.objects.filter(pk=self.pk).update(**changes)
        for name, value in changes.items():
            setattr(self, name, value)

    def restart(self, synced_from):
        """Forget the cursors: the next run reads everything (from `synced_from`) again."""
        for feed in self.FEEDS:
            setattr(self, f"{feed}_cursor", None)
        self.synced_from = synced_from
        self.initial_completed = None
        self.save()

    def needs_restart(self, cutoff):
        """True when the created-since date moved earlier than the data already read."""
        return self.synced_from is not None and (cutoff is None or cutoff < self.synced_from)

    def complete_initial(self):
        self.initial_completed = timezone.now()
        self.save(update_fields=["initial_completed"])


class InvoiceSyncRun(TenantRun):
    """One run of invoice sync for a tenant: what it stored, asked of Halo, and any error.

    Claimed and kept alive as every run is (`portal.runs`): one active run per tenant."""

    class Kind(models.TextChoices):
        INITIAL = "initial", "Initial sync"
        NEW = "new", "Fetch new data"
        UNPAID = "unpaid", "Fetch unpaid invoices"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Staff"
        CLI = "cli", "Command line"
        DEMO = "demo", "Demo"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invoice_sync_runs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    created = models.DateTimeField(default=timezone.now)
    customers_saved = models.PositiveIntegerField(default=0)
    contracts_saved = models.PositiveIntegerField(default=0)
    invoices_created = models.PositiveIntegerField(default=0)
    invoices_updated = models.PositiveIntegerField(default=0)
    invoices_skipped = models.PositiveIntegerField(
        default=0, help_text="Older than the portal's copy, or before the created-since date."
    )
    invoices_deleted = models.PositiveIntegerField(
        "marked deleted", default=0, help_text="Halo answered 404: deleted there."
    )
    pages = models.PositiveIntegerField(default=0)
    halo_requests = models.PositiveIntegerField(default=0)

    COUNTERS = (
        "customers_saved",
        "contracts_saved",
        "invoices_created",
        "invoices_updated",
        "invoices_skipped",
        "invoices_deleted",
        "pages",
        "halo_requests",
    )

    class Meta:
        db_table = "invoice_sync_syncrun"
        verbose_name = "invoice sync run"
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["tenant", "-created"], name="invoice_syn_tenant__6df364_idx")
        ]
        constraints = [active_run_constraint("invoicesyncrun_one_active_per_tenant")]

    def __str__(self):
        return f"{self.get_kind_display()} of {self.created:%Y-%m-%d %H:%M}"

    def add(self, counts):
        """Add a writer's counts (`{"invoices_created": 3, ...}`) to this run."""
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)


class ActionLimit(models.Model):
    """When staff last started a rate-limited action for a tenant.

    `claim` is one conditional UPDATE, so of two admins (or workers) racing, exactly one
    passes; the limit holds across every process because it lives in the database.
    """

    class Action(models.TextChoices):
        FETCH_NEW = "new", "Fetch new data"
        FETCH_UNPAID = "unpaid", "Fetch unpaid invoices"

    INTERVALS = {Action.FETCH_NEW: timedelta(hours=1), Action.FETCH_UNPAID: timedelta(hours=12)}

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices)
    last_run = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "action"], name="actionlimit_unique")
        ]

    def __str__(self):
        return f"{self.get_action_display()} of {self.tenant}"

    @classmethod
    def claim(cls, tenant, action):
        """Start `action` now if its interval has passed; returns (allowed, next allowed)."""
        now, interval = timezone.now(), cls.INTERVALS[action]
        try:
            with transaction.atomic():
                limit, _ = cls.objects.get_or_create(tenant=tenant, action=action)
        except IntegrityError:  # created by a racing claim in between
            limit = cls.objects.get(tenant=tenant, action=action)
        due = Q(last_run__isnull=True) | Q(last_run__lte=now - interval)
        if cls.objects.filter(due, pk=limit.pk).update(last_run=now):
            return True, now + interval
        return False, cls.next_allowed(tenant, action)

    @classmethod
    def release(cls, tenant, action, claimed_at):
        """Give back the claim made at `claimed_at` (its run failed or never ran), unless
        another claim replaced it since."""
        cls.objects.filter(tenant=tenant, action=action, last_run=claimed_at).update(last_run=None)

    @classmethod
    def next_allowed(cls, tenant, action):
        """When `action` may run next; None when it may run now."""
        last = (
            cls.objects.filter(tenant=tenant, action=action)
            .values_list("last_run", flat=True)
            .first()
        )
        allowed = last + cls.INTERVALS[action] if last else None
        return allowed if allowed and allowed > timezone.now() else None


class WebhookDeliveryQuerySet(models.QuerySet):
    def stuck(self, age=timedelta(minutes=10)):
        """Received but never processed (a broker outage lost the task)."""
        return self.filter(
            status=WebhookDelivery.Status.RECEIVED, received__lt=timezone.now() - age
        )


class WebhookDelivery(models.Model):
    """One notification Halo POSTed, stored before it is answered and processed later."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    delivery_id = models.CharField("Halo delivery ID", max_length=64)
    event = models.CharField(max_length=64, blank=True)
    object_id = models.CharField("Halo record ID", max_length=64, blank=True)
    halo_timestamp = models.CharField(max_length=40, blank=True)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    received = models.DateTimeField(default=timezone.now)
    processed = models.DateTimeField(null=True, blank=True)

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-received"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "delivery_id"], name="delivery_unique_id")
        ]
        indexes = [models.Index(fields=["status", "received"])]

    def __str__(self):
        return f"{self.event or 'delivery'} {self.object_id}".strip()

    @classmethod
    def receive(cls, tenant_id, payload):
        """Store a parsed delivery once; returns (delivery, created). Halo repeats itself."""
        fields = {
            "event": str(payload.get("event") or "")[:64].lower(),
            "object_id": str(payload.get("object_id") or "")[:64],
            "halo_timestamp": str(payload.get("timestamp") or "")[:40],
            "payload": payload,
        }
        delivery_id = str(payload["id"])[:64]
        try:
            with transaction.atomic():
                return cls.objects.create(
                    tenant_id=tenant_id, delivery_id=delivery_id, **fields
                ), True
        except IntegrityError:
            return cls.objects.get(tenant_id=tenant_id, delivery_id=delivery_id), False

    def settle(self, status, error=""):
        self.status, self.error, self.processed = status, error, timezone.now()
        WebhookDelivery.objects.filter(pk=self.pk).update(
            status=status, error=error, processed=self.processed, attempts=F("attempts") + 1
        )
