"""The account page in headless Chromium: from a pay page's link, on a phone, by keyboard,
inside a cross-site frame (Halo's portal on another origin), with axe-core's accessibility
check (no serious or critical findings).

axe-core is vendored (tests/browser/vendor/axe.min.js, axe-core 4.14.1 from the npm
registry, MPL-2.0, licence beside it) so the suite needs no network. It is injected through
Playwright's evaluate (the DevTools protocol), which the page's CSP does not govern: the
page itself keeps its real policy. `ACCOUNT_SCREENSHOTS=/some/dir` saves each page.
"""

import os
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from billing.accounts import links
from billing.accounts.models import AccountSettings
from billing.models import Invoice, InvoiceLine
from billing.payments.models import PaymentSettings, PayPage, SavedPaymentMethod
from portal.demo import _logo_png
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()


@pytest.fixture
def customer(settings, live_server, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.PORTAL_BASE_URL = live_server.url
    tenant = factories.tenant("acme")
    tenant.display_name = "Acme IT Services Ltd"
    tenant.support_email = "billing@acme-it.example"
    tenant.support_phone = "+44 113 496 0000"
    tenant.address = "Unit 4, Riverside Works\n12 Mill Lane\nLeeds LS1 4AB"
    tenant.logo.save("logo.png", ContentFile(_logo_png(tenant.accent_colour)))
    PaymentSettings.for_tenant(tenant)
    customer = factories.customer(tenant, name="Northwind Traders", billing_email="ap@nw.example")
    rule = factories.autopay_rule(tenant, subtype_name="Managed Services")
    today = timezone.localdate(timezone=tenant.tz)
    for n, (overdue, amount, status) in enumerate(
        [(-20, "1240.00", "unpaid"), (12, "386.40", "unpaid"), (45, "96.00", "unpaid"),
         (100, "58.20", "unpaid"), (70, "1240.00", "paid"), (130, "1240.00", "paid")]
    ):  # fmt: skip
        invoice = factories.invoice(
            tenant,
            customer=customer,
            halo_id=4100 + n,
            total=Decimal(amount),
            tax_total=(Decimal(amount) / 6).quantize(Decimal("0.01")),
            amount_due=Decimal(amount) if status == "unpaid" else 0,
            amount_paid=0 if status == "unpaid" else Decimal(amount),
            payment_status=status,
            currency="GBP",
            invoice_date=today - timedelta(days=overdue + 30),
            due_date=today - timedelta(days=overdue),
            autopay_rule=rule if n == 0 else None,
        )
        InvoiceLine.objects.create(invoice=invoice, description="Managed services", total=amount)
    factories.invoice(tenant, customer=customer, halo_id=4099, voided=True, currency="GBP")
    factories.saved_payment_method(
        tenant,
        customer=customer,
        consented_at=timezone.now() - timedelta(days=90),
        consent_email="ap@nw.example",
    )
    return customer


@pytest.fixture
def laptop_page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    yield page
    context.close()


def shot(page, name):
    if folder := os.environ.get("ACCOUNT_SCREENSHOTS"):
        width = page.viewport_size["width"]
        page.screenshot(path=str(Path(folder) / f"account-{name}-{width}.png"), full_page=True)


def axe_findings(frame):
    """Serious and critical axe-core violations of the document in `frame` (a page or frame)."""
    frame.evaluate(AXE)
    result = frame.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})"
    )
    assert result["passes"], "axe ran no checks"
    return [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("viewport", ["laptop_page", "phone_page"])
def test_from_a_pay_page_to_the_account_page(request, viewport, live_server, customer):
    page = request.getfixturevalue(viewport)
    invoice = Invoice.objects.get(halo_id=4101)
    page.goto(live_server.url + PayPage.for_invoice(invoice).get_absolute_url())

    page.get_by_role("link", name="See all your invoices").click()
    page.wait_for_load_state()

    assert page.get_by_role("heading", name="Northwind Traders").is_visible()
    main = page.text_content("main")
    assert "£1,780.60" in main  # the balance: 1240.00 + 386.40 + 96.00 + 58.20
    for bucket, amount in [("Current", "£1,240.00"), ("1–30 days", "£386.40"),
                           ("31–60 days", "£96.00"), ("Over 90 days", "£58.20")]:  # fmt: skip
        row = page.locator(".ageing-table tr", has_text=bucket)
        assert amount in row.text_content()
    assert page.locator(".invoices tbody tr").count() == 7
    assert page.get_by_role("link", name="Pay invoice 4101").is_visible()
    assert page.get_by_role("link", name="PDF of invoice 4104 (opens in a new tab)").count() == 1
    shot(page, "top")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], "the page scrolls sideways"
    assert axe_findings(page) == []

    page.get_by_role("link", name="Pay invoice 4101").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Invoice 4101").is_visible()


