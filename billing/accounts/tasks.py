"""Worker side of the account page: the "send me a link" mail."""

import logging

from django.conf import settings

from billing.accounts.links import account_url
from billing.models import Customer
from billing.payments.emails import _send
from portal.models import Tenant

log = logging.getLogger(__name__)


def send_account_links(tenant_id, email):
    """Mail the account link of every customer of the tenant whose billing email is `email`
    to that billing contact (one message listing each account); nothing when none matches.
    Runs on the worker, so the web request does the same work whether the address is known
    or not. Answers how many accounts were mailed."""
    tenant = Tenant.objects.get(pk=tenant_id)
    customers = list(
        Customer.objects.filter(tenant=tenant, billing_email__iexact=email.strip())
        .select_related("tenant")
        .order_by("name")
    )
    if not customers:
        log.info("Account link asked for an address no customer of %s has", tenant.slug)
        return 0
    to = customers[0].billing_email
    accounts = [{"name": c.name, "url": account_url(c)} for c in customers]
    _send(
        tenant,
        [to],
        f"Your invoices with {tenant.brand_name}",
        "accounts/email/link",
        {
            "accounts": accounts,
            "contact": customers[0].billing_contact,
            "days": settings.ACCOUNT_LINK_MAX_AGE // 86400,
        },
    )
    return len(accounts)
