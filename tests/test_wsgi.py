"""The PDF API, pay pages and the Halo webhook through a real WSGI server that validates
what the portal answers (wsgiref's validator), not only Django's test client."""

import json

import requests

from billing.payments.models import PayPage
from tests import factories
from tests.invoice_sync.test_webhooks import basic, credentials, delivery, invoice_record
from tests.invoicing.conftest import branded_tenant, pdf_secret
from tests.payments.conftest import open_invoice


def test_the_pdf_api_answers_every_repeat_request(validated_server):
    """Halo fetches the same PDF again and again: the remembered copy must be served with
    plain-text headers too (a TextChoices header value made every repeat a 500)."""
    tenant = branded_tenant("alpha")
    factories.portal_invoice(tenant)
    secret = pdf_secret(tenant)
    url = f"{validated_server}/api/v1/invoices/INV-000001/pdf"
    headers = {"Authorization": f"Bearer {secret}"}
    answers = [requests.get(url, headers=headers, timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["X-Invoice-PDF-Source"] for a in answers} == {"portal"}
    assert all(a.content.startswith(b"%PDF") for a in answers)
    again = requests.get(url, headers={**headers, "If-None-Match": answers[0].headers["ETag"]})
    assert again.status_code == 304


def test_the_pay_page_and_its_link_answer(validated_server):
    tenant = factories.tenant("acme")
    invoice = open_invoice(tenant, amount="240.00")
    page = requests.get(validated_server + PayPage.for_invoice(invoice).get_absolute_url())
    assert page.status_code == 200 and "240.00" in page.text


def test_the_halo_webhook_answers(validated_server):
    tenant = factories.tenant("alpha")
    url = f"{validated_server}/api/v1/halo/webhook/{tenant.slug}"
    body = json.dumps(delivery(invoice_record()))
    refused = requests.post(url, data=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 401
    accepted = requests.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": basic(*credentials(tenant))},
        timeout=30,
    )
    assert accepted.status_code in (200, 202), accepted.text