def test_keyboard_reaches_every_action_with_a_visible_focus(phone_page, live_server, customer):
    page = phone_page
    page.goto(live_server.url + links.account_path(customer))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    reached = []
    for _ in range(80):  # every control once, then focus leaves the page
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "(() => { const e = document.activeElement; if (e === document.body) return null;"
            " const s = getComputedStyle(e);"
            " return [e.textContent.trim(), s.outlineStyle, s.outlineWidth]; })()"
        )
        if focused is None:
            break
        reached.append(focused[0])
        assert focused[1] != "none" and focused[2] != "0px", f"no focus ring on {focused[0]}"
    assert "Pay invoice 4101" in reached
    assert "Stop auto-pay and remove this card" in reached
    # Enter on the focused button sends the form.
    page.get_by_role("button", name="Stop auto-pay and remove this card").focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert page.get_by_role("status").text_content().strip().startswith("Auto-pay is off")
    assert not SavedPaymentMethod.objects.filter(customer=customer, active=True).exists()


class _Parent(BaseHTTPRequestHandler):
    """Halo's self-service portal, on another site: a page that frames the account page."""

    frame_url = ""

    def do_GET(self):
        body = (
            '<!doctype html><html lang="en"><head><title>Halo portal</title></head><body>'
            f'<h1>Customer portal</h1><iframe title="Your invoices" src="{self.frame_url}" '
            'style="width:100%;height:1400px;border:0"></iframe></body></html>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def halo_portal(live_server, customer):
    """A second origin (127.0.0.1 while the portal is on localhost: another site) framing
    the customer's account link."""
    handler = type(
        "Parent", (_Parent,), {"frame_url": live_server.url + links.account_path(customer)}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def account_frame(page):
    page.wait_for_load_state()
    return next(f for f in page.frames if f != page.main_frame)


def test_inside_a_cross_site_frame_forms_work_without_cookies(
    browser, live_server, customer, halo_portal
):
    assert live_server.url.startswith("http://localhost:")
    settings_row = AccountSettings.for_tenant(customer.tenant)
    settings_row.halo_portal_origins = halo_portal
    settings_row.save()
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.goto(halo_portal)
    frame = account_frame(page)
    frame.wait_for_selector("h1")

    assert frame.get_by_role("heading", name="Northwind Traders").is_visible()
    assert axe_findings(frame) == []
    pay = frame.get_by_role("link", name="Pay invoice 4101 (opens in a new tab)")
    assert pay.get_attribute("target") == "_blank"
    shot(page, "framed")

    frame.get_by_role("button", name="Stop auto-pay and remove this card").click()
    frame.wait_for_selector("text=Auto-pay is off")

    assert not SavedPaymentMethod.objects.filter(customer=customer, active=True).exists()
    assert context.cookies() == []  # nothing set, nothing needed: no third-party cookies
    with context.expect_page() as opened:
        pay.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.get_by_role("heading", name="Invoice 4101").is_visible()  # top level, not framed
    context.close()


def test_a_site_not_listed_cannot_frame_the_page(browser, live_server, customer, halo_portal):
    """Without the tenant listing it, Chromium refuses the frame (CSP frame-ancestors)."""
    context = browser.new_context()
    page = context.new_page()
    refused = "frame-ancestors 'none'"
    with page.expect_console_message(lambda message: refused in message.text) as message:
        page.goto(halo_portal)
    assert "has been blocked" in message.value.text
    assert "Northwind" not in account_frame(page).content()
    context.close()


@pytest.mark.parametrize("viewport", ["laptop_page", "phone_page"])
def test_replacing_the_card_from_the_account_page(request, viewport, live_server, customer):
    page = request.getfixturevalue(viewport)
    page.goto(live_server.url + links.account_path(customer))
    page.get_by_role("link", name="Replace this card").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Replace your card").is_visible()
    assert axe_findings(page) == []
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], "the page scrolls sideways"

    page.get_by_label("Name on card").fill("A. Payer")
    page.get_by_label("Card number").fill("5555 5555 5555 4444")
    page.get_by_label("Expiry date").fill("04/39")
    page.get_by_label("Security code").fill("123")
    page.get_by_role("button", name="Save this card").click()
    page.wait_for_load_state()
    # Not ticked: refused, and the page says where.
    assert page.get_by_role("alert").first.is_visible()
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Security code").fill("123")
    page.get_by_label("I agree: save this card and use it for auto-pay").check()
    shot(page, "replace-card")
    page.get_by_role("button", name="Save this card").click()
    page.wait_for_load_state()

    assert page.get_by_role("heading", name="Card saved for auto-pay").is_visible()
    assert axe_findings(page) == []
    shot(page, "card-saved")
    page.get_by_role("link", name="Go to your account").click()
    page.wait_for_load_state()
    assert "Visa •••• 4242" in page.text_content("#autopay")
    [card] = SavedPaymentMethod.objects.filter(customer=customer, active=True)
    assert card.source_setup is not None and card.covers_from is not None
