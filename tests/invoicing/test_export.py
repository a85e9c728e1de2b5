"""Export to Halo through the simulator over HTTP: created once with mapped client and items,
the PDF attached once, updates never duplicate, lost answers and lost ids recovered."""

import base64
from datetime import date

import pytest

from billing.invoicing.export import ExportError, export_invoice, export_invoices
from billing.invoicing.models import BillingRun, PortalInvoice
from billing.invoicing.pdfs import resolve_pdf
from billing.models import Invoice
from integrations.billing_sync.models import OrganisationMapping, ProductMapping
from integrations.halo import HaloClient
from integrations.models import HaloConnection
from tests import factories
from tests.invoicing.conftest import pdf_text


def issue_october(tenant):
    run = BillingRun.objects.create(
        tenant=tenant, period_start=date(2026, 10, 1), period_end=date(2026, 10, 31)
    )
    run.build_drafts()
    return run.invoices.issue()


def live(sim, resource):
    return [r for r in sim.control.state(resource) if not r.get("_deleted")]


def halo_copies(sim, details):
    return [r for r in live(sim, "Invoice") if r.get("thirdpartyinvoicenumber") == details.number]


def attachments(sim, halo_id):
    return [r for r in live(sim, "Attachment") if r["type"] == 3 and r["unique_id"] == halo_id]


def fresh(details):
    return PortalInvoice.objects.select_related("invoice", "tenant", "organisation").get(
        pk=details.pk
    )


@pytest.fixture
def details(world):
    return fresh(issue_october(world)[0])


def test_export_creates_the_invoice_for_the_mapped_client_and_attaches_its_pdf(sim, details):
    assert export_invoices([details]) == {"created": 1, "attached": 1}
    details = fresh(details)
    invoice = details.invoice
    [halo] = halo_copies(sim, details)

    mapping = OrganisationMapping.objects.get(organisation=details.organisation)
    assert halo["client_id"] == mapping.halo_client.halo_id
    assert halo["id"] == invoice.halo_id and halo["invoicenumber"] == details.number
    assert round(halo["total"], 2) == float(invoice.total)
    items = {
        m.product.sku: m.halo_item.halo_id
        for m in ProductMapping.objects.filter(tenant=details.tenant).select_related(
            "product", "halo_item"
        )
    }
    lines = list(invoice.lines.all())
    # As Halo answers it: each line's linked_item is the Item object, not an id.
    answered = sim.session().get(
        f"{sim.api_url}/Invoice/{invoice.halo_id}", params={"includedetails": "true"}, timeout=10
    )
    answered_lines = answered.json()["lines"]
    assert all(isinstance(x["linked_item"], dict) for x in answered_lines)
    assert [(x["item_code"], x["linked_item"]["id"], x["qty_order"]) for x in answered_lines] == [
        (line.code, items[line.code], float(line.quantity)) for line in lines
    ]
    assert [line.halo_id for line in lines] == [x["id"] for x in answered_lines]
    # The export is recorded, with the item ids Halo linked, and the currency sent as id.
    assert details.exported_at is not None and details.export_error == ""
    assert [line.item_halo_id for line in lines] == [items[line.code] for line in lines]
    gbp = next(c["id"] for c in live(sim, "Currency") if c["code"] == "GBP")
    assert halo["currency_code"] == gbp and halo["currency"] == "£"

    [attachment] = attachments(sim, invoice.halo_id)
    version = invoice.pdf_versions.get()
    assert attachment["filename"] == f"Invoice {details.number}.pdf"
    assert base64.b64decode(attachment["data_base64"]) == bytes(version.content)
    assert details.attached_pdf == version and details.halo_attachment_id == attachment["id"]
    assert details.exported_at and not details.export_error
    assert version.deliveries.get().channel == "export"


def test_exporting_again_updates_and_never_duplicates(sim, details):
    export_invoices([details])
    sim.control.clear_requests()
    assert export_invoices([fresh(details)]) == {"updated": 1}
    assert len(halo_copies(sim, details)) == 1
    assert len(attachments(sim, fresh(details).invoice.halo_id)) == 1
    assert sim.control.requests()["by_endpoint"] == {"POST /Invoice": 1}


