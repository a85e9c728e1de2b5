"""Sign in with Halo: a customer signs in to the account page with their Halo portal account.

OAuth 2 authorization code with PKCE (RFC 6749 §4.1, RFC 7636, S256) against the tenant's
Halo authorisation server, through the Halo application `HaloSignIn` names (Authorisation
Code, native: a public client, no secret):

1. `start`: a random `state` and PKCE verifier; a `HaloSignInAttempt` row (the state only
   hashed, the verifier encrypted); the customer's browser goes to `<auth server>/authorize`
   with the verifier's S256 challenge.
2. `finish`, on the callback: the state claims the attempt (once, within
   `ATTEMPT_MAX_AGE`, for this tenant), the code and verifier are exchanged at
   `<auth server>/token` for the person's access token, and `GET <resource server>/Users/me`
   with it says who signed in: their Halo client (`client_id`), whether they are `inactive`,
   and whether they may view invoices (`canaccessinvoices`, Halo's "Can view their
   invoices"). The customer is the tenant's `Customer` with that `halo_id`.

What is Halo's and what is assumed is in `integrations/halo/contract.py` (SUPPLEMENT,
TOKEN_FORM, AUTHORIZE_QUERY) and `integrations/halo_sim/signin.py`.

The portal sends requests only to the URLs of the tenant's own active Halo connection,
through the Halo client's egress rules (`integrations.halo.egress`: vetted addresses, no
redirects followed), within `HALO_WEB_BUDGET_SECONDS`. The person's token is used for that
one read and forgotten; codes, states, verifiers and tokens are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables
from urllib3.util import Timeout

from billing.accounts.signin_models import HaloSignIn, HaloSignInAttempt
from billing.models import Customer
from integrations.halo import egress
from integrations.halo.client import web_budget
from integrations.halo.ratelimit import Deadline
from integrations.models import HaloConnection
from portal.crypto import Masked
from portal.models import Tenant

log = logging.getLogger(__name__)

#: What the portal asks of Halo for the person: reading their own user record (assumed to
#: be guarded by read:customers, like clients and sites).
SCOPE = "read:customers"
#: With less of the web budget left than this, no request is started.
LEAST_ATTEMPT = 0.05


@dataclass(frozen=True)
class Reason:
    status: int
    title: str
    message: str
    retry: bool = False  # offer to sign in again (the page's footer says whom to ask)


REASONS = {
    "unavailable": Reason(
        404,
        "Sign in with Halo is not available",
        "{brand} does not offer signing in with Halo at the moment.",
    ),
    "denied": Reason(
        400,
        "You did not sign in",
        "Signing in with Halo was cancelled, so nothing was opened.",
        retry=True,
    ),
    "expired": Reason(
        400,
        "This sign-in has expired",
        "It took too long, or this page was opened twice. Please start again.",
        retry=True,
    ),
    "halo_down": Reason(
        503,
        "Halo is not answering",
        "We could not reach {brand}'s Halo to finish signing you in. Please try again in a "
        "few minutes.",
        retry=True,
    ),
    "misconfigured": Reason(
        502,
        "Sign in with Halo is not working",
        "{brand}'s Halo did not let us finish signing you in. Please try again, and let "
        "{brand} know if it keeps happening: the problem is on their side, not yours.",
        retry=True,
    ),
    "inactive": Reason(
        403,
        "Your Halo account is inactive",
        "Halo says your account is no longer active, so we cannot show your invoices.",
    ),
    "no_permission": Reason(
        403,
        "Your Halo account may not view invoices",
        "You signed in, but Halo does not allow your account to view invoices. Ask {brand} "
        "to turn on “Can view their invoices” for your Halo user.",
    ),
    "unknown_client": Reason(
        403,
        "We cannot find your company's account",
        "You signed in, but your company's account is not set up for online invoices with "
        "{brand} yet.",
    ),
}


class SignInRefused(Exception):
    """Sign in with Halo stopped; `reason` is a key of `REASONS` (what the customer sees)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail

    @property
    def shown(self) -> Reason:
        return REASONS[self.reason]


def _setup(tenant: Tenant) -> tuple[HaloSignIn, HaloConnection]:
    signin = HaloSignIn.for_tenant(tenant)
    connection = HaloConnection.objects.active(tenant)
    if not signin.ready or connection is None:
        raise SignInRefused("unavailable", "off, or no active Halo connection")
    return signin, connection


def offered(tenant: Tenant) -> bool:
    """Whether the account page's sign-in form shows "Sign in with Halo" (linking to
    `accounts:halo_signin`): switched on, with a client ID and an active Halo connection."""
    try:
        _setup(tenant)
    except SignInRefused:
        return False
    return True


def challenge_of(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@sensitive_variables()
def start(tenant: Tenant) -> str:
    """Where to send the customer's browser: the tenant's Halo login page."""
    signin, connection = _setup(tenant)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)  # 43, 86 chars
    HaloSignInAttempt.objects.begin(tenant, state, verifier)
    query = {
        "response_type": "code",
        "client_id": signin.client_id,
        "redirect_uri": signin.redirect_uri(),
        "scope": SCOPE,
        "state": state,
        "code_challenge": challenge_of(verifier),
        "code_challenge_method": "S256",
    }
    if connection.halo_tenant:
        query["tenant"] = connection.halo_tenant
    return f"{connection.auth_url.rstrip('/')}/authorize?{urlencode(query)}"


