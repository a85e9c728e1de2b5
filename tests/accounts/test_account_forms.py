"""The account page's forms (revoking the saved card, "email me a link"), framing by the
tenant's Halo portal, and the staff page behind Halo's custom button."""

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.accounts import links
from billing.accounts.models import AccountSettings, origin_of
from billing.accounts.tasks import send_account_links
from billing.payments import autopay
from billing.payments.models import SavedPaymentMethod
from tests import factories
from tests.accounts.conftest import account_url, invoice

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(personas):
    return factories.customer(
        personas.tenant_a, name="Northwind Traders", billing_email="ap@northwind.example"
    )


@pytest.fixture
def card(personas, customer):
    rule = factories.autopay_rule(personas.tenant_a, subtype_name="Managed Services")
    invoice(personas.tenant_a, customer, days_overdue=0, autopay_rule=rule)
    return factories.saved_payment_method(
        personas.tenant_a,
        customer=customer,
        last4="4242",
        consented_at=timezone.now() - timezone.timedelta(days=60),
    )


def revoke_form(response):
    body = response.content.decode()
    return {
        "action": "revoke",
        "card": re.search(r'name="card" value="([^"]+)"', body)[1],
        "form_token": re.search(r'name="form_token" value="([^"]+)"', body)[1],
    }


def test_revoking_stops_the_next_auto_pay_run_and_the_forecast_shows_it(personas, customer, card):
    tenant = personas.tenant_a
    today = timezone.localdate(timezone=tenant.tz)
    assert [p.charges for p in autopay.plan(tenant, today)] == [True]
    client = Client(enforce_csrf_checks=True)  # no CSRF cookie: the form does not need one
    url = account_url(customer)
    page = client.get(url)
    assert "Visa •••• 4242" in page.content.decode()

    response = client.post(url, revoke_form(page))

    assert response.status_code == 303 and response["Location"] == f"{url}?done=revoked#autopay"
    card.refresh_from_db()
    assert not card.active and card.revoked is not None
    [plan] = autopay.plan(tenant, today)
    assert plan.skip == "No saved card: the customer has not agreed to auto-pay"
    assert autopay.run(tenant, today) == []
    forecast = personas.client(personas.owner_a).get(
        reverse("admin:payments_paymentsettings_autopay_forecast")
    )
    assert "No saved card" in forecast.content.decode()
    after = client.get(response["Location"]).content.decode()
    assert "Auto-pay is off" in after and "no longer charged" in after


def test_revoke_needs_the_form_token_of_this_link_and_card(personas, customer, card):
    client = Client()
    url = account_url(customer)
    form = revoke_form(client.get(url))
    refused = f"{url}?refused=form#notice"
    # No token, a token for another card, another customer's link, a cross-site POST.
    assert client.post(url, {**form, "form_token": ""})["Location"] == refused
    newer = factories.saved_payment_method(
        personas.tenant_a, customer=factories.customer(personas.tenant_a)
    )
    assert client.post(url, {**form, "card": str(newer.pk)})["Location"] == refused
    other = factories.customer(personas.tenant_a)
    other_url = account_url(other)
    assert client.post(other_url, form)["Location"] == f"{other_url}?refused=form#notice"
    assert client.post(url, form, headers={"Sec-Fetch-Site": "cross-site"})["Location"] == refused
    assert SavedPaymentMethod.objects.filter(pk=card.pk, active=True).exists()
    assert "did not come from this page" in client.get(refused).content.decode()
    # The right form works once; sending it again changes nothing and says it is off.
    assert client.post(url, form)["Location"].endswith("?done=revoked#autopay")
    assert client.post(url, form)["Location"].endswith("?done=revoked#autopay")
    assert SavedPaymentMethod.objects.filter(customer=customer, active=True).count() == 0


def test_a_new_card_saved_after_the_form_was_shown_is_not_revoked_by_it(personas, customer, card):
    client = Client()
    url = account_url(customer)
    form = revoke_form(client.get(url))
    card.revoke()
    newer = factories.saved_payment_method(personas.tenant_a, customer=customer, last4="1111")
    client.post(url, form)
    newer.refresh_from_db()
    assert newer.active


def test_bad_link_posts_get_the_404_page(personas, client):
    response = client.post("/account/alpha/forged", {"action": "revoke"})
    assert response.status_code == 404


# -- "email me a link" ---------------------------------------------------------------------------


