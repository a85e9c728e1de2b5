"""A tenant's settings for its customers' account pages: where Halo may show them in a frame."""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from portal.models import OnePerTenant, Tenant

#: A DNS name (letters, digits, hyphens, dots), or an IPv4 address.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
#: Plain HTTP is allowed only for the machine itself (development, tests).
_LOOPBACK = {"localhost", "127.0.0.1"}
#: What Halo fills in on a client record's custom button: the record's ID. The project's
#: choice, unverified against a live Halo: Halo's document has a `CustomButton` schema
#: (url, usage, newtab) but lists no variables; the one public example of a custom-button
#: URL found (the HaloAPI PowerShell module's CustomButton template, `…?thingid={$ID}`)
#: and Halo users' buttons (`{$AZUREOID}`, CIPP issue 3863) use `{$NAME}`. `$CLIENTID`,
#: used before, appears in no source. Whatever reaches the portal still holding `$`, `{`
#: or `}` is taken as a variable Halo did not fill in (`unfilled`).
HALO_CLIENT_VARIABLE = "{$ID}"


def unfilled(value):
    """A custom-button variable that reached the portal as written (Halo did not fill it)."""
    return any(mark in value for mark in "${}")


def origin_of(text):
    """The origin (`https://host[:port]`) of a pasted address, or ValidationError saying why.

    Partners paste their Halo portal's address as they see it (`https://support.acme.com/portal/`):
    the path is dropped. Only what a CSP source may hold is kept, so nothing typed here can
    add a directive to the page's policy."""
    value = text.strip()
    try:
        parts = urlsplit(value if "://" in value else f"https://{value}")
        port = parts.port
    except ValueError:
        raise ValidationError(f"“{value}” is not a web address.") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not _HOST.match(host):
        raise ValidationError(
            f"“{value}” is not a web address: use the address of your Halo portal, such as "
            "https://support.example.com."
        )
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise ValidationError(f"“{value}”: Halo's portal must be served over https://.")
    if parts.username or parts.password:
        raise ValidationError(f"“{value}”: an address with a user name or password.")
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class AccountSettings(OnePerTenant):
    """A tenant's account-page settings, read on every account page (cached on the tenant)."""

    cached_on_tenant = True

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="account_settings")
    halo_portal_origins = models.TextField(
        "Halo portal addresses allowed to frame the account page",
        blank=True,
        help_text="One per line, e.g. https://support.acme-it.com or https://acme.halopsa.com. "
        "Only these sites may show your customers' account page inside a frame (Halo's "
        "self-service portal); every other site is refused by the browser. Leave empty to "
        "allow no framing at all.",
    )

    class Meta:
        verbose_name = "account page settings"
        verbose_name_plural = "account page settings"

    def __str__(self):
        return f"Account pages of {self.tenant}"

    def clean(self):
        errors, origins = [], []
        for line in self.halo_portal_origins.splitlines():
            if not line.strip():
                continue
            try:
                origin = origin_of(line)
            except ValidationError as error:
                errors.extend(error.messages)
            else:
                if origin not in origins:
                    origins.append(origin)
        if errors:
            raise ValidationError({"halo_portal_origins": errors})
        self.halo_portal_origins = "\n".join(origins)

    def frame_origins(self):
        """The stored origins (cleaned on save; re-checked here, so a row written some other
        way can never put anything but an origin into the policy)."""
        found = []
        for line in self.halo_portal_origins.splitlines():
            try:
                found.append(origin_of(line))
            except ValidationError:
                continue
        return found

    def frame_ancestors(self):
        """The CSP `frame-ancestors` sources of the account page."""
        return " ".join(self.frame_origins()) or "'none'"

    def halo_button_url(self):
        """What to paste as the URL of a custom button on Halo's client record: Halo puts in
        the client's ID; the portal opens that customer's account page for staff."""
        path = reverse("admin:accounts_halo_client", args=[self.tenant.slug, "CLIENT"])
        return settings.PORTAL_BASE_URL + path.replace("CLIENT", HALO_CLIENT_VARIABLE)


from billing.accounts.signin_models import HaloSignIn, HaloSignInAttempt  # noqa: E402, F401
