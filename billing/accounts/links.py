"""Signed, expiring links to a customer's account page: no password, nothing stored.

A link names the tenant by its code in the path and carries a token signed with the
portal's SECRET_KEY that holds the tenant and customer ids, so a token made for one
tenant's customer is refused under another tenant's code. Links expire after
`ACCOUNT_LINK_MAX_AGE` seconds (default 30 days: a reminder email stays usable for a month).
"""

from __future__ import annotations

import hashlib
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
    return check_token(tenant_code, token, max_age)[0]


#: Why `check_token` found no customer.
EXPIRED, INVALID = "expired", "invalid"


def check_token(
    tenant_code: str, token: str, max_age: int | None = None
) -> tuple[Customer | None, str]:
    """(customer, "") for a good link, else (None, EXPIRED or INVALID). Saying "expired"
    reveals nothing: only the portal can sign a link. The customer comes with its tenant and
    the tenant's settings that customer pages read (one query)."""
    from billing.models import Customer

    age = settings.ACCOUNT_LINK_MAX_AGE if max_age is None else max_age
    try:
        tenant_id, customer_id = signing.loads(token, salt=SALT, max_age=age)
    except signing.SignatureExpired:
        return None, EXPIRED
    except (signing.BadSignature, ValueError, TypeError):
        return None, INVALID
    customer = (
        Customer.objects.select_related(
            "tenant__invoice_sync_settings",
            "tenant__payment_settings",
            "tenant__account_settings",
        )
        .filter(pk=customer_id, tenant_id=tenant_id, tenant__slug=tenant_code)
        .first()
    )
    return (customer, "") if customer is not None else (None, INVALID)


def account_path(customer: Customer) -> str:
    return reverse("accounts:account", args=[customer.tenant.slug, make_token(customer)])


def account_url(customer: Customer) -> str:
    """The absolute link put in emails, on pay pages and receipts."""
    return settings.PORTAL_BASE_URL + account_path(customer)


# -- signed per-form tokens ----------------------------------------------------------------------
#
# The account page's forms work inside a cross-site frame (Halo's portal), where browsers do
# not send the portal's cookies, so they cannot use Django's CSRF cookie. They need none: see
# `billing.accounts.views` for why, and what these tokens add.

FORM_SALT = "billing.accounts.form"
#: Seconds a rendered form may be sent back (a page left open overnight asks for a reload).
FORM_MAX_AGE = 24 * 3600


def form_token(bound_to: str, action: str, subject: str = "") -> str:
    """A signed token for one form: its `action`, the object it acts on (`subject`) and the
    link or page it was rendered on (`bound_to`: the account token, or the tenant code)."""
    return signing.dumps([_digest(bound_to), action, subject], salt=FORM_SALT)


def form_token_ok(token: str, bound_to: str, action: str, subject: str = "") -> bool:
    try:
        signed = signing.loads(token, salt=FORM_SALT, max_age=FORM_MAX_AGE)
    except (signing.BadSignature, ValueError, TypeError):
        return False
    return signed == [_digest(bound_to), action, subject]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