def ask(client, email, tenant="alpha"):
    url = reverse("accounts:request-link", args=[tenant])
    token = re.search(r'name="form_token" value="([^"]+)"', client.get(url).content.decode())[1]
    return client.post(url, {"email": email, "form_token": token})


def test_known_and_unknown_addresses_get_the_same_answer_and_work(
    personas, customer, queued, settings, requests_commit
):
    settings.ACCOUNT_LINK_EMAIL_RATE = settings.ACCOUNT_LINK_IP_RATE = ""
    client = Client(enforce_csrf_checks=True)
    known = ask(client, "AP@northwind.example")
    unknown = ask(client, "nobody@example.com")
    assert known.status_code == unknown.status_code == 303
    assert known["Location"] == unknown["Location"]
    assert [call[0] for call in queued] == ["billing.accounts.tasks.send_account_links"] * 2
    assert [call[1:] for call in queued] == [
        (personas.tenant_a.pk, "AP@northwind.example"),
        (personas.tenant_a.pk, "nobody@example.com"),
    ]
    page = client.get(known["Location"]).content.decode()
    assert "If this address is one" in page and "Northwind" not in page


def test_the_worker_mails_the_billing_contact_their_link(personas, customer, mailoutbox):
    factories.customer(personas.tenant_b, billing_email="ap@northwind.example")
    assert send_account_links(personas.tenant_a.pk, "ap@NORTHWIND.example") == 1
    [mail] = mailoutbox
    assert mail.to == ["ap@northwind.example"]
    link = re.search(r"https://portal\.example\.com(/account/alpha/\S+)", mail.body)[1]
    assert links.customer_for_token("alpha", link.rsplit("/", 1)[1]) == customer
    assert send_account_links(personas.tenant_a.pk, "nobody@example.com") == 0
    assert len(mailoutbox) == 1


def test_requests_are_rate_limited_per_address_and_per_client(
    personas, customer, queued, settings, requests_commit
):
    settings.ACCOUNT_LINK_EMAIL_RATE, settings.ACCOUNT_LINK_IP_RATE = "2/hour", "4/hour"
    client = Client()
    answers = [ask(client, "ap@northwind.example")["Location"] for _ in range(3)]
    assert len(set(answers)) == 1 and len(queued) == 2  # same answer, third not sent
    ask(client, "other@example.com")  # the client's fourth request: sent
    ask(client, "third@example.com")  # its fifth: over the client's limit
    assert [call[2] for call in queued] == ["ap@northwind.example"] * 2 + ["other@example.com"]


def test_link_request_form_errors(personas, client):
    url = reverse("accounts:request-link", args=["alpha"])
    bad = client.post(
        url, {"email": "not an address", "form_token": links.form_token("alpha", "request")}
    )
    assert bad.status_code == 400 and "Enter your billing email" in bad.content.decode()
    stale = client.post(url, {"email": "ap@example.com", "form_token": "x"})
    assert stale.status_code == 400 and "expired" in stale.content.decode()
    assert client.get(reverse("accounts:request-link", args=["nobody"])).status_code == 404


# -- framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "origin"),
    [
        ("https://support.acme.com/portal/", "https://support.acme.com"),
        ("acme.halopsa.com", "https://acme.halopsa.com"),
        ("HTTPS://Acme.HaloPSA.com:8443/x?y", "https://acme.halopsa.com:8443"),
        ("http://localhost:8000", "http://localhost:8000"),
    ],
)
def test_origins_are_kept_as_origins(typed, origin):
    assert origin_of(typed) == origin


@pytest.mark.parametrize(
    "typed",
    [
        "http://support.acme.com",
        "https://a b.com",
        "https://x.com; script-src *",
        "javascript:alert(1)",
        "https://user:pw@acme.com",
        "https://*.acme.com",
        "https://acme.com:99999",
    ],
)
def test_anything_but_an_origin_is_refused(typed):
    with pytest.raises(Exception, match=r"address|https|password"):
        origin_of(typed)


