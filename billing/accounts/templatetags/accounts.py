"""`{% account_path customer tenant as url %}` and `{% account_url ... %}`: the customer's
account page (a fresh signed link) for the "See all your invoices" link on pay pages,
receipts and their emails; "" without a customer."""

from django import template

from billing.accounts import links

register = template.Library()


def _with_tenant(customer, tenant):
    """`tenant`: the page's tenant, already read (saves reading it again for the link)."""
    if tenant is not None and customer.tenant_id == tenant.pk:
        customer.tenant = tenant
    return customer


@register.simple_tag
def account_path(customer, tenant=None):
    return links.account_path(_with_tenant(customer, tenant)) if customer else ""


@register.simple_tag
def account_url(customer, tenant=None):
    return links.account_url(_with_tenant(customer, tenant)) if customer else ""
