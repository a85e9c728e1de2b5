"""Sign in with Halo: a tenant's setting, and the sign-ins under way (`halo_signin.py`)."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from portal import crypto
from portal.crypto import token_digest
from portal.models import OnePerTenant, Tenant

#: Seconds between leaving for Halo's login page and coming back (then: start again).
ATTEMPT_MAX_AGE = 600


class HaloSignIn(OnePerTenant):
    """Whether a tenant's customers may sign in to their account page with their Halo
    account, and through which Halo application (Authorisation Code, native: no secret).
    The Halo it signs in against is the tenant's active Halo connection."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="halo_signin")
    enabled = models.BooleanField(
        "customers may sign in with Halo",
        default=False,
        help_text="Shows “Sign in with Halo” on the account page's sign-in form.",
    )
    client_id = models.CharField(
        "Halo application client ID",
        max_length=100,
        blank=True,
        help_text="Of a Halo API application (Configuration > Integrations > HaloPSA API > "
        "View Applications) with the authentication method “Authorisation Code (Native "
        "Application)”, login type User, the permission read:customers, and the login "
        "redirect URL shown below. Not the portal's own (Client ID and Secret) application.",
    )
    last_problem = models.TextField(
        "last problem",
        blank=True,
        editable=False,
        help_text="What Halo last answered that "
        "stopped a customer's sign-in on the Halo side (configuration, not their password).",
    )
    last_problem_at = models.DateTimeField("last problem at", null=True, editable=False)

    class Meta:
        verbose_name = "Sign in with Halo"
        verbose_name_plural = "Sign in with Halo"

    def __str__(self):
        return f"Sign in with Halo for {self.tenant}"

    def clean(self):
        self.client_id = self.client_id.strip()
        if self.enabled and not self.client_id:
            raise ValidationError(
                {"client_id": "Sign in with Halo needs the client ID of its Halo application."}
            )

    @property
    def ready(self):
        return self.enabled and bool(self.client_id)

    def record_problem(self, detail):
        """Keep what went wrong on the Halo side for staff (never a secret: status codes,
        OAuth error codes, host names)."""
        self.last_problem, self.last_problem_at = detail[:500], timezone.now()
        self.save(update_fields=["last_problem", "last_problem_at"])

    def redirect_uri(self):
        """The login redirect URL to register on the Halo application, exactly."""
        return settings.PORTAL_BASE_URL + reverse("accounts:halo_callback", args=[self.tenant.slug])

    def start_url(self):
        return settings.PORTAL_BASE_URL + reverse("accounts:halo_signin", args=[self.tenant.slug])


class HaloSignInAttemptQuerySet(models.QuerySet):
    def expired(self, now=None):
        return self.filter(
            created__lte=(now or timezone.now()) - timedelta(seconds=ATTEMPT_MAX_AGE)
        )

    def begin(self, tenant, state, verifier):
        """Record a sign-in that left for Halo (and forget those that never came back)."""
        self.expired().delete()
        return self.create(
            tenant=tenant,
            state_digest=token_digest(state),
            verifier_encrypted=crypto.encrypt(verifier),
        )

    def claim(self, tenant, state, now=None):
        """The PKCE verifier of the tenant's sign-in `state` names, or None: unknown, used,
        expired or another tenant's. Works once: the row is deleted by whoever claims it
        first (two racing callbacks: one wins)."""
        if not state:
            return None
        attempt = self.filter(state_digest=token_digest(state)).first()
        if attempt is None or not self.filter(pk=attempt.pk).delete()[0]:
            return None
        fresh = attempt.created > (now or timezone.now()) - timedelta(seconds=ATTEMPT_MAX_AGE)
        if attempt.tenant_id != tenant.pk or not fresh:
            return None
        return crypto.Masked(crypto.decrypt(attempt.verifier_encrypted))


class HaloSignInAttempt(models.Model):
    """One sign-in under way, kept on the server rather than in a cookie: the account page
    may be framed by Halo's portal, where browsers withhold or partition the portal's
    (third-party) cookies, and the sign-in may finish in another tab. The `state` sent to
    Halo is the key (stored only as a hash); the PKCE verifier is stored encrypted."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    state_digest = models.CharField(max_length=64, unique=True)
    verifier_encrypted = models.TextField()
    created = models.DateTimeField(default=timezone.now, db_index=True)

    objects = HaloSignInAttemptQuerySet.as_manager()

    def __str__(self):
        return f"Sign-in with Halo at {self.tenant} started {self.created:%Y-%m-%d %H:%M}"
