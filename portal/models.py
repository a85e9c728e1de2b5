"""Tenants (partners), their staff, and the vendor-side catalogue every feature builds on."""

import secrets
import zoneinfo
from datetime import timedelta

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from portal.crypto import token_digest
from portal.runs import RunStatus

TIME_ZONE_CHOICES = [(name, name) for name in sorted(zoneinfo.available_timezones())]
CURRENCY_CHOICES = [
    ("GBP", "GBP - Pound sterling"),
    ("USD", "USD - US dollar"),
    ("EUR", "EUR - Euro"),
    ("AUD", "AUD - Australian dollar"),
    ("CAD", "CAD - Canadian dollar"),
    ("NZD", "NZD - New Zealand dollar"),
    ("ZAR", "ZAR - South African rand"),
]
LOCALE_CHOICES = [
    ("en_GB", "English (UK)"),
    ("en_US", "English (US)"),
    ("en_AU", "English (Australia)"),
    ("de_DE", "German"),
    ("fr_FR", "French"),
    ("nl_NL", "Dutch"),
]
hex_colour = RegexValidator(r"^#[0-9a-fA-F]{6}$", "Enter a colour as #RRGGBB, for example #0B6E4F.")


class TenantQuerySet(models.QuerySet):
    def for_user(self, user):
        """The tenants a user may open in the portal: all for superusers, else memberships."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(memberships__user=user).distinct()


class Tenant(models.Model):
    """A partner (MSP) using the portal. Everything else hangs off one."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(
        max_length=50,
        unique=True,
        help_text="The tenant code in pay links and webhook URLs. Changing it breaks links "
        "already sent to customers.",
    )
    time_zone = models.CharField(max_length=64, choices=TIME_ZONE_CHOICES, default="Europe/London")
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default="GBP")
    locale = models.CharField(
        max_length=5, choices=LOCALE_CHOICES, default="en_GB", help_text="Number and date format."
    )
    display_name = models.CharField(
        max_length=200,
        blank=True,
        help_text="Shown on invoices and pay pages; defaults to the name.",
    )
    logo = models.ImageField(upload_to="branding/", blank=True)
    accent_colour = models.CharField(max_length=7, default="#0B6E4F", validators=[hex_colour])
    address = models.TextField(blank=True, help_text="Postal address, one line per row.")
    support_email = models.EmailField(blank=True)
    support_phone = models.CharField(max_length=40, blank=True)
    created = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def brand_name(self):
        return self.display_name or self.name

    @property
    def tz(self):
        return zoneinfo.ZoneInfo(self.time_zone)

    def address_lines(self):
        return [line.strip() for line in self.address.splitlines() if line.strip()]

    def owner_emails(self):
        return list(
            self.memberships.filter(role=Membership.Role.OWNER, user__is_active=True)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )


class OnePerTenant(models.Model):
    """A tenant's one row of a feature's settings or state, made with defaults on first use.

    Subclasses declare `tenant` as a OneToOneField. `for_tenant` reads the row afresh (a
    sync reads its settings anew each run; cursors must never be stale), unless the class
    sets `cached_on_tenant`: then the row a select_related or an earlier call cached on the
    tenant object is used, for settings read many times per request.
    """

    cached_on_tenant = False

    class Meta:
        abstract = True

    @classmethod
    def for_tenant(cls, tenant):
        accessor = cls._meta.get_field("tenant").remote_field.get_accessor_name()
        if cls.cached_on_tenant:
            try:
                return getattr(tenant, accessor)
            except cls.DoesNotExist:
                pass
        row = cls.objects.get_or_create(tenant=tenant)[0]  # races end in one row
        if cls.cached_on_tenant:
            setattr(tenant, accessor, row)
        return row


