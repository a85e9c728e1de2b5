"""Sign in with Halo in headless Chromium: from the portal's start link to Halo's login page
(the simulator's) and back to the customer's account page, and the pages for a refusal.

`SIGNIN_SCREENSHOTS=/some/dir` saves each page on the way for a look.
"""

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from billing.accounts.signin_models import HaloSignIn, HaloSignInAttempt
from tests import factories
from tests.halo.conftest import make_connection

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


@pytest.fixture
def acme(sim, settings, live_server):
    settings.PORTAL_BASE_URL = live_server.url
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.HALO_SIGNIN_RATE = ""
    tenant = factories.tenant("acme")
    tenant.display_name = "Acme IT Services Ltd"
    tenant.support_email = "billing@acme-it.example"
    tenant.save()
    make_connection(sim, tenant)
    app = sim.control.add_signin_app([f"{live_server.url}/account/acme/halo/callback"])
    HaloSignIn.objects.create(tenant=tenant, enabled=True, client_id=app["client_id"])
    customer = factories.customer(tenant, halo_id=1, name="Northwind Traders")
    today = timezone.localdate(timezone=tenant.tz)
    factories.invoice(
        tenant,
        customer=customer,
        currency="GBP",
        invoice_date=today - timedelta(days=20),
        due_date=today + timedelta(days=10),
        total=Decimal("240.00"),
        amount_due=Decimal("240.00"),
    )
    sim.control.add_user("ann@northwind.example", PASSWORD, 1, name="Ann Lee",
                         canaccessinvoices=True)  # fmt: skip
    return tenant


def shot(page, name):
    if folder := os.environ.get("SIGNIN_SCREENSHOTS"):
        width = page.viewport_size["width"]
        page.screenshot(path=str(Path(folder) / f"{name}-{width}.png"), full_page=True)


def at_halo_login(page, live_server, sim):
    page.goto(f"{live_server.url}/account/acme/halo/start")
    assert page.url.startswith(f"{sim.auth_url}/authorize?")
    assert page.get_by_role("heading", name="Sign in to Halo").is_visible()
    shot(page, "1-halo-login")


def log_in(page, username, password=PASSWORD):
    page.get_by_label("Email address").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


@pytest.mark.parametrize("viewport", ["page", "phone_page"])
def test_customer_signs_in_with_halo_and_sees_their_account(
    request, viewport, live_server, acme, sim
):
    page = request.getfixturevalue(viewport)
    at_halo_login(page, live_server, sim)
    log_in(page, "ann@northwind.example", "wrong")
    assert page.get_by_role("alert").inner_text() == "The email address or password is not right."
    log_in(page, "ann@northwind.example")
    assert page.url.startswith(f"{live_server.url}/account/acme/")
    assert "/halo/" not in page.url
    assert page.get_by_text("Northwind Traders").first.is_visible()
    shot(page, "2-account-page")
    assert not HaloSignInAttempt.objects.exists()


def test_a_user_without_invoice_permission_is_told_whom_to_ask(page, live_server, acme, sim):
    sim.control.add_user("bob@northwind.example", PASSWORD, 1, canaccessinvoices=False)
    at_halo_login(page, live_server, sim)
    log_in(page, "bob@northwind.example")
    heading = page.get_by_role("heading", level=1)
    assert heading.inner_text() == "Your Halo account may not view invoices"
    assert page.get_by_text("Can view their invoices", exact=False).is_visible()
    footer = page.get_by_role("contentinfo")
    assert footer.get_by_role("link", name="billing@acme-it.example").is_visible()
    shot(page, "3-no-permission")


def test_cancel_then_sign_in_again(phone_page, live_server, acme, sim):
    page = phone_page
    at_halo_login(page, live_server, sim)
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "You did not sign in"
    shot(page, "4-cancelled")
    page.get_by_role("link", name="Sign in with Halo again").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Sign in to Halo").is_visible()
    log_in(page, "ann@northwind.example")
    assert page.get_by_text("Northwind Traders").first.is_visible()
