"""From the link in Halo's invoice email to the receipt, in headless Chromium, with the Halo
simulator checking the invoice ends up paid in Halo.

`PAY_SCREENSHOTS=/some/dir` saves each page on the way (phone and desktop) for a look.
"""

import os
from pathlib import Path

import pytest
import requests
from django.core.files.base import ContentFile

from billing.models import Invoice
from billing.payments.models import Payment, PaymentSettings
from billing.payments.processors.test import DECLINE, SUCCESS
from integrations.halo_sim.testing import run_simulator
from integrations.invoice_sync.runner import run_sync
from portal.demo import _logo_png
from tests import factories
from tests.payments.conftest import connect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def sim():
    with run_simulator() as sim:
        yield sim


@pytest.fixture
def tenant(sim, settings, live_server, tasks_inline, tmp_path):
    """The outbox delivers at once (`tasks_inline`), as a worker would."""
    sim.control.reset()
    settings.MEDIA_ROOT = tmp_path
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.PORTAL_BASE_URL = live_server.url
    tenant = factories.tenant("acme")
    tenant.display_name = "Acme IT Services Ltd"
    tenant.support_email = "billing@acme-it.example"
    tenant.support_phone = "+44 113 496 0000"
    tenant.address = "Unit 4, Riverside Works\n12 Mill Lane\nLeeds LS1 4AB"
    tenant.logo.save("logo.png", ContentFile(_logo_png(tenant.accent_colour)))
    connect(tenant, sim)
    PaymentSettings.for_tenant(tenant)
    assert run_sync(tenant, "initial", "cli").status == "succeeded"
    return tenant


def shot(page, name):
    if folder := os.environ.get("PAY_SCREENSHOTS"):
        width = page.viewport_size["width"]
        page.screenshot(path=str(Path(folder) / f"{name}-{width}.png"), full_page=True)


def unpaid(tenant, sim):
    record = next(
        i for i in sim.control.state("Invoice") if i["paymentstatus"] == 0 and i.get("lines")
    )
    return Invoice.objects.get(tenant=tenant, halo_id=record["id"])


def pay_with(page, number):
    page.fill("#id_card_name", "Dana Payer")
    page.fill("#id_card_number", number)
    page.fill("#id_card_expiry", "12/39")
    page.fill("#id_card_cvc", "123")
    page.fill("#id_email", "dana@northwind.example")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_load_state()


@pytest.mark.parametrize("viewport", ["page", "phone_page"])
def test_emailed_link_to_receipt_and_paid_in_halo(request, viewport, live_server, tenant, sim):
    page = request.getfixturevalue(viewport)
    invoice = unpaid(tenant, sim)

    page.goto(f"{live_server.url}/pay/{tenant.slug}/{invoice.halo_id}")

    assert page.get_by_role("heading", name=f"Invoice {invoice.halo_id}").is_visible()
    assert page.get_by_text("Acme IT Services Ltd").first.is_visible()
    assert page.evaluate("document.querySelector('.brand-bar img').naturalWidth") > 0
    shot(page, "pay")
    pay_with(page, SUCCESS)

    assert page.get_by_role("heading", name="Payment received").is_visible()
    assert "•••• 4242" in page.text_content("main")
    shot(page, "receipt")
    payment = Payment.objects.get()
    halo = requests.get(f"{sim.base_url}/_sim/state/Invoice", timeout=10).json()
    record = next(i for i in halo if i["id"] == invoice.halo_id)
    assert record["paymentstatus"] == 2 and record["amountdue"] == 0
    halo_payments = requests.get(f"{sim.base_url}/_sim/state/InvoicePayment", timeout=10).json()
    assert [p["thirdpartyid"] for p in halo_payments].count(payment.reference) == 1

    page.go_back()  # the pay page again: paid, no second button
    page.reload()
    assert page.get_by_text("This invoice is paid in full").is_visible()
    assert page.get_by_role("button", name="Pay").count() == 0


def test_decline_shows_why_then_the_retry_pays(phone_page, live_server, tenant, sim):
    page = phone_page
    invoice = unpaid(tenant, sim)
    page.goto(f"{live_server.url}/pay/{tenant.slug}/{invoice.halo_id}")

    pay_with(page, DECLINE)

    alert = page.get_by_role("alert")
    assert "Your card was declined" in alert.text_content()
    shot(page, "declined")
    pay_with(page, SUCCESS)
    assert page.get_by_role("heading", name="Payment received").is_visible()
    assert list(Payment.objects.values_list("status", flat=True).order_by("created")) == [
        "failed",
        "succeeded",
    ]


def test_form_errors_are_announced_and_linked(phone_page, live_server, tenant, sim):
    page = phone_page
    invoice = unpaid(tenant, sim)
    page.goto(f"{live_server.url}/pay/{tenant.slug}/{invoice.halo_id}")
    pay_with(page, "1234")
    assert "Please correct the highlighted" in page.get_by_role("alert").text_content()
    assert page.get_attribute("#id_card_number", "aria-invalid") == "true"
    shot(page, "form-errors")


@pytest.mark.parametrize("viewport", ["page", "phone_page"])
def test_error_pages(request, viewport, live_server, tenant):
    page = request.getfixturevalue(viewport)
    page.goto(f"{live_server.url}/pay/{tenant.slug}/99999")
    assert page.get_by_role("heading", name="We can't find this invoice").is_visible()
    shot(page, "unknown")
    page.goto(f"{live_server.url}/pay/{tenant.slug}/$INVOICEID")
    assert page.get_by_role("heading", name="This payment link is incomplete").is_visible()
    shot(page, "unsubstituted")
