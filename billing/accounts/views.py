"""The customer's account page, under /account/<tenant code>/, and the form that mails a link.

No password: the signed, expiring token in the URL is the customer's key (`links`). Pages
are rendered on the server without JavaScript, sent `no-store`, with a strict
Content-Security-Policy whose `frame-ancestors` lists the tenant's Halo portal addresses
(`AccountSettings`), so Halo's self-service portal may show the page in a frame, and no
X-Frame-Options (which cannot name sites). Every other page of the portal keeps
`frame-ancestors 'none'` and X-Frame-Options DENY.

Why these forms carry no CSRF cookie, and why that is safe
-----------------------------------------------------------
Inside Halo's portal the page is a cross-site frame: browsers block or partition the
portal's cookies there (third-party cookies), so neither a session nor Django's CSRF cookie
can be relied on. The page uses neither. A POST is authorised by the signed account token
in its URL, which only the customer's email, Halo's portal or the page itself hold: the
page sends no referrer to other sites (`Referrer-Policy: same-origin`), and it is
`no-store`. Cross-site request forgery works by making a victim's browser send *ambient*
credentials (cookies) that the attacker cannot read; these forms have none. An attacker
without the token cannot build a request that does anything, and one who has the token
needs no victim's browser. So Django's cookie check is switched off (`csrf_exempt`) and
replaced by what does matter here:

- each form carries a signed per-form token (`links.form_token`) naming its action, the
  object it acts on (the saved card's id) and the link it was rendered on, valid for
  `links.FORM_MAX_AGE`: a form cannot be replayed against another link or another card (a
  revoke form left open never revokes the card saved after it), and a bare POST with only
  the URL (say, from a link that ended up in a log) does nothing;
- a POST the browser marks as coming from another site (`Sec-Fetch-Site: cross-site`, or
  another site's `Origin`: `portal.http.from_another_site`) is refused: the portal's own
  forms, framed or not, post same-origin;
- answers are 303 redirects (post/redirect/get), so reloading repeats nothing.

The "send me a link" form changes nothing and reveals nothing (same answer and the same work
whether the address is known or not); it uses the same per-form token, and is rate limited
per client and per address typed (`ACCOUNT_LINK_IP_RATE`, `ACCOUNT_LINK_EMAIL_RATE`).
"""

import hashlib
import logging
import secrets
from functools import wraps

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from billing.accounts import links, tables
from billing.accounts.models import AccountSettings
from billing.accounts.statement import Statement
from billing.payments import display
from billing.payments.views import harden
from portal.api import WindowThrottle
from portal.http import client_address, from_another_site
from portal.jobs import enqueue
from portal.models import Tenant

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; style-src 'self' 'nonce-{nonce}'; img-src 'self'; "
    "form-action 'self'; frame-ancestors {ancestors}; base-uri 'none'"
)
#: Notices the page shows after a form (`?done=`).
DONE = {
    "revoked": "Auto-pay is off: your saved card was removed and will not be charged again.",
}


def account_page(view):
    """Headers of every account page: those of pay pages, with the tenant's framing policy."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        request.csp_nonce = secrets.token_urlsafe(16)
        request.frame_ancestors = "'none'"
        response = harden(request, view(request, *args, **kwargs))
        if response.get("Content-Type", "").startswith("text/html"):
            response["Content-Security-Policy"] = CSP.format(
                nonce=request.csp_nonce, ancestors=request.frame_ancestors
            )
        # X-Frame-Options cannot name sites: sent (DENY) unless the tenant allows framing.
        response.xframe_options_exempt = request.frame_ancestors != "'none'"
        return response

    return csrf_exempt(wrapped)


def allow_framing(request, tenant):
    """This answer may be framed by the tenant's Halo portal addresses."""
    request.frame_ancestors = AccountSettings.for_tenant(tenant).frame_ancestors()


def framed(request):
    """Shown inside a frame (Halo's portal): pay pages and PDFs then open in a new tab, since
    pay pages and the card processor refuse to be framed."""
    return request.headers.get("Sec-Fetch-Dest") == "iframe"


def show(request, template, tenant, status=200, **context):
    context |= {
        "tenant": tenant,
        "brand": display.brand(tenant),
        "csp_nonce": request.csp_nonce,
        "framed": framed(request),
    }
    return render(request, template, context, status=status)


# -- the account page --------------------------------------------------------------------------


@account_page
@require_http_methods(["GET", "HEAD", "POST"])
def account(request, tenant_code, token):
    customer, problem = links.check_token(tenant_code, token)
    if customer is None:
        return link_refused(request, tenant_code, problem)
    tenant = customer.tenant
    allow_framing(request, tenant)
    if request.method == "POST":
        return act(request, customer, token)
    return show_account(request, customer, token)