class Membership(models.Model):
    """A staff user's role in one tenant; a user may belong to several tenants."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self):
        return f"{self.user} – {self.get_role_display()} of {self.tenant}"

    @property
    def can_edit(self):
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class InvitationQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(accepted_at__isnull=True, expires__gt=timezone.now())


class Invitation(models.Model):
    """An owner's invitation for someone, by email, to join a tenant with a role.

    Nothing changes for the invited person until they accept from the emailed link: no
    membership, no staff flag. An existing user must be logged in as the invitation's email
    to accept; someone new sets a password on the accept page. The link's token is 256
    random bits stored only as its SHA-256 hash (found by index, like API tokens), works
    once, and expires after `INVITATION_DAYS`.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(
        max_length=10, choices=Membership.Role.choices, default=Membership.Role.VIEWER
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    expires = models.DateTimeField(editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"Invitation of {self.email} to {self.tenant}"

    @classmethod
    def issue(cls, tenant, email, role, invited_by=None):
        """A new invitation; answers (invitation, token). The token is never stored. Earlier
        invitations of the same address to the tenant that were not accepted are replaced."""
        email = email.strip()
        cls.objects.filter(tenant=tenant, email__iexact=email, accepted_at__isnull=True).delete()
        invitation = cls(tenant=tenant, email=email, role=role, invited_by=invited_by)
        token = invitation.new_token()
        invitation.save()
        return invitation, token

    def new_token(self):
        """A fresh token and expiry (the previous link stops working once saved)."""
        token = secrets.token_urlsafe(32)
        self.digest = token_digest(token)
        self.expires = timezone.now() + timedelta(days=settings.INVITATION_DAYS)
        return token

    @classmethod
    def find(cls, token):
        """The pending invitation with this token, or None (unknown, used or expired)."""
        if not token:
            return None
        found = cls.objects.pending().filter(digest=token_digest(token)).select_related("tenant")
        return found.first()

    @property
    def state(self):
        if self.accepted_at:
            return "accepted"
        return "expired" if self.expires <= timezone.now() else "pending"

    def accept(self, user):
        """Make `user` a member with the invited role (and staff), once: False when the
        invitation was used or expired meanwhile. The caller checks who `user` is."""
        from django.db import transaction

        with transaction.atomic():
            claimed = Invitation.objects.pending().filter(pk=self.pk)
            if not claimed.update(accepted_at=timezone.now(), accepted_by=user):
                return False
            Membership.objects.get_or_create(
                user=user, tenant=self.tenant, defaults={"role": self.role}
            )
            if not user.is_staff:
                user.is_staff = True
                user.save(update_fields=["is_staff"])
        return True


class Organisation(models.Model):
    """A partner's customer, as the vendor knows it (mapped to a Halo Client later)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="organisations")
    name = models.CharField(max_length=200)
    external_ref = models.CharField(
        "external reference",
        max_length=100,
        help_text="The vendor's id for this customer; usage and Halo matching use it.",
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                "tenant",
                Lower("external_ref"),
                name="organisation_unique_ref_per_tenant",
                violation_error_message="An organisation with this external reference "
                "already exists.",
            )
        ]

    def __str__(self):
        return self.name


class Product(models.Model):
    """Something the vendor sells per unit (seats, devices, GB); mapped to a Halo Item later."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="products")
    name = models.CharField(max_length=200)
    sku = models.CharField("SKU", max_length=64)
    unit_price = models.DecimalField(
        max_digits=12, decimal_places=4, default=0, validators=[MinValueValidator(0)]
    )
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                "tenant",
                Lower("sku"),
                name="product_unique_sku_per_tenant",
                violation_error_message="A product with this SKU already exists.",
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.sku})"


class WorkerHeartbeatQuerySet(models.QuerySet):
    def processes(self):
        """One row per `manage.py worker` process (host and pid), not the schedule's row."""
        return self.exclude(pid=None)

    def silent(self, now=None):
        """Worker processes that stopped beating without saying goodbye (killed, machine
        lost): a graceful stop deletes its own row."""
        limit = (now or timezone.now()) - timedelta(seconds=settings.HEALTHZ_MAX_HEARTBEAT_AGE)
        return self.processes().filter(seen__lt=limit)

    def forget_dead(self, host, alive):
        """Delete the rows of `host`'s processes that no longer exist (`alive(pid)` False):
        a worker starting on a machine proves a killed predecessor there gone, so a crash
        followed by systemd's restart leaves the fleet whole again. Answers how many."""
        rows = self.processes().filter(host=host).values_list("pk", "pid")
        return self.filter(pk__in=[pk for pk, pid in rows if not alive(pid)]).delete()[0]


