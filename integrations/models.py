"""A tenant's connection to its HaloPSA instance, and the state its API client shares."""

from django.db import models
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from portal import crypto
from portal.models import Tenant


class HaloConnection(models.Model):
    """One Halo API application ("Halo app") of a tenant; at most one is active.

    The client secret is stored only as Fernet ciphertext (`portal.crypto`); read it through
    `secret` and change it through `set_secret`.
    """

    class TestStatus(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="halo_connections")
    name = models.CharField("display name", max_length=100, default="HaloPSA")
    auth_url = models.URLField(
        "authorisation server URL",
        max_length=300,
        help_text="Shown in Halo under Configuration > Integrations > HaloPSA API, for example "
        "https://acme.halopsa.com/auth. Pasting your Halo address fills in both URLs.",
    )
    resource_url = models.URLField(
        "resource server URL",
        max_length=300,
        help_text="For example https://acme.halopsa.com/api.",
    )
    halo_tenant = models.CharField(
        "Halo tenant name",
        max_length=100,
        blank=True,
        help_text="Hosted Halo only (shown beside the URLs in Halo); blank for self-hosted.",
    )
    client_id = models.CharField("client ID", max_length=100)
    client_secret_encrypted = models.TextField(editable=False, default="")
    scopes = models.CharField(
        "scopes requested",
        max_length=500,
        default="all",
        help_text="Space-separated Halo permissions; 'all' asks for whatever the application "
        "and its login agent are allowed.",
    )
    active = models.BooleanField(
        default=True, help_text="Syncs use the tenant's one active connection."
    )
    billing_sync = models.BooleanField(
        default=True, help_text="Push usage to Halo as customers, items and licences."
    )
    invoice_sync = models.BooleanField(
        default=True, help_text="Read invoices from Halo and attach invoice PDFs."
    )
    payments = models.BooleanField(
        default=False, help_text="Record card payments against Halo invoices."
    )
    webhooks = models.BooleanField(
        default=False, help_text="Let Halo notify the portal when invoices change."
    )
    test_status = models.CharField(
        "last test", max_length=10, choices=TestStatus.choices, blank=True, editable=False
    )
    test_summary = models.TextField("last test summary", blank=True, editable=False)
    tested_at = models.DateTimeField("tested at", null=True, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "-active", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(active=True),
                name="haloconnection_one_active_per_tenant",
                violation_error_message="This tenant already has an active Halo connection: "
                "deactivate it first.",
            )
        ]

    def __str__(self):
        return self.name

    @property
    def secret(self) -> str:
        from integrations.halo.tokens import Masked

        return Masked(
            crypto.decrypt(self.client_secret_encrypted) if self.client_secret_encrypted else ""
        )

    @sensitive_variables()
    def set_secret(self, plaintext: str) -> None:
        """Encrypt and store; a no-op when unchanged (fresh ciphertext would dirty the row)."""
        if self.client_secret_encrypted and self.secret == plaintext:
            return
        self.client_secret_encrypted = crypto.encrypt(plaintext)

    def client(self, **kwargs):
        from integrations.halo import HaloClient

        return HaloClient(self, **kwargs)


class HaloRateWindow(models.Model):
    """Request counts of one connection in the client's sliding window (see `halo.ratelimit`).

    Used when the shared cache has no atomic increment (the database cache): a row lock
    serialises the processes taking a slot.
    """

    connection = models.OneToOneField(
        HaloConnection, on_delete=models.CASCADE, related_name="rate_window"
    )
    buckets = models.JSONField(default=dict)

    def __str__(self):
        return f"rate window of {self.connection_id}"
