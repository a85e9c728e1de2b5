"""A new partner, in a real browser at 1366x768, from a fresh tenant to a scheduled billing
sync with licences in Halo (the simulator), led by the home page's guided setup: each
step's Next button, each step's page saying where they are, nothing read from a README."""

import os
import tempfile
from pathlib import Path

import pytest
import requests

from integrations.billing_sync.models import BillingSyncSettings
from portal import demo
from portal.models import ApiToken, Membership, Organisation, Product
from tests import factories
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: Where the screenshots go, to be looked at (not asserted on): SCREENSHOTS_DIR or /tmp.
SHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or tempfile.gettempdir()) / "portal-setup"


@pytest.fixture
def wide_page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def fresh(sim, settings, tasks_inline):
    """A tenant with its customers and products (onboarded), nothing else; the worker's
    tasks run at once (`tasks_inline`), as a worker would."""
    settings.HALO_ALLOW_PRIVATE_ADDRESSES = True
    tenant = factories.tenant("fresh")
    for name, ref in demo.ORGANISATIONS:
        Organisation.objects.create(tenant=tenant, name=name, external_ref=ref)
    for name, sku, price in demo.PRODUCTS:
        Product.objects.create(tenant=tenant, name=name, sku=sku, unit_price=price)
    make_staff("new-owner", tenant, Membership.Role.OWNER)
    return tenant


def card(page, title):
    return page.locator(".setup-job", has=page.locator("h3", has_text=title))


def shot(page, name):
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def next_in(page, title):
    """Press the job's Next button on the home page; answers the step it named."""
    page.goto(page.url.split("/admin/")[0] + "/admin/")
    button = card(page, title).locator("a.setup-go")
    label = button.inner_text()
    button.click()
    return label


def test_from_fresh_tenant_to_a_scheduled_billing_sync(wide_page, live_server, sim, fresh):
    page = wide_page
    login(page, live_server, "new-owner", PASSWORD)

    # The home page says what to do, job by job, first thing on the screen.
    billing = card(page, "Billing sync")
    assert page.locator("#setup-title").inner_text() == f"Set up {fresh.name}"
    assert billing.locator(".setup-count").inner_text() == "0 of 7 done"
    assert billing.locator(".setup-go").is_visible() and billing.is_visible()
    assert billing.locator(".setup-go").bounding_box()["y"] < 768  # above the fold
    assert "Django" not in page.title() and "Halo Partner Portal" in page.title()
    shot(page, "setup-home-fresh")

    # 1. Connect Halo.
    assert next_in(page, "Billing sync") == "Next: Connect Halo →"
    page.fill("#id_auth_url", sim.auth_url)
    page.fill("#id_resource_url", sim.api_url)
    page.fill("#id_halo_tenant", sim.tenant)
    page.fill("#id_client_id", sim.demo_app.client_id)
    page.fill("#id_new_secret", sim.demo_app.client_secret)
    page.click("input[name=_save]")
    # 2. Its page now says this is step 2 and leads on.
    assert "step 2 of 7: Test the connection" in page.locator(".setup-pointer").inner_text()
    page.click(".setup-pointer >> text=Test the connection →")
    pointer = page.locator(".setup-pointer")
    assert "step 2 of 7: Test the connection (to do)" in pointer.inner_text()
    page.click("button:has-text('Test connection')")

    # 3-4. Map organisations and products: refresh from Halo, accept the suggestions.
    assert next_in(page, "Billing sync") == "Next: Map organisations to Halo clients →"
    tested = page.goto(f"{live_server.url}/admin/") and card(page, "Billing sync")
    assert "Working, tested just now." in tested.inner_text()
    card(page, "Billing sync").locator("a.setup-go").click()
    assert "step 3 of 7" in page.locator(".setup-pointer").inner_text()
    page.click("button:has-text('Refresh from Halo')")
    page.click("a:has-text('Suggestions')")
    page.click("input[value='Accept ticked suggestions']")
    assert next_in(page, "Billing sync") == "Next: Map products to Halo items →"
    page.click("a:has-text('Suggestions')")
    page.click("input[value='Accept ticked suggestions']")

    # 5. Usage arrives from the partner's own system, through the usage API.
    assert next_in(page, "Billing sync") == "Next: Send usage →"
    _, secret = ApiToken.issue(fresh, ApiToken.Purpose.USAGE, "PSA export")
    sent = requests.post(
        f"{live_server.url}/api/v1/usage",
        json={
            "idempotency_key": "first",
            "usage": [
                {"organisation": ref, "product": sku, "quantity": 3 + n}
                for n, ((_, ref), (_, sku, _)) in enumerate(
                    zip(demo.ORGANISATIONS[:4], demo.PRODUCTS[:4], strict=True)
                )
            ],
        },
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )
    assert sent.status_code in (200, 201), sent.text

    # 6. Preview, from the job's page.
    assert next_in(page, "Billing sync") == "Next: Preview a sync →"
    page.click("button:has-text('Preview')")
    page.goto(f"{live_server.url}/admin/")
    preview = card(page, "Billing sync").locator("li.setup-step", has_text="Preview a sync")
    assert preview.locator(".setup-state").inner_text() == "Done"
    assert "4 create" in preview.locator(".setup-detail").inner_text()

    # 7. Schedule it, on the billing sync settings form (no list, no Delete).
    assert next_in(page, "Billing sync") == "Next: Schedule the sync →"
    assert page.locator("h1").inner_text() == "Billing sync settings"
    assert page.locator("a.deletelink").count() == 0
    page.select_option("#id_schedule", "daily")
    page.fill("#id_schedule_hour", "3")
    shot(page, "setup-billing-sync-settings")
    page.click("input[name=_save]")
    assert "Billing sync settings saved." in page.locator(".messagelist").inner_text()
    assert BillingSyncSettings.objects.get(tenant=fresh).schedule == "daily"

    # Set up: the card says so; a sync puts the licences into Halo.
    page.goto(f"{live_server.url}/admin/")
    billing = card(page, "Billing sync")
    assert billing.locator(".setup-count").inner_text() == "Set up"
    schedule = billing.locator("li.setup-step", has_text="Schedule").text_content()  # folded
    assert "Daily: next" in schedule and "03:00" in schedule
    shot(page, "setup-home-billing-done")
    billing.locator("h3 a").click()
    page.click("button:has-text('Sync now')")
    licences = [r for r in sim.control.state("SoftwareLicence") if not r.get("_deleted")]
    ours = [r for r in licences if str(r.get("vendor_product_sku", "")).startswith("hpp:")]
    assert sorted(r["count"] for r in ours) == [
        3,
        4,
        5,
        6,
    ]


def test_each_settings_form_at_1366(wide_page, live_server, fresh):
    """Every per-tenant settings page opens as its form, without Delete (screenshots)."""
    page = wide_page
    login(page, live_server, "new-owner", PASSWORD)
    for path, name in [
        ("/admin/invoice_sync/invoicesyncsettings/", "invoice-sync"),
        ("/admin/invoicing/invoicingsettings/", "invoicing"),
        ("/admin/payments/paymentsettings/", "payments"),
        ("/admin/reminders/remindersettings/", "reminders"),
        ("/admin/accounts/accountsettings/", "account-page"),
    ]:
        page.goto(live_server.url + path)
        assert "/change/" in page.url, path
        assert page.locator("a.deletelink").count() == 0
        assert page.locator("input[name=_save]").count() == 1
        assert "Django" not in page.content()
        shot(page, f"settings-{name}")
