"""The console's charts drawn in Chromium at 1366 x 768 under the enforced CSP: the invoice
list's ageing chart (a bar opens its bucket; Copy puts the pay link on the clipboard) and
the billing sync job page's licence chart. `CHART_SCREENSHOTS=<dir>` keeps the pictures."""

import os
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.payments.models import Payment, PayPage
from integrations.billing_sync.models import UsageSubmission
from tests import factories
from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def laptop(browser, live_server):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    page.refused = []
    page.on("console", lambda m: "Refused to" in m.text and page.refused.append(m.text))
    page.on("pageerror", lambda error: page.refused.append(str(error)))
    yield page
    context.close()


def shoot(page, name, tmp_path):
    folder = os.environ.get("CHART_SCREENSHOTS") or tmp_path
    os.makedirs(folder, exist_ok=True)
    page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=False)


def drawn(page, selector):
    """The chart's canvas once Chart.js drew it, with its text alternative."""
    page.wait_for_selector(f"{selector}[data-drawn=true]")
    canvas = page.locator(f"{selector} canvas")
    box = canvas.bounding_box()
    assert box["width"] > 300 and box["height"] > 150
    painted = canvas.evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v)"
    )
    assert painted, "nothing drawn on the canvas"
    assert canvas.get_attribute("role") == "img"
    return page.locator(f"{selector} .visually-hidden table")


def test_invoice_list_ageing_chart_and_copy_pay_link(laptop, live_server, personas, tmp_path):
    tenant = personas.tenant_a
    today = timezone.localdate(timezone=tenant.tz)
    customer = factories.customer(tenant, name="Initech")
    for days, amount in [(-10, "1200.00"), (12, "640.00"), (45, "980.50"), (75, "310.00"),
                         (130, "2150.00")]:  # fmt: skip
        factories.invoice(
            tenant,
            customer=customer,
            due_date=today - timedelta(days=days),
            invoice_date=today - timedelta(days=days + 30),
            total=Decimal(amount),
            amount_due=Decimal(amount),
        )
    login(laptop, live_server, personas.owner_a.username, PASSWORD)

    laptop.goto(f"{live_server.url}/admin/billing/invoice/")
    table = drawn(laptop, "#chart-ageing-gbp")
    assert "£2,150.00" in table.inner_text() and "Over 90 days" in table.inner_text()
    shoot(laptop, "invoices-ageing", tmp_path)
    assert laptop.evaluate("document.documentElement.scrollWidth") <= 1366
    # Every column on screen, pay link and PDF included: the list does not scroll sideways.
    results = laptop.locator("#changelist .results")
    assert results.evaluate("r => r.scrollWidth <= r.clientWidth")
    laptop.locator("#result_list").scroll_into_view_if_needed()
    shoot(laptop, "invoices-list", tmp_path)

    # Copy: the pay page's address on the clipboard.
    laptop.locator("button[data-copy]").first.click()
    laptop.wait_for_selector("button[data-copy]:has-text('Copied')")
    pasted = laptop.evaluate("navigator.clipboard.readText()")
    assert pasted in {page.public_url() for page in PayPage.objects.filter(tenant=tenant)}

    # The "Over 90 days" bar opens the list filtered to it.
    chart = laptop.evaluate_handle("document.querySelector('#chart-ageing-gbp canvas').portalChart")
    x, y = chart.evaluate(
        "c => { const bar = c.getDatasetMeta(0).data[4]; return [bar.x, (bar.y + bar.base) / 2]; }"
    )
    laptop.locator("#chart-ageing-gbp canvas").click(position={"x": x, "y": y})
    laptop.wait_for_url("**ageing=over-90")
    assert laptop.locator("#result_list tbody tr").count() == 1

    # The Payments page: money collected per month beside the ageing.
    for months_ago, amount, refunded in [(0, "420.00", "0"), (1, "980.50", "80.50"),
                                         (3, "1500.00", "0"), (5, "310.00", "310.00")]:  # fmt: skip
        factories.payment(
            tenant,
            invoice=factories.invoice(tenant, customer=customer, amount_due=Decimal(amount)),
            status=Payment.Status.SUCCEEDED,
            succeeded_at=timezone.now() - timedelta(days=30 * months_ago),
            refunded_amount=Decimal(refunded),
        )
    laptop.goto(f"{live_server.url}/admin/jobs/payments/")
    table = drawn(laptop, "#chart-payments-gbp")
    assert "£900.00" in table.inner_text()  # collected less refunds a month ago
    drawn(laptop, "#chart-ageing-gbp")
    laptop.locator("#chart-payments-gbp").scroll_into_view_if_needed()
    shoot(laptop, "payments-charts", tmp_path)
    assert laptop.refused == []


def test_billing_sync_job_page_draws_licences_over_time(laptop, live_server, personas, tmp_path):
    tenant = personas.tenant_a
    organisations = [factories.organisation(tenant, name=n) for n in ("Acme", "Globex", "Umbrella")]
    products = [factories.product(tenant, name=n) for n in ("Backup", "EDR", "M365 E3")]
    now = timezone.now()
    for month in range(11, -1, -1):
        rows = [
            (organisation, product, 5 + (11 - month) * (i + 1) + j * 3)
            for i, organisation in enumerate(organisations)
            for j, product in enumerate(products)
        ]
        submission, _ = UsageSubmission.objects.record(
            tenant, rows, source=UsageSubmission.Source.ADMIN
        )
        UsageSubmission.objects.filter(pk=submission.pk).update(
            created=now - timedelta(days=30 * month)
        )
    login(laptop, live_server, personas.owner_a.username, PASSWORD)

    laptop.goto(f"{live_server.url}/admin/jobs/billing-sync/")
    table = drawn(laptop, "#chart-licences")
    headings = table.locator("thead th").all_text_contents()
    assert headings == ["End of month", "M365 E3", "EDR", "Backup", "All products"]
    laptop.locator("#chart-licences").scroll_into_view_if_needed()
    shoot(laptop, "billing-sync-licences", tmp_path)
    # The hidden table of twelve months takes no room: nothing scrolls sideways.
    assert laptop.evaluate("document.documentElement.scrollWidth") <= 1366

    laptop.goto(f"{live_server.url}/admin/portal/organisation/{organisations[0].pk}/change/")
    drawn(laptop, f"#chart-licences-org-{organisations[0].pk}")
    assert laptop.refused == []