def show_account(request, customer, token, staff=None, status=200):
    """The page itself; `staff` (a user) for the staff view behind the Halo button, which
    shows the same page without the customer's forms."""
    tenant = customer.tenant
    every = request.GET.get("invoices") == "all"
    statement = Statement(customer, timezone.localdate(timezone=tenant.tz), every_invoice=every)
    card = statement.card
    new_tab = framed(request)
    return show(
        request,
        "accounts/account.html",
        tenant,
        status=status,
        customer=customer,
        statement=statement,
        invoice_rows=tables.invoice_rows(statement.invoices, new_tab=new_tab, staff=staff),
        payment_rows=tables.payment_rows(statement.payments, new_tab=new_tab),
        staff=staff,
        account_url=links.account_url(customer) if staff else "",
        link_days=settings.ACCOUNT_LINK_MAX_AGE // 86400,
        pay_several_url=statement.pay_several_url(token),
        replace_card_url=reverse("payments:replace_card", args=[tenant.slug, token]),
        revoke_token=links.form_token(token, "revoke", str(card.pk)) if card else "",
        done=DONE.get(request.GET.get("done", "")),
        refused=request.GET.get("refused") == "form",
    )


def act(request, customer, token):
    """A form of the account page (see the module docstring for how it is authorised)."""
    action = request.POST.get("action", "")
    subject = request.POST.get("card", "")[:20]
    path = request.path
    if from_another_site(request) or not links.form_token_ok(
        request.POST.get("form_token", ""), token, action, subject
    ):
        return HttpResponseRedirect(f"{path}?refused=form#notice", status=303)
    if action == "revoke":
        card = customer.saved_payment_methods.active().filter(pk=subject).first()
        if card is not None:
            card.revoke()
            log.info("Card %s of customer %s revoked on the account page", card.pk, customer.pk)
        return HttpResponseRedirect(f"{path}?done=revoked#autopay", status=303)
    return HttpResponseRedirect(f"{path}?refused=form#notice", status=303)


def link_refused(request, tenant_code, problem):
    """Expired, tampered or another tenant's link: a clear 404 page, with the form that
    mails a new link when the tenant code is right."""
    tenant = Tenant.objects.filter(slug=tenant_code).first()
    if tenant is not None:
        allow_framing(request, tenant)
    return show(
        request,
        "accounts/link_refused.html",
        tenant,
        status=404,
        expired=problem == links.EXPIRED,
        form_token=links.form_token(tenant.slug, "request") if tenant else "",
        halo_signin_url=halo_signin_url(tenant) if tenant else "",
        days=settings.ACCOUNT_LINK_MAX_AGE // 86400,
    )


# -- "send me a link" ---------------------------------------------------------------------------


class LinkRequestThrottle(WindowThrottle):
    """Link requests per client (`kind="client"`) or per address typed at a tenant
    (`kind="email"`), shared by every process (`portal.counters`). Keys hold a hash."""

    def __init__(self, kind, ident, rate):
        self.scope = f"account_link_{kind}"
        self.ident = hashlib.sha256(ident.encode()).hexdigest()[:32]
        self.rate = rate or None
        if self.rate:
            self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}

    def allowed(self):
        return self.allow_request(None, None)


def link_request_allowed(request, tenant, email):
    client = client_address(request)
    if not LinkRequestThrottle("client", client, settings.ACCOUNT_LINK_IP_RATE).allowed():
        log.warning("Account link not sent: ACCOUNT_LINK_IP_RATE reached by client %s", client)
        return False
    typed = f"{tenant.pk}:{email.casefold()}"
    if not LinkRequestThrottle("email", typed, settings.ACCOUNT_LINK_EMAIL_RATE).allowed():
        log.warning(
            "Account link not sent: ACCOUNT_LINK_EMAIL_RATE reached for an address typed at "
            "tenant %s by client %s",
            tenant.slug,
            client,
        )
        return False
    return True


@account_page
@require_http_methods(["GET", "HEAD", "POST"])
def request_link(request, tenant_code):
    """`/account/<tenant code>/`: type your billing email, get your account link by email.

    The answer is the same whether the address is known or not, and so is the work: the
    request only counts toward the limits and queues the job; the worker looks the address
    up (`tasks.send_account_links`) and mails each billing contact it matches, or no one."""
    tenant = Tenant.objects.filter(slug=tenant_code).first()
    if tenant is None:
        return show(request, "payments/not_found.html", None, status=404)
    allow_framing(request, tenant)
    email, error, sent = "", "", False
    if request.method == "POST":
        email = request.POST.get("email", "").strip()[:254]
        try:
            validate_email(email)
        except ValidationError:
            error = "Enter your billing email address, like name@example.com."
        if from_another_site(request) or not links.form_token_ok(
            request.POST.get("form_token", ""), tenant.slug, "request"
        ):
            error = "This form has expired. Please enter your email address again."
        if not error:
            if link_request_allowed(request, tenant, email):
                from billing.accounts import tasks

                enqueue(tasks.send_account_links, tenant.pk, email)
            return HttpResponseRedirect(f"{request.path}?sent=1", status=303)
    sent = request.GET.get("sent") == "1"
    return show(
        request,
        "accounts/request_link.html",
        tenant,
        status=400 if error else 200,
        email=email,
        error=error,
        sent=sent,
        form_token=links.form_token(tenant.slug, "request"),
        halo_signin_url=halo_signin_url(tenant),
        days=settings.ACCOUNT_LINK_MAX_AGE // 86400,
    )


def halo_signin_url(tenant):
    """Sign in with Halo, beside the form, when the tenant offers it."""
    from billing.accounts import halo_signin

    return (
        reverse("accounts:halo_signin", args=[tenant.slug]) if halo_signin.offered(tenant) else ""
    )
