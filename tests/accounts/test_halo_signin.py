"""Sign in with Halo: the portal through a real WSGI server, Halo through the simulator over
HTTP (its login page, the code exchange with PKCE, GET /api/Users/me)."""

import base64
import hashlib
import html
import logging
import re
import secrets
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.utils import timezone

from billing.accounts import halo_signin, links
from billing.accounts.models import AccountSettings
from billing.accounts.signin_models import HaloSignIn, HaloSignInAttempt
from tests import factories
from tests.halo.conftest import make_connection

PASSWORD = "correct horse battery"


def enable(tenant, app):
    signin = HaloSignIn.for_tenant(tenant)
    signin.enabled, signin.client_id = True, app["client_id"]
    signin.full_clean()
    signin.save()
    return signin


def setup_tenant(sim, base, slug):
    tenant = factories.tenant(slug)
    tenant.support_email = f"billing@{slug}.example"
    tenant.save()
    connection = make_connection(sim, tenant)
    app = sim.control.add_signin_app([f"{base}/account/{slug}/halo/callback"])
    return SimpleNamespace(
        tenant=tenant, connection=connection, app=app, signin=enable(tenant, app)
    )


@pytest.fixture
def portal(validated_server, settings, sim):
    """Tenant "acme" connected to the simulator with Sign in with Halo on, its customer for
    Halo client 1 (Northwind Traders), and that client's contact Ann who may view invoices."""
    settings.PORTAL_BASE_URL = validated_server
    settings.HALO_SIGNIN_RATE = ""
    acme = setup_tenant(sim, validated_server, "acme")
    [client] = [c for c in sim.control.state("Client") if c["id"] == 1]
    customer = factories.customer(acme.tenant, halo_id=client["id"], name=client["name"])
    ann = sim.control.add_user("ann@northwind.example", PASSWORD, client["id"], name="Ann Lee",
                               canaccessinvoices=True)  # fmt: skip
    return SimpleNamespace(base=validated_server, sim=sim, customer=customer, ann=ann, **vars(acme))


def start(portal, slug="acme", http=None):
    """GET the start URL: answers the redirect to Halo's authorisation endpoint."""
    http = http or requests.Session()
    reply = http.get(f"{portal.base}/account/{slug}/halo/start", allow_redirects=False)
    assert reply.status_code == 302, reply.text
    return reply.headers["Location"]


