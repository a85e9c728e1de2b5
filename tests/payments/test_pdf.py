"""The pay page's PDF, through the invoicing app's one resolver: the tenant's choice of
source, the fallback, view and download, and the same isolation as the page."""

import pytest

from billing.invoicing.models import PdfServed
from tests import factories
from tests.payments.conftest import open_invoice, pay_url, settings_for


def pdf_url(invoice):
    return f"{pay_url(invoice)}/pdf"


def test_pay_page_links_to_view_and_download_the_pdf(client, tenant):
    invoice = open_invoice(tenant)
    body = client.get(pay_url(invoice)).content.decode()
    assert f'href="{pdf_url(invoice)}"' in body and f'href="{pdf_url(invoice)}?download=1"' in body


def test_pdf_inline_and_as_download(client, tenant):
    invoice = open_invoice(tenant)

    inline = client.get(pdf_url(invoice))

    assert inline.status_code == 200 and inline["Content-Type"] == "application/pdf"
    assert inline.content.startswith(b"%PDF-")
    assert inline["Content-Disposition"].startswith("inline;")
    assert invoice.display_number() in inline["Content-Disposition"]
    assert "Content-Security-Policy" not in inline  # it would stop the browser's viewer
    assert inline["Referrer-Policy"] == "same-origin"
    download = client.get(f"{pdf_url(invoice)}?download=1")
    assert download["Content-Disposition"].startswith("attachment;")
    assert download.content == inline.content
    again = client.get(pdf_url(invoice), HTTP_IF_NONE_MATCH=inline["ETag"])
    assert again.status_code == 304 and not again.content
    assert PdfServed.objects.filter(channel="pay_page", version__source="portal").exists()


def test_halo_pdf_preferred_falls_back_to_the_portals(client, tenant):
    settings_for(tenant, use_halo_pdf=True, pdf_fallback=True)
    invoice = open_invoice(tenant)  # no Halo connection: Halo cannot give its PDF
    response = client.get(pdf_url(invoice))
    assert response.status_code == 200 and response.content.startswith(b"%PDF-")
    served = PdfServed.objects.get(channel="pay_page")
    assert served.version.source == "portal" and served.fallback_reason


def test_without_fallback_an_unavailable_pdf_is_a_friendly_page(client, tenant):
    settings_for(tenant, use_halo_pdf=True, pdf_fallback=False)
    invoice = open_invoice(tenant)
    response = client.get(pdf_url(invoice))
    assert response.status_code == 503
    body = response.content.decode()
    assert "The PDF is not available right now" in body and pay_url(invoice) in body


@pytest.mark.parametrize("case", ["other-tenant", "deleted", "portal-draft"])
def test_pdf_is_not_served_outside_its_page(client, tenant, case):
    invoice = open_invoice(tenant)
    url = pdf_url(invoice)
    if case == "other-tenant":
        url = url.replace(f"/pay/{tenant.slug}/", f"/pay/{factories.tenant('bravo').slug}/")
    elif case == "deleted":
        invoice.deleted_in_halo = True
        invoice.save()
    else:
        invoice.source, invoice.posted = "portal", False
        invoice.save()
    assert client.get(url).status_code == 404
