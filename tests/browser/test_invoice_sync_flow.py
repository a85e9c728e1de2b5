"""Invoice sync from its job page in headless Chromium at 1366 x 768, as a partner would:
Fetch new data, and the invoices Halo holds are then listed in the portal."""

import pytest
from django.urls import reverse

from tests.browser.conftest import login
from tests.conftest import PASSWORD
from tests.halo.conftest import make_connection

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def laptop(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    yield page
    context.close()


def test_fetch_new_data_from_the_job_page_lists_halo_s_invoices(
    laptop, live_server, personas, sim, tasks_inline
):
    make_connection(sim, personas.tenant_a)
    halo_numbers = sorted(
        str(r["invoicenumber"]) for r in sim.control.state("Invoice") if not r.get("_deleted")
    )
    assert halo_numbers  # the simulator's seed holds invoices
    login(laptop, live_server, "owner-a", PASSWORD)
    laptop.goto(f"{live_server.url}{reverse('admin:job_invoice_sync')}")
    laptop.get_by_role("button", name="Fetch new data").click()
    laptop.wait_for_load_state()
    assert "Fetch new data" in laptop.inner_text("#content")
    laptop.goto(f"{live_server.url}{reverse('admin:billing_invoice_changelist')}?all=")
    listed = laptop.inner_text("#result_list")
    shown = [number for number in halo_numbers if number in listed]
    assert shown, "no Halo invoice is listed after Fetch new data"
    assert laptop.evaluate("document.documentElement.scrollWidth") <= 1366