@sensitive_variables()
def finish(tenant: Tenant, answer: Any) -> Customer:
    """The customer Halo's answer (the callback's query) signs in, or `SignInRefused`."""
    signin, connection = _setup(tenant)
    verifier = HaloSignInAttempt.objects.claim(tenant, answer.get("state", ""))
    error = answer.get("error", "")
    if verifier is None:
        raise SignInRefused("expired", "unknown, used or expired state")
    if error == "access_denied":
        raise SignInRefused("denied")
    if error or not answer.get("code"):
        code = oauth_error(error) or "no code"
        raise SignInRefused("misconfigured", f"Halo's authorisation server answered {code}")
    deadline = web_budget()
    http = egress.session()
    token = _exchange(http, connection, signin, answer["code"], verifier, deadline)
    user = _me(http, connection, token, deadline)
    return customer_for(tenant, user)


def customer_for(tenant: Tenant, user: dict[str, Any]) -> Customer:
    """The tenant's customer a Halo user (`/Users/me`) may see, or `SignInRefused`."""
    who = f"Halo user {user.get('id')}"
    if user.get("inactive") is True:
        raise SignInRefused("inactive", who)
    if user.get("canaccessinvoices") is not True:
        raise SignInRefused("no_permission", f"{who} may not view invoices")
    client_id = user.get("client_id")
    customer = None
    if isinstance(client_id, int) and not isinstance(client_id, bool):
        customer = (
            Customer.objects.select_related("tenant")
            .filter(tenant=tenant, halo_id=client_id)
            .first()
        )
    if customer is None:
        raise SignInRefused("unknown_client", f"{who} of Halo client {client_id!r}")
    return customer


# -- the two requests --------------------------------------------------------------------------


@sensitive_variables()
def _exchange(
    http: requests.Session,
    connection: HaloConnection,
    signin: HaloSignIn,
    code: str,
    verifier: str,
    deadline: Deadline,
) -> str:
    url = f"{connection.auth_url.rstrip('/')}/token"
    form = {
        "grant_type": "authorization_code",
        "client_id": signin.client_id,
        "code": code,
        "redirect_uri": signin.redirect_uri(),
        "code_verifier": verifier,
    }
    params = {"tenant": connection.halo_tenant} if connection.halo_tenant else None
    response = _send(http, "POST", url, deadline, params=params, data=form)
    reply = _json(response)
    error = oauth_error(reply.get("error")) if isinstance(reply, dict) else ""
    if response.status_code == 200 and isinstance(reply, dict) and reply.get("access_token"):
        return Masked(reply["access_token"])
    if response.status_code == 400 and error == "invalid_grant":
        raise SignInRefused("expired", "Halo refused the code (invalid_grant)")
    _refuse(response, "POST /token", error)


@sensitive_variables()
def _me(
    http: requests.Session, connection: HaloConnection, token: str, deadline: Deadline
) -> dict[str, Any]:
    url = f"{connection.resource_url.rstrip('/')}/Users/me"
    headers = {"Authorization": Masked(f"Bearer {token}")}
    response = _send(http, "GET", url, deadline, headers=headers)
    reply = _json(response)
    if response.status_code == 200 and isinstance(reply, dict):
        return reply
    _refuse(response, "GET /Users/me")


def _refuse(response: requests.Response, endpoint: str, error: str = "") -> NoReturn:
    status = response.status_code
    detail = f"{endpoint} answered {status}" + (f" {error}" if error else "")
    if status == 429 or status >= 500:
        raise SignInRefused("halo_down", detail)
    raise SignInRefused("misconfigured", detail)


@sensitive_variables()
def _send(
    http: requests.Session, method: str, url: str, deadline: Deadline, **kwargs: Any
) -> requests.Response:
    """One request within the web budget; never followed anywhere (egress)."""
    left = deadline.remaining()
    if left < LEAST_ATTEMPT:
        raise SignInRefused("halo_down", f"no time left for {method} {url.split('?')[0]}")
    timeout = Timeout(
        connect=min(settings.HALO_CONNECT_TIMEOUT, left),
        read=min(settings.HALO_READ_TIMEOUT, left),
        total=left,
    )
    try:
        response = http.request(method, url, timeout=timeout, **kwargs)  # type: ignore[arg-type]
    except egress.BlockedAddress as blocked:
        raise SignInRefused("misconfigured", str(blocked)) from None
    except requests.RequestException as exc:
        raise SignInRefused(
            "halo_down", f"{method} {url.split('?')[0]}: {type(exc).__name__}"
        ) from None
    if 300 <= response.status_code < 400:
        raise SignInRefused("misconfigured", f"{method} {url.split('?')[0]} redirected")
    return response


def oauth_error(value: object) -> str:
    """An OAuth error code as Halo sent it, reduced to what such codes are made of (it comes
    through the browser, so anyone could put text there; staff see it)."""
    return re.sub(r"[^a-z_]", "", str(value or ""))[:40]


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
