"""The pay page, the receipt (page and email) and the PDF of one Halo invoice show the same
figures: lines net of tax, the tax, the total (issue 15 bug 3: the pay page listed lines with
VAT under a net "Subtotal"). The invoice comes from the Halo simulator over HTTP and the
pages from a real WSGI server."""

import re
from html import unescape

import pytest
import requests

from billing.models import Invoice
from integrations.invoice_sync.runner import run_sync
from tests import factories
from tests.invoicing.conftest import pdf_text
from tests.payments.conftest import SUCCESS, connect, pay_url

pytestmark = pytest.mark.django_db(transaction=True)

LINES = [  # £351.00 + £70.20 VAT and £48.00 + £9.60 VAT: £399.00 net, £478.80 in all
    {"item_shortdescription": "Managed endpoints", "qty_order": 26, "unit_price": 13.5},
    {"item_shortdescription": "Cloud backup (TB)", "qty_order": 2.5, "unit_price": 19.2},
]


def text_of(html):
    """The page's text as read: tags dropped, white space collapsed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def form_fields(html):
    return dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))


@pytest.fixture
def halo_invoice(tenant, sim):
    connect(tenant, sim)
    factories.invoicing_settings(tenant, tax_label="VAT")
    client_id = sim.control.state("Client")[0]["id"]
    lines = [line | {"tax_rate": 20} for line in LINES]
    [record] = sim.control.records("Invoice", [{"client_id": client_id, "lines": lines}])
    run = run_sync(tenant, "initial", "cli")
    assert run.status == "succeeded", run.error
    return Invoice.objects.get(tenant=tenant, halo_id=record["id"])


def test_pay_page_receipt_and_pdf_show_the_same_net_lines_tax_and_total(
    validated_server, halo_invoice, mailoutbox, settings
):
    settings.CSRF_COOKIE_SECURE = False  # the test server speaks plain HTTP
    session = requests.Session()
    url = validated_server + pay_url(halo_invoice)
    reply = session.get(url, timeout=10)
    assert reply.status_code == 200
    page = text_of(reply.text)

    # Lines net, as the PDF lists them; quantities as written ("26", not "26.0000").
    assert "Managed endpoints 26 £351.00" in page
    assert "Cloud backup (TB) 2.5 £48.00" in page
    assert "Amounts exclude VAT." in page
    assert "Total before VAT £399.00 VAT £79.80 Total £478.80 Amount due £478.80" in page
    assert "£421.20" not in page and "£57.60" not in page  # no line with its VAT in it

    pdf = session.get(f"{url}/pdf", timeout=10)
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    printed = pdf_text(pdf.content)
    for figure in (
        "£351.00",
        "£48.00",
        "Total before VAT\n£399.00",
        "VAT at 20% on £399.00\n£79.80",
        "Total due\n£478.80",
    ):
        assert figure in printed, figure
    assert "£421.20" not in printed

    card = {
        "card_name": "A Payer",
        "card_number": SUCCESS,
        "card_expiry": "12/39",
        "card_cvc": "123",
        "email": "payer@example.com",
    }
    paid = session.post(url, form_fields(reply.text) | card, timeout=10)
    assert paid.status_code == 200 and "/payment/" in paid.url
    receipt = text_of(paid.text)
    assert "Payment received" in receipt
    assert "Invoice total £478.80 (including VAT £79.80)" in receipt
    [mail] = mailoutbox
    assert "Invoice total: £478.80 (including VAT £79.80)" in mail.body
    assert "£478.80 (including VAT £79.80)" in text_of(mail.alternatives[0][0])