class WorkerHeartbeat(models.Model):
    """Proof that workers run. The one-minute schedule's row (named after the cluster)
    proves scheduler, broker and some worker all work; each `manage.py worker` process
    also beats a row of its own (host, pid), so one dead machine shows."""

    cluster = models.CharField(max_length=100, unique=True)
    seen = models.DateTimeField()
    host = models.CharField(max_length=100, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started = models.DateTimeField(null=True, blank=True)

    objects = WorkerHeartbeatQuerySet.as_manager()

    def __str__(self):
        return f"{self.cluster} at {self.seen:%Y-%m-%d %H:%M:%S}"

    @property
    def age(self):
        return timezone.now() - self.seen

    @classmethod
    def beat(cls, cluster, **process):
        cls.objects.update_or_create(cluster=cluster, defaults={"seen": timezone.now(), **process})

    @classmethod
    def latest(cls):
        return cls.objects.order_by("-seen").values_list("seen", flat=True).first()


class SharedCounter(models.Model):
    """A counter shared by every process, for rate limits and alerts (`portal.counters`):
    incremented in one atomic statement, alive until `expires`."""

    key = models.CharField(max_length=200, primary_key=True)
    value = models.BigIntegerField(default=0)
    expires = models.DateTimeField(db_index=True)

    def __str__(self):
        return f"{self.key} = {self.value}"


class ApiTokenQuerySet(models.QuerySet):
    def usable(self):
        now = timezone.now()
        return self.filter(revoked=False).filter(
            models.Q(expires__isnull=True) | models.Q(expires__gt=now)
        )


class ApiToken(models.Model):
    """A tenant's secret for calling the portal's APIs, stored only as a SHA-256 hash.

    Tokens are 256 random bits, so a plain hash (not a slow password hash) is enough and
    lets a request find its token by index. The plaintext is shown once, at creation.
    """

    class Purpose(models.TextChoices):
        USAGE = "usage", "Usage API (POST /api/v1/usage)"
        PDF = "pdf", "Invoice PDF API (Halo)"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="Where it is used, e.g. 'Halo PDF link'.")
    purpose = models.CharField(max_length=10, choices=Purpose.choices)
    prefix = models.CharField(max_length=16, editable=False, help_text="Identifies it in lists.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    expires = models.DateTimeField(
        null=True, blank=True, help_text="Set when rotated: the old secret works until then."
    )
    revoked = models.BooleanField(default=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, tenant, purpose, name, user=None):
        """Create a token; returns (token, plaintext). The plaintext is never stored."""
        plaintext = f"hpp_{purpose}_{secrets.token_urlsafe(32)}"
        token = cls.objects.create(
            tenant=tenant,
            purpose=purpose,
            name=name,
            prefix=plaintext[: len(purpose) + 9],
            digest=token_digest(plaintext),
            created_by=user,
        )
        return token, plaintext

    @classmethod
    def authenticate(cls, plaintext, purpose):
        # The digest is unique: one row by index, checked here rather than in SQL, as
        # building a query's conditions costs more than the query on every API request.
        match = cls.objects.filter(digest=token_digest(plaintext or "")).select_related("tenant")
        token = next(iter(match.order_by()), None)
        if token is None or token.purpose != purpose or token.state in ("revoked", "expired"):
            return None
        if token.last_used is None or timezone.now() - token.last_used > USED_RESOLUTION:
            cls.objects.filter(pk=token.pk).update(last_used=timezone.now())
        return token

    def rotate(self, user=None, overlap=None):
        """A new token with the same name; this one keeps working for `overlap`."""
        overlap = ROTATION_OVERLAP if overlap is None else overlap
        self.expires = min(self.expires or timezone.now() + overlap, timezone.now() + overlap)
        self.save(update_fields=["expires"])
        return self.issue(self.tenant, self.purpose, self.name, user)

    @property
    def state(self):
        if self.revoked:
            return "revoked"
        if self.expires and self.expires <= timezone.now():
            return "expired"
        return "expiring" if self.expires else "active"


# A token's last_used is written at most this often (no write per API request).
USED_RESOLUTION = timedelta(minutes=5)
ROTATION_OVERLAP = timedelta(days=7)


class ScheduledRunQuerySet(models.QuerySet):
    def due(self, now=None):
        """Queued slots whose time has come (first attempts, retries and continuations)."""
        return self.filter(status=ScheduledRun.Status.QUEUED, not_before__lte=now or timezone.now())

    def stale(self, now=None):
        """Running slots whose worker stopped beating: it died (SIGKILL, OOM, lost machine)."""
        limit = (now or timezone.now()) - timedelta(seconds=settings.RUN_STALE_SECONDS)
        return self.filter(status=ScheduledRun.Status.RUNNING, heartbeat__lt=limit)

    def retrying(self):
        return self.filter(status=ScheduledRun.Status.QUEUED, attempts__gt=0)

    def finished(self):
        return self.exclude(status__in=[ScheduledRun.Status.QUEUED, ScheduledRun.Status.RUNNING])


class ScheduledRun(models.Model):
    """One slot of one scheduled job, for one tenant (or the whole fleet): the durable run
    ledger (`portal.ledger`). The scheduling tick writes the row before the slot is due, so
    a slot exists in the database whatever happens to brokers and workers; workers claim due
    rows; the sweeper puts back rows whose worker died. Unique per tenant, job and slot."""

    Status = RunStatus

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="scheduled_runs"
    )
    job = models.CharField(max_length=40)
    slot = models.DateTimeField(help_text="When this run fell due.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    not_before = models.DateTimeField(help_text="Not claimed before this (retries, continuations).")
    deadline = models.DateTimeField(help_text="Retries stop here: the next slot takes over.")
    attempts = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="Last sent to the broker.")
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=120, blank=True, help_text="host:pid of the claimer.")
    summary = models.TextField(blank=True)
    error = models.TextField(blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    notified = models.BooleanField(default=False, help_text="Owners were told of this incident.")

    objects = ScheduledRunQuerySet.as_manager()

    class Meta:
        ordering = ["-slot", "job"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "job", "slot"], name="scheduledrun_one_per_tenant_job_slot"
            ),
            models.UniqueConstraint(
                fields=["job", "slot"],
                condition=models.Q(tenant__isnull=True),
                name="scheduledrun_one_per_fleet_job_slot",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "not_before"]),
            models.Index(fields=["job", "tenant", "-slot"]),
            models.Index(fields=["slot"]),  # the prune's range, every minute
        ]

    def __str__(self):
        whose = self.tenant or "fleet"
        return f"{self.job} of {whose} at {self.slot:%Y-%m-%d %H:%M}"

    @property
    def will_retry(self):
        """When a failed attempt will be tried again (None: not retrying)."""
        if self.status == self.Status.QUEUED and self.attempts:
            return self.not_before
        return None

    @property
    def age(self):
        """How long a due run has waited past its time (zero when not yet due)."""
        return max(timezone.now() - self.not_before, timedelta(0))
