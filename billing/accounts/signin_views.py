"""Sign in with Halo's two URLs (`halo_signin.py` does the work):

- `/account/<tenant code>/halo/start` (`accounts:halo_signin`): to the tenant's Halo login
  page; the "Sign in with Halo" button links here.
- `/account/<tenant code>/halo/callback` (`accounts:halo_callback`): where Halo sends the
  customer back; on success to their account page (`links.account_path`).

They carry the account pages' headers (`views.account_page`: `no-store`, no referrer to
other sites, the tenant's framing policy) and need no cookie: the sign-in under way is kept
on the server under its `state` (`HaloSignInAttempt`), so it also works when the page is
framed by Halo's portal, where the portal's cookies are third-party ones. Every refusal is
a page saying what happened and what to do, never an error page of the server's.
"""

import logging

from django.conf import settings
from django.http import HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET

from billing.accounts import halo_signin
from billing.accounts.links import account_path
from billing.accounts.signin_models import HaloSignIn
from billing.accounts.views import account_page, allow_framing, show
from portal.api import WindowThrottle
from portal.http import client_address
from portal.models import Tenant

log = logging.getLogger(__name__)


class SignInThrottle(WindowThrottle):
    """Sign-ins started per client address (`HALO_SIGNIN_RATE`), shared by every process:
    each start stores a row and sends the browser to Halo."""

    scope = "halo_signin"

    def __init__(self, request):
        self.ident = client_address(request)
        self.rate = settings.HALO_SIGNIN_RATE or None
        if self.rate:
            self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


@account_page
@require_GET
def start(request, tenant_code):
    tenant = Tenant.objects.filter(slug=tenant_code).first()
    if tenant is None:
        return show(request, "payments/not_found.html", None, status=404)
    allow_framing(request, tenant)
    if not SignInThrottle(request).allow_request(request, None):
        log.warning(
            "Halo sign-in not started: HALO_SIGNIN_RATE reached by %s", client_address(request)
        )
        return show(request, "accounts/signin/throttled.html", tenant, status=429)
    try:
        return HttpResponseRedirect(halo_signin.start(tenant))
    except halo_signin.SignInRefused as refusal:
        return refused(request, tenant, refusal)


@account_page
@require_GET
def callback(request, tenant_code):
    tenant = Tenant.objects.filter(slug=tenant_code).first()
    if tenant is None:
        return show(request, "payments/not_found.html", None, status=404)
    allow_framing(request, tenant)
    try:
        customer = halo_signin.finish(tenant, request.GET)
    except halo_signin.SignInRefused as refusal:
        return refused(request, tenant, refusal)
    log.info("Halo sign-in at %s: customer %s", tenant.slug, customer.pk)
    return HttpResponseRedirect(account_path(customer))


def refused(request, tenant, refusal):
    if refusal.reason == "misconfigured":
        log.warning("Halo sign-in at %s failed on the Halo side: %s", tenant.slug, refusal.detail)
        HaloSignIn.for_tenant(tenant).record_problem(refusal.detail)
    else:
        log.info("Halo sign-in at %s refused: %s", tenant.slug, refusal)
    shown = refusal.shown
    brand = tenant.brand_name
    return show(
        request,
        "accounts/signin/refused.html",
        tenant,
        status=shown.status,
        reason=refusal.reason,
        title=shown.title,
        message=shown.message.format(brand=brand),
        retry_url=reverse("accounts:halo_signin", args=[tenant.slug]) if shown.retry else "",
        link_url=_link_request_url(tenant),
    )


def _link_request_url(tenant):
    """The account page's "send me a link" form, the other way in."""
    try:
        return reverse("accounts:request-link", args=[tenant.slug])
    except NoReverseMatch:
        return ""