def test_framing_follows_the_tenant_settings(personas, customer, client):
    invoice(personas.tenant_a, customer, days_overdue=3)
    url = account_url(customer)
    assert "frame-ancestors 'none'" in client.get(url)["Content-Security-Policy"]
    settings_row = AccountSettings.for_tenant(personas.tenant_a)
    settings_row.halo_portal_origins = "https://support.acme.com\nhttps://acme.halopsa.com"
    settings_row.save()

    response = client.get(url)

    policy = response["Content-Security-Policy"]
    assert "frame-ancestors https://support.acme.com https://acme.halopsa.com;" in policy
    assert "X-Frame-Options" not in response.headers
    assert (
        "frame-ancestors https://support"
        in client.get("/account/alpha/bad")["Content-Security-Policy"]
    )
    # Other pages keep refusing frames; another tenant's pages too.
    pay = client.get(customer.invoices.first().pay_page.get_absolute_url())
    assert "frame-ancestors 'none'" in pay["Content-Security-Policy"]
    assert pay["X-Frame-Options"] == "DENY"
    other = factories.customer(personas.tenant_b)
    assert "frame-ancestors 'none'" in client.get(account_url(other))["Content-Security-Policy"]
    assert client.get("/admin/login/")["X-Frame-Options"] == "DENY"


def test_framed_pages_open_pay_pages_in_a_new_tab(personas, customer, client):
    invoice(personas.tenant_a, customer, days_overdue=3)
    top = client.get(account_url(customer)).content.decode()
    framed = client.get(
        account_url(customer), headers={"Sec-Fetch-Dest": "iframe"}
    ).content.decode()
    assert 'class="button button-small" href="/pay/alpha/invoice/' in top
    assert re.search(r'class="button button-small" href="/pay/[^"]+" target="_blank"', framed)


def test_settings_form_cleans_origins_and_shows_the_halo_button(personas):
    client = personas.client(personas.owner_a)
    row = AccountSettings.for_tenant(personas.tenant_a)
    url = reverse("admin:accounts_accountsettings_change", args=[row.pk])
    bad = client.post(
        url, {"halo_portal_origins": "https://ok.example.com\nhttp://plain.example.com"}
    )
    assert bad.status_code == 200 and "must be served over https" in bad.content.decode()
    ok = client.post(
        url, {"halo_portal_origins": "https://support.acme.com/portal/\nsupport.acme.com"}
    )
    assert ok.status_code == 302
    row.refresh_from_db()
    assert row.halo_portal_origins == "https://support.acme.com"
    page = client.get(url).content.decode()
    assert (
        "https://portal.example.com/admin/accounts/accountsettings/halo-client/alpha/{$ID}/" in page
    )


# -- the Halo custom button (staff) --------------------------------------------------------------


def test_halo_button_opens_the_account_for_staff_of_the_tenant_only(personas, customer):
    invoice(personas.tenant_a, customer, amount="77.00")
    url = reverse("admin:accounts_halo_client", args=["alpha", customer.halo_id])

    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    for user in (personas.owner_a, personas.viewer_a):
        page = personas.client(user).get(url)
        assert page.status_code == 200
        body = page.content.decode()
        assert "Staff view of Northwind Traders" in body and "£77.00" in body
        assert 'name="form_token"' not in body  # the customer's forms are not offered
        link = re.search(r'value="https://portal\.example\.com(/account/alpha/[^"]+)"', body)[1]
        assert Client().get(link).status_code == 200
    owner_b = personas.client(personas.owner_b)
    assert owner_b.get(url).status_code == 404
    # B's code with A's client: B has no such client.
    b_url = reverse("admin:accounts_halo_client", args=["bravo", customer.halo_id])
    missing = owner_b.get(b_url)
    assert missing.status_code == 404 and "Northwind" not in missing.content.decode()
    staff = personas.client(personas.owner_a)
    # A variable Halo did not fill in: ours, or another name someone tried.
    for unfilled in ("{$ID}", "$CLIENTID", "{$CLIENT_ID}"):
        page = staff.get(reverse("admin:accounts_halo_client", args=["alpha", unfilled]))
        assert page.status_code == 404 and "Halo did not fill in" in page.content.decode()
    assert staff.get(reverse("admin:accounts_halo_client", args=["alpha", "١٢"])).status_code == 404


def test_sign_in_with_halo_is_offered_beside_the_form_when_the_tenant_has_it(personas, client):
    from billing.accounts.signin_models import HaloSignIn

    url = reverse("accounts:request-link", args=["alpha"])
    assert "Sign in with Halo" not in client.get(url).content.decode()
    factories.halo_connection(personas.tenant_a, active=True)
    HaloSignIn.objects.update_or_create(
        tenant=personas.tenant_a, defaults={"enabled": True, "client_id": "portal-signin"}
    )
    start = reverse("accounts:halo_signin", args=["alpha"])
    for page in (url, "/account/alpha/not-a-token"):
        assert f'href="{start}">Sign in with Halo' in client.get(page).content.decode()
