"""A tenant's connection to its HaloPSA instance, and the state its API client shares."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from portal import crypto
from portal.models import Tenant


class HaloConnectionQuerySet(models.QuerySet["HaloConnection"]):
    FEATURES = ("billing_sync", "invoice_sync", "payments", "webhooks")

    def active(self, tenant: Tenant | int) -> HaloConnection | None:
        """The tenant's one active connection (a Tenant or its id), or None."""
        return self.filter(tenant=tenant, active=True).first()

    def sharing_halo_with(self, connection: HaloConnection) -> list[HaloConnection]:
        """Other tenants' active connections to the same Halo (site and tenant name)."""
        host = urlsplit(connection.resource_url or "").hostname or ""
        if not host:
            return []
        candidates = self.filter(active=True, resource_url__icontains=host).exclude(
            tenant_id=connection.tenant_id
        )
        return [other for other in candidates if other.halo_identity == connection.halo_identity]

    def for_feature(self, tenant: Tenant | int, feature: str) -> HaloConnection | None:
        """The tenant's active connection with `feature` switched on, or None: the one way
        every feature finds the connection it may use."""
        if feature not in self.FEATURES:
            raise ValueError(f"unknown Halo connection feature {feature!r}")
        return self.filter(tenant=tenant, active=True, **{feature: True}).first()


class HaloConnection(models.Model):
    """One Halo API application ("Halo app") of a tenant; at most one is active.

    The client secret is stored only as Fernet ciphertext (`portal.crypto`); change it through
    `set_secret`, which also records the hosts it was entered for (`secret_entered_for`).
    Code that sends it asks `secret_for(url)`, which answers it only for that host: a tenant
    admin who points the connection elsewhere cannot make the portal send the stored secret
    (or the tokens it buys) to a host of their choosing.
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
    #: {"auth": origin, "resource": origin} of the URLs the secret was entered with.
    secret_entered_for = models.JSONField(default=dict, editable=False)
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

    objects = HaloConnectionQuerySet.as_manager()

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

    def __str__(self) -> str:
        return self.name

    @property
    def halo_identity(self) -> tuple[str | None, str]:
        """Which Halo this is: the resource server's origin and the Halo tenant name."""
        return (origin(self.resource_url), (self.halo_tenant or "").strip().casefold())

    def clean(self) -> None:
        """One Halo, one tenant: licences the portal writes carry no tenant, so two tenants
        syncing into one Halo would manage each other's licences."""
        super().clean()
        if self.active and self.resource_url and HaloConnection.objects.sharing_halo_with(self):
            raise ValidationError(
                {
                    "resource_url": "This Halo is already connected to another partner of this "
                    "portal. One Halo belongs to one partner: if it is yours, ask the portal's "
                    "operator to move it to your account."
                }
            )

    @property
    def secret(self) -> str:
        """The plaintext, for comparisons; anything sending it asks `secret_for(url)`."""
        return crypto.Masked(
            crypto.decrypt(self.client_secret_encrypted) if self.client_secret_encrypted else ""
        )

    @sensitive_variables()
    def set_secret(self, plaintext: str) -> None:
        """Encrypt and store, bound to the connection's current URLs (set them first).

        Keeps the ciphertext when the secret is unchanged (fresh ciphertext would dirty the
        row); the binding is renewed either way: typing the secret again is what allows it
        to go to new URLs."""
        self.secret_entered_for = self._origins()
        if self.client_secret_encrypted and self.secret == plaintext:
            return
        self.client_secret_encrypted = crypto.encrypt(plaintext)

    def _origins(self) -> dict[str, str | None]:
        return {"auth": origin(self.auth_url), "resource": origin(self.resource_url)}

    @property
    def secret_fits_urls(self) -> bool:
        """Whether the stored secret was entered for the connection's current hosts."""
        bound = self.secret_entered_for or {}
        return bool(bound.get("auth")) and bound == self._origins()

    def secret_refusal(self, url: str | None = None) -> str:
        """Why the stored secret must not be sent to `url` (default: the authorisation
        URL), or '' when it may: `url` is on the host it was entered for, and the resource
        server that will receive the token it buys is too."""
        if not self.client_secret_encrypted:
            return ""  # nothing to protect
        bound = self.secret_entered_for or {}
        entered_for = bound.get("auth")
        if not entered_for:
            return (
                "the stored client secret was entered for another address. Enter it again "
                "under “Replace secret” on the Halo connection and save."
            )
        target = origin(self.auth_url if url is None else url)
        again = (
            "If the connection really moved, enter it again under “Replace secret” on the "
            "Halo connection and save."
        )
        if target != entered_for:
            return (
                f"the client secret was entered for {entered_for} and is never sent anywhere "
                f"else (this would have sent it to {target or 'an invalid address'}). {again}"
            )
        resource = origin(self.resource_url)
        if resource != bound.get("resource"):
            return (
                f"the client secret was entered for {entered_for} with the resource server "
                f"{bound.get('resource')}; the resource server is now "
                f"{resource or 'an invalid address'}, which would receive the access token. "
                f"{again}"
            )
        return ""

    def check_secret_destination(self, url: str | None = None) -> None:
        """Raise `HaloAddressRefused` (permanent) unless `secret_refusal(url)` is ''."""
        if reason := self.secret_refusal(url):
            from integrations.halo.errors import HaloAddressRefused

            raise HaloAddressRefused(
                reason,
                url=(url or self.auth_url).split("?")[0],
                method="POST",
                endpoint="/token",
                attempted="get an access token",
            )

    def secret_for(self, url: str) -> str:
        """The client secret, to be sent to `url` only; refused with `HaloAddressRefused`
        when `url` is not on the host the secret was entered for."""
        self.check_secret_destination(url)
        return self.secret


def origin(url: str | None) -> str | None:
    """'https://acme.halopsa.com' for any URL on that scheme, host and port (the default
    port left out); None for anything that is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    host = parts.hostname
    if default is None or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}"


class HaloRateWindow(models.Model):
    """Request counts of one connection in the client's sliding window (see `halo.ratelimit`).

    Used when the shared cache has no atomic increment (the database cache): a row lock
    serialises the processes taking a slot.
    """

    connection = models.OneToOneField(
        HaloConnection, on_delete=models.CASCADE, related_name="rate_window"
    )
    buckets = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"rate window of {self.connection_id}"