def log_in(portal, authorize_url, username="ann@northwind.example", password=PASSWORD,
           action="signin"):  # fmt: skip
    """Halo's login page, filled in and sent: answers where Halo sends the browser back."""
    page = requests.get(authorize_url)
    assert page.status_code == 200 and "Sign in to Halo" in page.text
    form = {
        name: html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    }
    answer = requests.post(
        f"{portal.sim.auth_url}/authorize",
        data=form | {"username": username, "password": password, "action": action},
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def sign_in(portal, **login):
    callback = log_in(portal, start(portal), **login)
    return callback, requests.get(callback, allow_redirects=False)


def reason_of(reply):
    found = re.search(r'data-reason="([a-z_]+)"', reply.text)
    return found and found.group(1)


def test_customer_signs_in_and_lands_on_their_account_page(portal):
    authorize = start(portal)
    parts = urlsplit(authorize)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{portal.sim.auth_url}/authorize"
    assert query["response_type"] == "code"
    assert query["client_id"] == portal.app["client_id"]
    assert query["redirect_uri"] == f"{portal.base}/account/acme/halo/callback"
    assert query["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])
    assert query["tenant"] == portal.sim.tenant
    assert HaloSignInAttempt.objects.filter(tenant=portal.tenant).count() == 1
    attempt = HaloSignInAttempt.objects.get()
    assert query["state"] not in (attempt.state_digest, attempt.verifier_encrypted)  # hashed

    callback = log_in(portal, authorize)
    assert parse_qs(urlsplit(callback).query)["state"] == [query["state"]]
    portal.sim.control.clear_requests()
    reply = requests.get(callback, allow_redirects=False)

    assert reply.status_code == 302
    path, token = reply.headers["Location"].rsplit("/", 1)
    assert path == "/account/acme"
    assert links.customer_for_token("acme", token) == portal.customer
    assert portal.sim.control.requests()["by_endpoint"] == {
        "POST /auth/token": 1,
        "GET /Users/me": 1,
    }
    assert not HaloSignInAttempt.objects.exists()  # used up


def test_a_callback_works_once(portal):
    callback, first = sign_in(portal)
    assert first.status_code == 302
    again = requests.get(callback, allow_redirects=False)
    assert again.status_code == 400
    assert reason_of(again) == "expired"
    assert "Sign in with Halo again" in again.text


def test_halo_refuses_a_code_without_its_verifier(portal, sim):
    """PKCE: a code caught on its way back is worthless without the verifier the portal
    kept; Halo refuses it (and the code is then used up)."""
    callback = log_in(portal, start(portal))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    stolen = requests.post(
        sim.token_url,
        params={"tenant": sim.tenant},
        data={
            "grant_type": "authorization_code",
            "client_id": portal.app["client_id"],
            "code": code,
            "redirect_uri": f"{portal.base}/account/acme/halo/callback",
            "code_verifier": secrets.token_urlsafe(64),
        },
    )
    assert stolen.status_code == 400
    assert stolen.json() == {"error": "invalid_grant"}
    reply = requests.get(callback, allow_redirects=False)
    assert reply.status_code == 400 and reason_of(reply) == "expired"


def test_cancelling_at_halo_says_so(portal):
    callback, reply = sign_in(portal, action="cancel")
    assert "error=access_denied" in callback
    assert reply.status_code == 400
    assert reason_of(reply) == "denied"
    assert "You did not sign in" in reply.text
    assert 'href="/account/acme/halo/start"' in reply.text


def test_an_unknown_or_missing_state_is_refused_without_calling_halo(portal, sim):
    sim.control.clear_requests()
    for query in ("?state=made-up&code=abc", "?code=abc", ""):
        reply = requests.get(f"{portal.base}/account/acme/halo/callback{query}")
        assert reply.status_code == 400, query
        assert reason_of(reply) == "expired"
    assert sim.control.requests()["total"] == 0


def test_a_sign_in_started_at_one_tenant_does_not_finish_at_another(portal, sim):
    other = setup_tenant(sim, portal.base, "other")
    factories.customer(other.tenant, halo_id=1, name="Northwind at other")
    callback = log_in(portal, start(portal))
    elsewhere = callback.replace("/account/acme/", "/account/other/")
    reply = requests.get(elsewhere, allow_redirects=False)
    assert reply.status_code == 400 and reason_of(reply) == "expired"
    assert not HaloSignInAttempt.objects.exists()  # and acme's is spent too


def test_a_sign_in_left_too_long_has_expired(portal):
    authorize = start(portal)
    HaloSignInAttempt.objects.update(created=timezone.now() - timedelta(minutes=11))
    reply = requests.get(log_in(portal, authorize), allow_redirects=False)
    assert reply.status_code == 400 and reason_of(reply) == "expired"


def test_a_user_halo_does_not_let_view_invoices_is_refused(portal, sim):
    sim.control.add_user("bob@northwind.example", PASSWORD, 1, canaccessinvoices=False)
    _, reply = sign_in(portal, username="bob@northwind.example")
    assert reply.status_code == 403
    assert reason_of(reply) == "no_permission"
    assert "Can view their invoices" in reply.text
    assert "billing@acme.example" in reply.text  # whom to ask


def test_a_user_of_a_client_the_portal_does_not_know_is_refused(portal, sim):
    sim.control.add_user("cy@elsewhere.example", PASSWORD, 2, canaccessinvoices=True)
    _, reply = sign_in(portal, username="cy@elsewhere.example")
    assert reply.status_code == 403
    assert reason_of(reply) == "unknown_client"
    assert 'href="/account/acme/"' in reply.text  # the "send me a link" way in


def test_a_user_of_another_tenants_customer_is_not_let_in(portal, sim):
    """Halo client 2 is a customer of another tenant of the portal, not of acme."""
    factories.customer(factories.tenant("someone-else"), halo_id=2)
    sim.control.add_user("cy@elsewhere.example", PASSWORD, 2, canaccessinvoices=True)
    _, reply = sign_in(portal, username="cy@elsewhere.example")
    assert reply.status_code == 403 and reason_of(reply) == "unknown_client"


@pytest.mark.parametrize(
    "user",
    [
        {"id": 7, "client_id": 1, "canaccessinvoices": True, "inactive": True},
        {"id": 7, "client_id": 1},
        {"id": 7, "client_id": 1, "canaccessinvoices": "true"},
        {"id": 7, "client_id": "1", "canaccessinvoices": True},
        {"id": 7, "canaccessinvoices": True},
    ],
)
def test_only_an_active_user_with_the_permission_and_a_known_client_is_let_in(db, user):
    tenant = factories.tenant("acme")
    factories.customer(tenant, halo_id=1)
    with pytest.raises(halo_signin.SignInRefused) as refused:
        halo_signin.customer_for(tenant, user)
    assert refused.value.reason in ("inactive", "no_permission", "unknown_client")


@pytest.mark.parametrize(
    ("fault", "endpoint"),
    [("500", "token"), ("drop_before", "token"), ("429", "token"), ("500", "Users")],
)
def test_halo_down_gives_a_page_saying_so(portal, sim, fault, endpoint):
    callback = log_in(portal, start(portal))
    sim.control.add_fault(kind=fault, path=endpoint, seconds=30)
    reply = requests.get(callback, allow_redirects=False)
    assert reply.status_code == 503
    assert reason_of(reply) == "halo_down"
    assert "Halo is not answering" in reply.text


def test_halo_not_listening_gives_a_page_saying_so(portal):
    callback = log_in(portal, start(portal))
    portal.connection.resource_url = "http://127.0.0.1:9/api"  # discard port: nobody there
    portal.connection.save()
    reply = requests.get(callback, allow_redirects=False)
    assert reply.status_code == 503 and reason_of(reply) == "halo_down"


def test_an_application_without_read_customers_is_a_problem_staff_can_see(portal, sim):
    narrow = sim.control.add_signin_app(
        [f"{portal.base}/account/acme/halo/callback"], permissions="read:invoices"
    )
    enable(portal.tenant, narrow)
    _, reply = sign_in(portal)
    assert reply.status_code == 502 and reason_of(reply) == "misconfigured"
    assert "not yours" in reply.text
    problem = HaloSignIn.objects.get(tenant=portal.tenant)
    assert problem.last_problem == "GET /Users/me answered 403"
    assert problem.last_problem_at is not None


def test_requests_go_only_where_the_egress_rules_allow(portal, settings, sim):
    """The simulator is on 127.0.0.1: with private addresses refused (production's
    default), nothing is sent to it and the page says the Halo side is at fault."""
    callback = log_in(portal, start(portal))
    settings.HALO_ALLOW_PRIVATE_ADDRESSES = False
    sim.control.clear_requests()
    reply = requests.get(callback, allow_redirects=False)
    assert reply.status_code == 502 and reason_of(reply) == "misconfigured"
    assert sim.control.requests()["total"] == 0
    assert "private or reserved address" in HaloSignIn.objects.get().last_problem


def test_nothing_secret_is_logged(portal, caplog):
    caplog.set_level(logging.DEBUG)
    callback, reply = sign_in(portal)
    assert reply.status_code == 302
    answer = parse_qs(urlsplit(callback).query)
    again = requests.get(callback, allow_redirects=False)  # a refusal is logged too
    assert again.status_code == 400
    # urllib3 also logs the requests this test makes as the customer's browser (the URLs
    # that carry the state and code); every other line is the portal's, its own outbound
    # requests (POST /auth/token, GET /api/Users/me) included.
    browser = ("/halo/callback", "/auth/authorize")
    logged = "\n".join(
        message
        for message in (record.getMessage() for record in caplog.records)
        if not any(path in message for path in browser)
    )
    assert "POST /auth/token?tenant=acme" in logged
    assert f"customer {portal.customer.pk}" in logged
    for secret in (answer["code"][0], answer["state"][0], "Bearer"):
        assert secret not in logged


def test_sign_in_is_not_offered_when_off_or_without_a_connection(portal):
    assert halo_signin.offered(portal.tenant)
    portal.signin.enabled = False
    portal.signin.save()
    assert not halo_signin.offered(portal.tenant)
    for url in ("start", "callback?state=x&code=y"):
        reply = requests.get(f"{portal.base}/account/acme/halo/{url}", allow_redirects=False)
        assert reply.status_code == 404 and reason_of(reply) == "unavailable", url
    portal.signin.enabled = True
    portal.signin.save()
    portal.connection.active = False
    portal.connection.save()
    reply = requests.get(f"{portal.base}/account/acme/halo/start", allow_redirects=False)
    assert reply.status_code == 404 and reason_of(reply) == "unavailable"
    assert not halo_signin.offered(portal.tenant)
    assert requests.get(f"{portal.base}/account/nobody/halo/start").status_code == 404
    assert not HaloSignInAttempt.objects.exists()


def test_starting_is_rate_limited_per_client_address(portal, settings):
    settings.HALO_SIGNIN_RATE = "2/hour"
    start(portal)
    start(portal)
    reply = requests.get(f"{portal.base}/account/acme/halo/start", allow_redirects=False)
    assert reply.status_code == 429
    assert "Too many sign-ins" in reply.text
    assert HaloSignInAttempt.objects.count() == 2


def test_pages_carry_the_account_pages_headers_and_may_be_framed_by_the_halo_portal(portal):
    account_settings = AccountSettings.for_tenant(portal.tenant)
    account_settings.halo_portal_origins = "https://support.acme.example"
    account_settings.save()
    reply = requests.get(f"{portal.base}/account/acme/halo/callback?state=x")
    assert (
        "frame-ancestors https://support.acme.example" in reply.headers["Content-Security-Policy"]
    )
    assert "X-Frame-Options" not in reply.headers
    assert reply.headers["Cache-Control"] == "no-store"
    framed = requests.get(
        f"{portal.base}/account/acme/halo/callback?state=x", headers={"Sec-Fetch-Dest": "iframe"}
    )
    assert 'target="_blank"' in framed.text  # Halo's login page opens outside the frame
    assert requests.post(f"{portal.base}/account/acme/halo/start").status_code == 405


def test_enabling_needs_the_client_id(db):
    signin = HaloSignIn.for_tenant(factories.tenant("acme"))
    signin.enabled = True
    with pytest.raises(Exception, match="client ID"):
        signin.full_clean()


# -- the simulator's side, as the portal relies on it -----------------------------------------


def test_simulator_never_redirects_to_an_unregistered_url(portal, sim):
    authorize = start(portal).replace("%2Fhalo%2Fcallback", "%2Fevil")
    reply = requests.get(authorize, allow_redirects=False)
    assert reply.status_code == 400 and "Redirect URL not allowed" in reply.text


def test_simulator_requires_pkce_s256(portal, sim):
    authorize = start(portal).replace("code_challenge_method=S256", "code_challenge_method=plain")
    reply = requests.get(authorize, allow_redirects=False)
    assert reply.status_code == 302
    assert "error=invalid_request" in reply.headers["Location"]


def test_simulator_signin_apps_get_no_client_credentials_token(portal, sim):
    reply = requests.post(
        sim.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": portal.app["client_id"],
            "client_secret": portal.app["client_secret"],
        },
    )
    assert reply.status_code == 400 and reply.json() == {"error": "unauthorized_client"}


def test_simulator_users_me_answers_the_signed_in_user(portal, sim):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    authorize = start(portal)
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    query["code_challenge"] = challenge.rstrip(b"=").decode()
    code_reply = requests.post(
        f"{sim.auth_url}/authorize",
        data=query | {"username": "ANN@northwind.example", "password": PASSWORD},
        allow_redirects=False,
    )
    code = parse_qs(urlsplit(code_reply.headers["Location"]).query)["code"][0]
    token = requests.post(
        sim.token_url,
        data={
            "grant_type": "authorization_code",
            "client_id": portal.app["client_id"],
            "code": code,
            "redirect_uri": query["redirect_uri"],
            "code_verifier": verifier,
        },
    ).json()["access_token"]
    me = requests.get(f"{sim.api_url}/users/ME", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {
        "id": portal.ann["id"],
        "name": "Ann Lee",
        "emailaddress": "ann@northwind.example",
        "client_id": 1,
        "client_name": "Northwind Traders",
        "inactive": False,
        "canaccessinvoices": True,
    }
    agent = requests.get(
        f"{sim.api_url}/Users/me", headers={"Authorization": f"Bearer {sim.token()}"}
    )
    assert agent.status_code == 404


def test_simulator_login_page_refuses_a_wrong_password(portal):
    page = requests.get(start(portal))
    form = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    form = {k: html.unescape(v) for k, v in form.items()}
    wrong = requests.post(
        f"{portal.sim.auth_url}/authorize",
        data=form | {"username": "ann@northwind.example", "password": "nope"},
        allow_redirects=False,
    )
    assert wrong.status_code == 401 and "not right" in wrong.text


def test_staff_see_what_to_copy_into_halo(personas, settings, sim):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    make_connection(sim, personas.tenant_a)
    admin = personas.client(personas.owner_a)
    listing = admin.get("/admin/accounts/halosignin/", follow=True)
    assert listing.status_code == 200
    signin = HaloSignIn.objects.get(tenant=personas.tenant_a)  # made on first visit
    page = admin.get(f"/admin/accounts/halosignin/{signin.pk}/change/").content.decode()
    assert listing.redirect_chain[-1][0] == f"/admin/accounts/halosignin/{signin.pk}/change/"
    slug = personas.tenant_a.slug
    assert f"https://portal.example.com/account/{slug}/halo/callback" in page
    assert f"https://portal.example.com/account/{slug}/halo/start" in page
    assert sim.auth_url in page  # the Halo it signs in against
    assert "Authorisation Code (Native Application)" in page


def test_an_error_from_halos_login_page_is_a_problem_staff_can_see(portal):
    """Anything could be put in the error that comes back through the browser: staff see
    only the letters an OAuth error code is made of."""
    state = parse_qs(urlsplit(start(portal)).query)["state"][0]
    reply = requests.get(
        f"{portal.base}/account/acme/halo/callback",
        params={"state": state, "error": "invalid_scope<b>Call 0800</b>"},
    )
    assert reply.status_code == 502 and reason_of(reply) == "misconfigured"
    problem = HaloSignIn.objects.get(tenant=portal.tenant).last_problem
    assert problem == "Halo's authorisation server answered invalid_scopeballb"
