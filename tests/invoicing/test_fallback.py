"""The resolver's two sources and its fallback, with Halo's PDF fetched from the simulator."""

import pytest
from django.core.cache import cache
from django.test import Client

from billing.invoicing import pdfs
from billing.invoicing.models import PdfServed
from billing.invoicing.pdfs import PdfUnavailable, resolve_pdf
from integrations.halo import HaloClient
from tests import factories
from tests.halo.conftest import make_connection
from tests.invoicing.conftest import branded_tenant, halo_invoice, pdf_secret

HALO_PDF = b"%PDF-1.7\n% Halo's own invoice PDF\n%%EOF\n"


@pytest.fixture
def synced(db, sim):
    """A tenant connected to the simulator and one of its invoices, synced, with a PDF
    attached in Halo (as Halo's own PDF template would)."""
    tenant = branded_tenant("alpha")
    connection = make_connection(sim, tenant)
    halo_id = sim.control.state("Invoice")[0]["id"]
    invoice = halo_invoice(tenant, halo_id=halo_id)
    client = HaloClient(connection)
    client.create_attachment("old.pdf", b"%PDF-1.4 superseded", 3, halo_id)
    client.create_attachment(f"Invoice {halo_id}.pdf", HALO_PDF, 3, halo_id)
    client.create_attachment("notes.txt", b"not a pdf", 3, halo_id)
    sim.control.clear_requests()
    return invoice


@pytest.fixture
def broken_renderer(monkeypatch):
    def broken(doc):
        raise ValueError("a font glyph went missing")

    monkeypatch.setattr(pdfs, "render_invoice_pdf", broken)


def halo_calls(sim):
    return sim.control.requests()["by_endpoint"]


def test_a_rendering_error_falls_back_to_halos_pdf(synced, broken_renderer):
    resolved = resolve_pdf(synced, "pay_page")
    assert resolved.source == "halo" and resolved.content == HALO_PDF
    assert "rendering failed (ValueError: a font glyph went missing)" in resolved.fallback_reason
    served = PdfServed.objects.get()
    assert served.channel == "pay_page" and "font glyph" in served.fallback_reason
    assert served.version.source == "halo" and served.version.halo_attachment_id


def test_the_api_says_which_source_it_served(synced, broken_renderer):
    response = Client().get(
        f"/api/v1/invoices/{synced.halo_id}/pdf",
        HTTP_AUTHORIZATION=f"Bearer {pdf_secret(synced.tenant)}",
    )
    assert response.status_code == 200 and response.content == HALO_PDF
    assert response["X-Invoice-PDF-Source"] == "halo"


def test_preferring_halo_uses_its_pdf_and_caches_it(synced, sim, settings):
    first = resolve_pdf(synced, "pay_page", prefer="halo")
    assert first.source == "halo" and first.content == HALO_PDF and not first.fallback_reason
    calls = halo_calls(sim)
    assert calls["GET /Attachment/{id}"] == 1
    sim.control.clear_requests()
    assert resolve_pdf(synced, "pay_page", prefer="halo").version == first.version
    assert halo_calls(sim) == {}  # fresh for INVOICE_PDF_HALO_TTL: Halo is not asked

    cache.clear()  # the TTL ran out: Halo is asked which PDF, the same one is not downloaded
    assert resolve_pdf(synced, "pay_page", prefer="halo").version == first.version
    assert "GET /Attachment/{id}" not in halo_calls(sim)


def test_halo_unreachable_falls_back_to_the_portal_render(synced, sim, settings):
    # Room for the retries to meet Halo's 500s on a loaded machine (the 1 s of the other
    # tests can be spent on the token alone), so the reason is the 500, not the budget.
    settings.INVOICE_PDF_HALO_BUDGET = 10
    sim.control.add_fault(kind="500", path="Invoice", method="GET", times=1000)
    resolved = resolve_pdf(synced, "pay_page", prefer="halo")
    sim.control.clear_faults()
    assert resolved.source == "portal" and resolved.version.number == 1
    assert "Halo (attached PDF):" in resolved.fallback_reason
    assert "500" in resolved.fallback_reason


def test_a_stale_halo_copy_beats_none_when_halo_is_down(synced, sim):
    cached = resolve_pdf(synced, "pay_page", prefer="halo").version
    cache.clear()
    sim.control.add_fault(kind="500", path="Invoice", method="GET", times=1000)
    resolved = resolve_pdf(synced, "pay_page", prefer="halo")
    sim.control.clear_faults()
    assert resolved.version == cached and "Served the copy fetched" in resolved.fallback_reason


def test_halos_pdf_attachment_id_wins_over_the_attachment_list(synced, sim):
    client = HaloClient(synced.tenant.halo_connections.get())
    attachment = client.create_attachment("template.pdf", b"%PDF-1.7 template", 3, synced.halo_id)
    earlier = min(a["id"] for a in sim.control.state("Attachment"))
    sim.control.records("Invoice", [{"id": synced.halo_id, "pdf_attachment_id": earlier}])
    assert resolve_pdf(synced, "admin", prefer="halo").content == b"%PDF-1.4 superseded"
    assert attachment["id"] != earlier


def test_no_source_at_all_raises_pdf_unavailable(tenant, broken_renderer):
    with pytest.raises(PdfUnavailable) as raised:
        resolve_pdf(halo_invoice(tenant), "api")
    assert "rendering failed" in str(raised.value) and "no active Halo connection" in str(
        raised.value
    )
    with pytest.raises(PdfUnavailable, match="not in Halo"):
        resolve_pdf(factories.portal_invoice(tenant).invoice, "api")


def test_without_fallback_only_the_preferred_source_is_tried(synced, broken_renderer):
    with pytest.raises(PdfUnavailable, match="rendering failed"):
        resolve_pdf(synced, "export", fallback=False)


def test_a_halo_invoice_without_any_pdf_is_unavailable_from_halo(synced, sim):
    empty = halo_invoice(synced.tenant, halo_id=sim.control.state("Invoice")[1]["id"])
    with pytest.raises(PdfUnavailable, match="no PDF attached"):
        resolve_pdf(empty, "api", prefer="halo", fallback=False)
