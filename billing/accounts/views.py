"""The account page (being built: issue 16)."""

from django.http import Http404

from billing.accounts.links import customer_for_token


def account(request, tenant_code, token):
    customer = customer_for_token(tenant_code, token)
    if customer is None:
        raise Http404("This link is not valid or has expired.")
    raise Http404("The account page is not built yet.")
