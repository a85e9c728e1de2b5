"""The billing sync job page in headless Chromium at 1366 x 768, the laptop size staff use:
Preview, then Sync now, from the page, with the licences landing in the Halo simulator; and
the run and result lists fit the width with their outcome and message columns.

`JOB_SCREENSHOTS=/some/dir` saves each page on the way for a look.
"""

import os
from pathlib import Path

import pytest
from django.urls import reverse

from integrations.billing_sync.models import BillingSyncRun, ProductMapping
from integrations.invoice_sync.runner import run_sync
from tests.billing_sync.conftest import World
from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH, HEIGHT = 1366, 768


@pytest.fixture
def laptop(browser):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def world(personas, sim, live_server, tasks_inline):
    """Tenant A's demo catalogue mapped to the simulator's clients, every pair counted;
    queued runs execute as the request commits (`tasks_inline`), as a worker would."""
    world = World.build(personas.tenant_a, sim).map_all()
    world.set_counts(world.every_pair())
    return world


def shot(page, name):
    if folder := os.environ.get("JOB_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / f"{name}-{WIDTH}.png"), full_page=True)


def fits(page, *headers):
    """Neither the page nor the list scrolls sideways, and each column named is in view."""
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    results = page.locator("#changelist .results")
    widths = results.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert widths[0] <= widths[1], f"the list scrolls sideways: {widths}"
    edge = results.bounding_box()
    for header in headers:
        box = page.locator("#result_list thead th", has_text=header).first.bounding_box()
        assert box is not None, header
        assert box["x"] + box["width"] <= min(WIDTH, edge["x"] + edge["width"]) + 1, header


def test_billing_sync_page_preview_then_sync_now(laptop, live_server, world, personas):
    page = laptop
    login(page, live_server, personas.owner_a.username, PASSWORD)
    job = f"{live_server.url}{reverse('admin:job_billing_sync')}"
    page.goto(job)
    assert page.inner_text("#job-run") == "Runs"
    assert "Never" in page.inner_text(".job-facts")
    assert page.locator(".job-pairs tbody tr").count() == 40
    shot(page, "job-billing-sync-before")

    page.click("button:has-text('Preview')")
    page.wait_for_selector(".run-status")
    assert "Preview ready" in page.inner_text(".run-status")
    assert world.portal_licences() == {}  # a preview writes nothing
    shot(page, "job-billing-sync-preview")

    page.goto(job)
    assert "40 row(s) wait for approval" in page.inner_text(".job-attention")
    page.click("button:has-text('Sync now')")
    page.wait_for_selector(".run-status")
    assert "Succeeded" in page.inner_text(".run-status")
    assert world.halo_counts() == world.wanted()  # the licences are in Halo

    page.goto(job)
    facts = page.inner_text(".job-facts")
    assert "Succeeded" in facts and "40 create" in facts
    rows = page.locator(".job-pairs tbody tr")
    assert rows.count() == 40
    first = rows.first.inner_text()
    assert "Done" in first and "create" in first
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    shot(page, "job-billing-sync-after")


def test_a_failed_pair_is_retried_from_the_page(laptop, live_server, world, personas):
    item = ProductMapping.objects.get(tenant=world.tenant, product__sku="MDR-PRO").halo_item
    world.sim.control.records("Item", [{"id": item.halo_id, "inactive": True}])
    world.sync()
    world.sim.control.records("Item", [{"id": item.halo_id, "inactive": False}])
    page = laptop
    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('admin:job_billing_sync')}?outcome=failed")
    assert page.locator(".job-pairs tbody tr").count() == 8
    shot(page, "job-billing-sync-failed")
    page.click("button:has-text('Retry 8 failed pairs')")
    page.wait_for_selector(".run-status")
    retry = BillingSyncRun.objects.filter(tenant=world.tenant).first()
    assert retry.trigger == "retry" and retry.results.count() == 8
    assert world.halo_counts() == world.wanted()


def test_run_and_result_lists_fit_1366(laptop, live_server, world, personas):
    item = ProductMapping.objects.get(tenant=world.tenant, product__sku="MDR-PRO").halo_item
    world.sim.control.records("Item", [{"id": item.halo_id, "inactive": True}])
    world.sync()  # long messages on the failed rows
    world.sync(BillingSyncRun.Trigger.PREVIEW, dry_run=True)
    run_sync(world.tenant, "initial", "cli")
    page = laptop
    login(page, live_server, personas.owner_a.username, PASSWORD)

    page.goto(f"{live_server.url}{reverse('admin:billing_sync_syncresult_changelist')}")
    shot(page, "list-sync-results")
    fits(page, "Outcome", "Message")
    page.goto(f"{live_server.url}{reverse('admin:billing_sync_billingsyncrun_changelist')}")
    shot(page, "list-billing-sync-runs")
    fits(page, "Status", "Summary")
    page.goto(f"{live_server.url}{reverse('admin:invoice_sync_invoicesyncrun_changelist')}")
    shot(page, "list-invoice-sync-runs")
    fits(page, "Status", "Error")
    for name in ("job_invoice_sync", "job_payments"):
        page.goto(f"{live_server.url}{reverse(f'admin:{name}')}")
        shot(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH, name


def test_approving_asks_first_then_writes(laptop, live_server, world, personas):
    page = laptop
    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.goto(f"{live_server.url}{reverse('admin:job_billing_sync')}")
    page.click("button:has-text('Preview')")
    page.wait_for_selector(".run-status")
    page.goto(f"{live_server.url}{reverse('admin:job_billing_sync')}")
    page.click("a:has-text('Review and approve')")
    page.click("input[name=all]")
    page.wait_for_selector(".job-confirm")
    facts = page.inner_text(".job-facts")
    assert "Licences changed in Halo\t40" in facts
    assert f"+{sum(world.wanted().values())}" in facts
    assert world.portal_licences() == {}  # asked, nothing written
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    shot(page, "confirm-approval")
    page.click("input[value='Yes, write them to Halo']")
    page.wait_for_selector(".run-status")
    assert "Succeeded" in page.inner_text(".run-status")
    assert world.halo_counts() == world.wanted()
