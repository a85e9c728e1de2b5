"""The opt-out link in every reminder: works without a login, stores nothing.

The token is signed with the portal's SECRET_KEY and holds the tenant and customer ids, so it
is refused under another tenant's code. It does not expire: an old reminder's link must still
stop the next one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core import signing
from django.urls import reverse

if TYPE_CHECKING:
    from billing.models import Customer

SALT = "billing.reminders.opt-out"


def make_token(customer: Customer) -> str:
    return signing.dumps([customer.tenant_id, customer.pk], salt=SALT, compress=True)


def customer_for_token(tenant_code: str, token: str) -> Customer | None:
    """The customer a token was made for, or None: bad signature or another tenant's."""
    from billing.models import Customer

    try:
        tenant_id, customer_id = signing.loads(token, salt=SALT)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return (
        Customer.objects.select_related("tenant")
        .filter(pk=customer_id, tenant_id=tenant_id, tenant__slug=tenant_code)
        .first()
    )


def opt_out_url(customer: Customer) -> str:
    """Absolute, for emails (also their List-Unsubscribe header)."""
    path = reverse("reminders:opt-out", args=[customer.tenant.slug, make_token(customer)])
    return settings.PORTAL_BASE_URL + path