def test_a_lost_answer_to_the_create_is_found_not_repeated(sim, details):
    sim.control.add_fault(kind="drop_after", path="Invoice", method="POST", times=1)
    assert export_invoices([details])["created"] == 1
    [halo] = halo_copies(sim, details)
    assert fresh(details).invoice.halo_id == halo["id"]


def test_an_export_that_died_before_storing_the_id_is_adopted(sim, details):
    export_invoices([details])
    halo_id = fresh(details).invoice.halo_id
    # The worker died after Halo created the invoice and the attachment, before saving.
    Invoice.objects.filter(pk=details.invoice_id).update(halo_id=None)
    details.invoice.lines.update(halo_id=None)
    PortalInvoice.objects.filter(pk=details.pk).update(
        halo_attachment_id=None, attached_pdf=None, exported_at=None
    )
    assert export_invoices([fresh(details)]) == {"updated": 1}
    assert [r["id"] for r in halo_copies(sim, details)] == [halo_id]
    assert len(halo_copies(sim, details)[0]["lines"]) == details.invoice.lines.count()
    assert len(attachments(sim, halo_id)) == 1  # found by its name, not uploaded again
    assert fresh(details).invoice.halo_id == halo_id


def test_a_lost_answer_to_the_upload_is_not_uploaded_twice(sim, details):
    sim.control.add_fault(kind="drop_after", path="Attachment", method="POST", times=1)
    assert export_invoices([details]) == {"created": 1, "attached": 1}
    assert len(attachments(sim, fresh(details).invoice.halo_id)) == 1


def test_without_the_attach_setting_no_pdf_is_uploaded(sim, details):
    factories.invoicing_settings(details.tenant, attach_pdf_on_export=False)
    assert export_invoices([details]) == {"created": 1}
    assert attachments(sim, fresh(details).invoice.halo_id) == []


def test_a_credited_invoice_is_voided_in_halo_and_its_new_pdf_replaces_the_old(sim, details):
    export_invoices([details])
    note = details.credit()
    assert export_invoices([fresh(details)]) == {"updated": 1, "attached": 1}
    [halo] = halo_copies(sim, details)
    assert halo["voided"] is True
    [attachment] = attachments(sim, halo["id"])  # v1 removed, v2 ("Credited by") attached
    assert attachment["filename"] == f"Invoice {details.number} v2.pdf"
    assert "Credited by" in pdf_text(base64.b64decode(attachment["data_base64"]))
    exportable = PortalInvoice.objects.exportable()
    assert exportable.filter(pk=details.pk).exists()
    assert not exportable.filter(pk=note.pk).exists()
    with pytest.raises(ExportError, match="negative"):
        export_invoice(fresh(note), None)


def test_unmapped_organisations_and_products_are_reported_not_exported(sim, details):
    OrganisationMapping.objects.filter(organisation=details.organisation).delete()
    assert export_invoices([details]) == {"failed": 1}
    assert "Map " in fresh(details).export_error and halo_copies(sim, details) == []

    other = fresh(PortalInvoice.objects.exclude(pk=details.pk).issued().first())
    ProductMapping.objects.filter(tenant=other.tenant).delete()
    connection = HaloConnection.objects.for_feature(other.tenant, "invoice_sync")
    with pytest.raises(ExportError, match="Halo items"):
        export_invoice(other, HaloClient(connection))


def test_drafts_are_not_exported(world):
    draft = factories.portal_invoice(world, issue=False)
    with pytest.raises(ExportError, match="draft"):
        export_invoice(draft, None)


def test_the_attached_pdf_is_what_the_api_serves(sim, details):
    export_invoices([details])
    served = resolve_pdf(fresh(details).invoice, "api")
    [attachment] = attachments(sim, fresh(details).invoice.halo_id)
    assert base64.b64decode(attachment["data_base64"]) == served.content
