"""The pay page on a phone and after a decline, in headless Chromium (issue 15): the whole
card form and its Pay button fit the first screen of a 390x844 phone, and the receipt
reached by a retry after a decline does not keep the decline's `#payment-failed`.

`PAY_SCREENSHOTS=/some/dir` saves the pages for a look (see test_pay_flow.py)."""

import pytest

from billing.payments.models import PaymentSettings
from billing.payments.processors.test import DECLINE, SUCCESS
from integrations.invoice_sync.runner import run_sync
from tests import factories
from tests.browser.test_pay_flow import pay_with, shot, sim, unpaid
from tests.payments.conftest import connect

__all__ = ["sim"]  # the module's simulator fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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
    run = run_sync(tenant, "initial", "cli")
    assert run.status == "succeeded", run.error
    return tenant


def test_the_card_form_starts_on_the_first_screen_of_a_phone(phone_page, live_server, tenant, sim):
    page = phone_page
    invoice = unpaid(tenant, sim)
    page.goto(f"{live_server.url}/pay/{tenant.slug}/{invoice.halo_id}")
    shot(page, "pay-phone-fold")
    fold = page.viewport_size["height"]

    # The whole card form and its Pay button, without scrolling.
    for part in ("fieldset.card-fields", "#id_email", ".pay button[type=submit]"):
        box = page.locator(part).bounding_box()
        assert box is not None and box["y"] + box["height"] <= fold, (part, box, fold)
    # What is being paid stays first: the amount due is seen before the form.
    due = page.locator(".facts .due dd").bounding_box()
    assert (
        due is not None
        and due["y"] + due["height"] <= page.locator("#id_card_name").bounding_box()["y"]
    )


@pytest.mark.parametrize("viewport", ["page", "phone_page"])
def test_the_receipt_after_a_declined_then_paid_card_has_no_failure_anchor(
    request, viewport, live_server, tenant, sim
):
    page = request.getfixturevalue(viewport)
    invoice = unpaid(tenant, sim)
    page.goto(f"{live_server.url}/pay/{tenant.slug}/{invoice.halo_id}")
    pay_with(page, DECLINE)
    assert page.url.endswith("#payment-failed")  # scrolled to the message

    pay_with(page, SUCCESS)

    assert page.get_by_role("heading", name="Payment received").is_visible()
    assert "#" not in page.url and "failed=" not in page.url, page.url
