"""The Content-Security-Policy breaks nothing: Chromium reports no violation on the admin's
pages (lists, forms with autocomplete, the framed invoice PDF) or the API docs."""

import pytest
from django.urls import reverse

from tests import factories
from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}`);
});
"""


def violations(page):
    return page.evaluate("window.cspViolations")


def test_admin_pages_run_under_the_policy(page, live_server, personas):
    details = factories.portal_invoice(personas.tenant_a)
    factories.usage_count(personas.tenant_a)
    page.add_init_script(RECORD_VIOLATIONS)
    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.wait_for_selector("caption")
    assert violations(page) == []
    for path in (
        reverse("admin:index"),
        reverse("admin:portal_organisation_changelist"),
        reverse("admin:billing_sync_usagecount_add"),
        reverse("admin:invoicing_invoicepdf_change", args=[details.invoice_id]),
        reverse("admin:billing_sync_organisationmapping_suggestions"),
    ):
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        assert violations(page) == [], path
    # Django's autocomplete widget (select2) works: it fetches choices from the portal.
    page.goto(live_server.url + reverse("admin:billing_sync_usagecount_add"))
    page.click("#id_organisation + .select2")
    page.wait_for_selector(".select2-results__option")
    assert violations(page) == []


def test_tick_all_boxes_runs_from_the_static_script(page, live_server, personas):
    from integrations.billing_sync.models import HaloClientRecord

    organisation = factories.organisation(personas.tenant_a, name="Northwind", external_ref="N-1")
    HaloClientRecord.objects.create(tenant=personas.tenant_a, halo_id=77, name="Northwind")
    page.add_init_script(RECORD_VIOLATIONS)
    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.wait_for_selector("caption")
    page.goto(live_server.url + reverse("admin:billing_sync_organisationmapping_suggestions"))
    boxes = page.locator("input[name=accept]")
    assert boxes.count() == 1 and boxes.first.is_checked(), organisation
    page.click("input[data-tick-all]")
    assert not boxes.first.is_checked()
    assert violations(page) == []


def test_api_docs_render_under_the_policy(page, live_server):
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(live_server.url + reverse("api-docs"))
    page.wait_for_selector("text=Halo Partner Portal API")
    page.wait_for_load_state("networkidle")
    found = violations(page)
    assert found == [], "\n".join(found)
