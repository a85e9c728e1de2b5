"""`GET /api/v1/invoices/<ref>/pdf`: the PDF secret, refs, caching headers, tenant isolation,
rate limit and the OpenAPI schema."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.http import http_date

from billing.invoicing import api, pdfs
from billing.invoicing.models import InvoicingSettings, PdfServed
from billing.models import Invoice, InvoiceNumberField
from portal.models import ApiToken
from tests import factories
from tests.invoicing.conftest import branded_tenant, halo_invoice, pdf_secret, pdf_text


def get(ref, secret=None, **headers):
    if secret:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return Client().get(f"/api/v1/invoices/{ref}/pdf", **headers)


@pytest.fixture
def secret(tenant):
    return pdf_secret(tenant)


def test_serves_the_portal_pdf_with_its_name_etag_and_source(tenant, secret):
    details = factories.portal_invoice(tenant)
    response = get("INV-000001", secret)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'inline; filename="Invoice INV-000001.pdf"'
    version = details.invoice.pdf_versions.get()
    assert response["ETag"] == f'"{version.sha256}"'
    assert response["Last-Modified"] == http_date(version.created.timestamp())
    assert response["X-Invoice-PDF-Source"] == "portal"
    assert response["X-Invoice-PDF-Version"] == "1"
    assert "Cache-Control" in response and "private" in response["Cache-Control"]
    assert bytes(version.content) == response.content
    assert "INV-000001" in pdf_text(response.content)
    assert PdfServed.objects.get().channel == PdfServed.Channel.API


def test_halo_invoices_are_found_by_halo_id_or_number(tenant, secret):
    invoice = halo_invoice(tenant, halo_id=4021, third_party_number="AC-0042")
    for ref in ("4021", "AC-0042"):
        response = get(ref, secret)
        assert response.status_code == 200, ref
        assert response["Content-Disposition"] == 'inline; filename="Invoice 4021.pdf"'
    factories.invoice_sync_settings(tenant, number_field=InvoiceNumberField.THIRD_PARTY)
    assert get("4021", secret).status_code == 200  # the other reading when the first finds none
    assert "AC-0042" in get("AC-0042", secret)["Content-Disposition"]
    assert invoice.pdf_versions.count() == 2  # the number printed changed with the setting


def test_the_tenant_setting_decides_which_reading_wins(tenant, secret):
    by_id = halo_invoice(tenant, halo_id=1001, third_party_number="X-1")
    by_number = halo_invoice(tenant, halo_id=2002, third_party_number="1001")
    assert get("1001", secret)["Content-Disposition"].endswith('"Invoice 1001.pdf"')
    assert by_id.pdf_versions.exists() and not by_number.pdf_versions.exists()
    factories.invoice_sync_settings(tenant, number_field=InvoiceNumberField.THIRD_PARTY)
    assert get("1001", secret).status_code == 200
    assert by_number.pdf_versions.exists()


def test_an_ambiguous_number_names_no_invoice(tenant, secret):
    halo_invoice(tenant, third_party_number="DUP-1")
    halo_invoice(tenant, third_party_number="DUP-1")
    assert get("DUP-1", secret).status_code == 404


@pytest.mark.parametrize("ref", ["NOPE-1", "999999", "99999999999999999999999", "١٢٣", "%20"])
def test_unknown_refs_are_404(tenant, secret, ref):
    halo_invoice(tenant, halo_id=123)
    response = get(ref, secret)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_another_tenants_invoice_is_404_whatever_the_ref(tenant, secret):
    other = branded_tenant("bravo")
    theirs = factories.portal_invoice(other)
    halo_invoice(other, halo_id=777, third_party_number="B-777")
    for ref in (theirs.number, "777", "B-777", str(theirs.invoice.pk)):
        assert get(ref, secret).status_code == 404, ref
    ours = factories.portal_invoice(tenant)  # the same number in our tenant: ours is served
    response = get("INV-000001", secret)
    assert response.status_code == 200
    assert ours.organisation.name in pdf_text(response.content)
    assert theirs.organisation.name not in pdf_text(response.content)
    assert not theirs.invoice.pdf_versions.exists()


def test_if_none_match_and_if_modified_since_answer_304_until_the_invoice_changes(tenant, secret):
    invoice = halo_invoice(tenant, halo_id=55)
    first = get("55", secret)
    etag = first["ETag"]
    assert get("55", secret, HTTP_IF_NONE_MATCH=etag).status_code == 304
    not_modified = get("55", secret, HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
    assert not_modified.status_code == 304 and not_modified["ETag"] == etag
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid=5, amount_due=11.20)
    changed = get("55", secret, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer hpp_pdf_not-a-real-secret", "usage-token"],
)
def test_requests_without_a_valid_pdf_secret_are_401(tenant, header):
    factories.portal_invoice(tenant)
    if header == "usage-token":
        header = "Bearer " + ApiToken.issue(tenant, ApiToken.Purpose.USAGE, "rmm")[1]
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = get("INV-000001", HTTP_ACCEPT="application/pdf", **headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"error", "detail"}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_and_expired_secrets_are_401_and_rotation_overlaps(tenant):
    factories.portal_invoice(tenant)
    token, old = ApiToken.issue(tenant, ApiToken.Purpose.PDF, "Halo")
    _, new = token.rotate(overlap=timedelta(hours=1))
    assert get("INV-000001", old).status_code == 200
    assert get("INV-000001", new).status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now())
    assert get("INV-000001", old).status_code == 401
    ApiToken.objects.filter(tenant=tenant).update(revoked=True)
    assert get("INV-000001", new).status_code == 401


def test_each_secret_is_rate_limited(tenant, secret, settings, monkeypatch):
    settings.INVOICE_PDF_RATE = "3/min"
    # Within one window of the fixed-window limit, whenever the test runs.
    monkeypatch.setattr(api.PdfThrottle, "timer", staticmethod(lambda: 600.0))
    factories.portal_invoice(tenant)
    assert [get("INV-000001", secret).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = get("INV-000001", secret)
    assert limited.json()["error"] == "throttled" and "Retry-After" in limited
    assert get("INV-000001", pdf_secret(tenant)).status_code == 200  # another secret


def test_no_pdf_at_all_is_503(tenant, secret, monkeypatch):
    def broken(doc):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(pdfs, "render_invoice_pdf", broken)
    factories.portal_invoice(tenant)
    response = get("INV-000001", secret)
    assert response.status_code == 503
    assert "renderer crashed" in response.json()["detail"]


def test_a_stored_pdf_is_served_without_building_it_again(
    tenant, secret, django_assert_max_num_queries, settings, monkeypatch
):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    factories.portal_invoice(tenant)
    first = get("INV-000001", secret)  # renders and stores v1, stamps the secret's last use

    def unused(*args):
        raise AssertionError("the document was built again")

    monkeypatch.setattr(pdfs, "build_document", unused)
    monkeypatch.setattr(pdfs, "document_key", unused)
    # the secret, the ref's invoice id, the fingerprint (invoice and lines), the bytes
    with django_assert_max_num_queries(5):
        again = get("INV-000001", secret)
    assert again.status_code == 200 and again.content == first.content
    assert again["ETag"] == first["ETag"] and again["Last-Modified"] == first["Last-Modified"]
    assert again["X-Invoice-PDF-Version"] == "1"


def _pay_link_on(details):
    details.tenant.invoicing_settings.pay_link_in_pdf = True
    details.tenant.invoicing_settings.save()
    Invoice.objects.filter(pk=details.invoice_id).update(pay_link_url="https://pay.example/x")


CHANGES = {
    # what changes -> (how, text the new PDF shows)
    "invoice": (lambda d: Invoice.objects.filter(pk=d.invoice_id).update(amount_paid=7), "7.00"),
    "line": (lambda d: d.invoice.lines.update(description="Renamed service"), "Renamed service"),
    "organisation": (
        lambda d: type(d.organisation).objects.filter(pk=d.organisation_id).update(name="Zeta"),
        "Zeta",
    ),
    "tenant": (
        lambda d: type(d.tenant).objects.filter(pk=d.tenant_id).update(display_name="Omega"),
        "Omega",
    ),
    "invoicing settings": (_pay_link_on, "pay.example"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_the_pdf_shows_is_served_at_once(tenant, secret, change):
    details = factories.portal_invoice(tenant)
    InvoicingSettings.for_tenant(tenant)
    first = get("INV-000001", secret)
    assert get("INV-000001", secret).content == first.content  # remembered
    how, shown = CHANGES[change]
    how(details)

    after = get("INV-000001", secret)

    assert after["X-Invoice-PDF-Version"] == "2"
    assert shown in pdf_text(after.content) and shown not in pdf_text(first.content)


def test_the_endpoint_is_in_the_openapi_schema(db):
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/invoices/{ref}/pdf"]["get"]
    assert operation["operationId"] == "invoice_pdf"
    assert "application/pdf" in operation["responses"]["200"]["content"]
    assert {"401", "404", "429", "304"} <= set(operation["responses"])
    assert operation["security"] == [{"pdfSecret": []}]
    assert schema["components"]["securitySchemes"]["pdfSecret"]["scheme"] == "bearer"


def test_an_invoice_deleted_while_being_served_is_404(tenant, secret, monkeypatch):
    details = factories.portal_invoice(tenant)
    found = api.find_invoice_id(tenant, "INV-000001")
    assert found == details.invoice_id
    monkeypatch.setattr(api, "find_invoice_id", lambda tenant, ref: found + 1000)
    response = get("INV-000001", secret)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
