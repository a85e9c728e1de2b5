"""Signed, expiring links to a customer's account page: no password, nothing stored.

A link names the tenant by its code in the path and carries a token signed with the
portal's SECRET_KEY that holds the tenant and customer ids, so a token made for one
tenant's customer is refused under another tenant's code. Links expire after
`ACCOUNT_LINK_MAX_AGE` seconds (default 30 days: a reminder email stays usable for a month).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core import signing
from django.urls import reverse

if TYPE_CHECKING:
    from billing.models import Customer

SALT = "billing.accounts.link"


def make_token(customer: Customer) -> str:
    return signing.dumps([customer.tenant_id, customer.pk], salt=SALT, compress=True)


def customer_for_token(tenant_code: str, token: str, max_age: int | None = None) -> Customer | None:
    """The customer a token was made for, or None: bad signature, expired, another tenant's."""
    from billing.models import Customer

    age = settings.ACCOUNT_LINK_MAX_AGE if max_age is None else max_age
    try:
        tenant_id, customer_id = signing.loads(token, salt=SALT, max_age=age)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return (
        Customer.objects.select_related("tenant")
        .filter(pk=customer_id, tenant_id=tenant_id, tenant__slug=tenant_code)
        .first()
    )


def account_path(customer: Customer) -> str:
    return reverse("accounts:account", args=[customer.tenant.slug, make_token(customer)])


def account_url(customer: Customer) -> str:
    """The absolute link put in emails, on pay pages and receipts."""
    return settings.PORTAL_BASE_URL + account_path(customer)
