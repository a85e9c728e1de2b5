"""Paying two invoices together from the pay-several page, in headless Chromium at a laptop
and a phone size, with the Halo simulator checking each invoice got its own payment; and
the same page inside a cross-site frame (Halo's portal), where no cookie is needed.

`PAY_SCREENSHOTS=/some/dir` saves each page on the way for a look.
"""

import os
from pathlib import Path

import pytest
import requests

from billing.accounts.links import make_token
from billing.accounts.models import AccountSettings
from billing.models import Customer, Invoice
from billing.payments.models import Payment, PaymentSettings
from billing.payments.processors.test import SUCCESS
from integrations.halo_sim.testing import run_simulator
from integrations.invoice_sync.runner import run_sync
from tests import factories
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.payments.conftest import connect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def sim():
    with run_simulator() as sim:
        yield sim


@pytest.fixture
def tenant(sim, settings, live_server, tasks_inline):
    sim.control.reset()
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.PORTAL_BASE_URL = live_server.url
    tenant = factories.tenant("acme")
    tenant.display_name = "Acme IT Services Ltd"
    tenant.support_email = "billing@acme-it.example"
    tenant.save()
    connect(tenant, sim)
    PaymentSettings.for_tenant(tenant)
    assert not run_sync(tenant, "initial", "cli").error
    return tenant


def shot(page, name):
    if folder := os.environ.get("PAY_SCREENSHOTS"):
        width = page.viewport_size["width"]
        page.screenshot(path=str(Path(folder) / f"several-{name}-{width}.png"), full_page=True)


def customer_with_open_invoices(tenant):
    for customer in Customer.objects.filter(tenant=tenant):
        invoices = sorted(
            Invoice.objects.filter(customer=customer).unpaid(), key=lambda i: i.invoice_date
        )
        if len(invoices) >= 3:
            return customer, invoices
    raise AssertionError("no customer with three open invoices in the seed")


def several_path(customer):
    return f"/pay/{customer.tenant.slug}/-/account/{make_token(customer)}/pay"


def pay_two(frame, invoices):
    """Untick all but the two oldest, review, pay with the test card."""
    for invoice in invoices[2:]:
        frame.uncheck(f"#invoice-{invoice.pk}")
    frame.get_by_role("button", name="Continue with the ticked invoices").click()
    frame.get_by_role("heading", name="Your payment of").wait_for()
    for invoice in invoices[:2]:
        assert frame.get_by_role("cell", name=f"Invoice {invoice.display_number()}").is_visible()
    for invoice in invoices[2:]:
        assert frame.get_by_role("cell", name=f"Invoice {invoice.display_number()}").count() == 0
    frame.fill("#id_card_name", "Dana Payer")
    frame.fill("#id_card_number", SUCCESS)
    frame.fill("#id_card_expiry", "12/39")
    frame.fill("#id_card_cvc", "123")
    frame.fill("#id_email", "dana@northwind.example")


@pytest.mark.parametrize("size", SIZES)
def test_paying_two_invoices_together(browser, size, live_server, tenant, sim):
    context = browser.new_context(viewport=SIZES[size], is_mobile=size == "phone")
    page = context.new_page()
    customer, invoices = customer_with_open_invoices(tenant)
    total = invoices[0].amount_due + invoices[1].amount_due

    page.goto(live_server.url + several_path(customer))
    assert page.get_by_role("heading", name="Pay your invoices").is_visible()
    assert all(page.is_checked(f"#invoice-{i.pk}") for i in invoices)  # all ticked
    assert page.get_by_role("button", name="Pay the whole balance").is_visible()
    shot(page, f"choose-{size}")
    pay_two(page, invoices)
    shot(page, f"review-{size}")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_load_state()

    assert page.get_by_role("heading", name="Payment received").is_visible()
    shot(page, f"receipt-{size}")
    payment = Payment.objects.get()
    assert payment.amount == total and payment.allocations.count() == 2
    recorded = requests.get(f"{sim.base_url}/_sim/state/InvoicePayment", timeout=10).json()
    mine = [p for p in recorded if p.get("thirdpartyid") == payment.reference]
    assert sorted(p["invoice_id"] for p in mine) == sorted(i.halo_id for i in invoices[:2])
    for invoice in invoices[:2]:
        text = page.get_by_role("row", name=f"Invoice {invoice.display_number()}").text_content()
        assert "Paid" in text
    # Nothing scrolls sideways, at either size.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.goto(live_server.url + several_path(customer))
    assert page.locator(f"#invoice-{invoices[0].pk}").count() == 0  # paid: no longer listed
    assert page.locator(f"#invoice-{invoices[2].pk}").count() == 1
    context.close()


def test_inside_halos_portal_frame_without_cookies(browser, live_server, tenant, sim):
    """Halo's portal on another site frames the page; third-party cookies are blocked.
    The portal is served at localhost and "Halo" at 127.0.0.1 (another site to the browser),
    both on this machine: Chromium refuses to let a public site frame a local one."""
    halo = "http://127.0.0.1:9"  # answered by the browser route below, never dialled
    options = AccountSettings.for_tenant(tenant)
    options.halo_portal_origins = halo
    options.save()
    customer, invoices = customer_with_open_invoices(tenant)
    # The routed "Halo" page has no network address, so Chromium counts it as a public site
    # and refuses it a frame on this machine's portal: a browser of its own without that check.
    local = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"],
        headless=True,
    )
    context = local.new_context(viewport=SIZES["laptop"])
    page = context.new_page()
    assert "localhost" in live_server.url
    src = live_server.url + several_path(customer)
    page.route(
        f"{halo}/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f'<h1>Halo portal</h1><iframe src="{src}" width="1000" height="700"></iframe>',
        ),
    )

    page.goto(f"{halo}/portal/")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="Pay your invoices").wait_for()
    shot(page, "framed-choose")
    inner = page.frames[1]
    pay_two(inner, invoices)
    inner.get_by_role("button", name="Pay").click()
    inner.wait_for_load_state()

    frame.get_by_role("heading", name="Payment received").wait_for()
    shot(page, "framed-receipt")
    assert Payment.objects.get().status == "succeeded"
    assert not context.cookies(live_server.url)
    context.close()
    local.close()
