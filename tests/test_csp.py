"""Content-Security-Policy: django-csp's policy on admin pages and the API docs, the pay
pages' own stricter one left in place, none on PDFs; templates keep to it."""

import re
from pathlib import Path

from django.urls import reverse

from billing.payments.models import PayPage
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


def directives(response):
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_admin_pages_allow_scripts_from_the_portal_only(personas):
    for response in (
        personas.client(personas.owner_a).get(reverse("admin:index")),
        personas.client(personas.owner_a).get(reverse("admin:portal_organisation_add")),
        personas.client(personas.owner_a).get(reverse("admin:login")),
    ):
        policy = directives(response)
        assert policy["script-src"] == ["'self'"]
        assert policy["default-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert policy["form-action"] == ["'self'"]


def test_pay_pages_keep_their_own_stricter_policy(personas):
    page = factories.make(PayPage, personas.tenant_a)
    response = personas.client(personas.owner_b).get(page.get_absolute_url())
    assert response.status_code == 200
    policy = directives(response)
    assert policy["default-src"] == ["'none'"]
    assert "https://checkout.stripe.com" in policy["form-action"]
    assert "script-src" not in policy  # server-rendered, no JavaScript (Stripe's included)


def test_pdfs_carry_no_policy(personas):
    """Browsers' PDF viewers stop under a strict policy; the admin frames the PDF."""
    details = factories.portal_invoice(personas.tenant_a)
    client = personas.client(personas.owner_a)
    admin_pdf = client.get(reverse("admin:invoicing_invoicepdf_pdf", args=[details.invoice_id]))
    assert admin_pdf["Content-Type"] == "application/pdf"
    assert "Content-Security-Policy" not in admin_pdf
    page = PayPage.for_invoice(details.invoice)
    customer_pdf = client.get(reverse("payments:pdf", args=[personas.tenant_a.slug, page.token]))
    assert customer_pdf["Content-Type"] == "application/pdf"
    assert "Content-Security-Policy" not in customer_pdf


def test_api_docs_load_redoc_from_the_portal(client):
    response = client.get(reverse("api-docs"))
    assert response.status_code == 200
    assert directives(response)["script-src"] == ["'self'"]
    html = response.content.decode()
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/static/") for source in sources), sources
    assert "<script>" not in html


def test_templates_use_no_inline_script():
    """Inline <script> blocks and on...= handlers would need 'unsafe-inline': behaviour goes
    in static files (portal/static/portal/admin.js) and data- attributes."""
    handler = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
    inline = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.IGNORECASE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "templates").rglob("*.html"))
        if handler.search(path.read_text()) or inline.search(path.read_text())
    ]
    assert not offenders
