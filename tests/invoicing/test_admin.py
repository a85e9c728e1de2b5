"""The invoicing admin: billing runs, the draft-to-issue workflow, export and credit actions,
every invoice's PDF page (preview, versions, served log, regenerate), settings, health, demo."""

from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.urls import reverse

from billing.invoicing import pdfs
from billing.invoicing.models import BillingRun, OneOffCharge, PdfServed, PortalInvoice
from billing.invoicing.pdfs import resolve_pdf
from billing.models import Invoice
from integrations.billing_sync.models import UsageSubmission
from portal.health import tenant_health
from portal.models import ApiToken, Tenant
from tests import factories
from tests.invoicing.conftest import halo_invoice, pdf_secret, pdf_text


@pytest.fixture
def owner(personas):
    return personas.client(personas.owner_a)


@pytest.fixture
def viewer(personas):
    return personas.client(personas.viewer_a)


@pytest.fixture
def usage(personas):
    tenant = personas.tenant_a
    factories.invoicing_settings(tenant, tax_rate=Decimal(20), tax_label="VAT")
    product = factories.product(tenant, name="Endpoint Protection", unit_price=Decimal("4.50"))
    rows = [(factories.organisation(tenant, name=n), product, 5) for n in ("Alpha", "Bravo")]
    UsageSubmission.objects.record(tenant, rows, source=UsageSubmission.Source.ADMIN)
    return tenant


def url(name, *args):
    return reverse(f"admin:invoicing_{name}", args=args)


def act(client, model, action, ids):
    """Run an action on the list, confirming when it asks first (export, credit)."""
    data = {"action": action, "_selected_action": ids, "confirm": "yes"}
    return client.post(url(f"{model}_changelist"), data, follow=True)


def messages(response):
    return [str(m) for m in response.context["messages"]]


def test_adding_a_billing_run_builds_the_drafts_and_issuing_numbers_them(
    owner, usage, queued, django_capture_on_commit_callbacks
):
    response = owner.post(
        url("billingrun_add"), {"period_start": "2026-10-01", "period_end": "2026-10-31"}
    )
    assert response.status_code == 302
    run = BillingRun.objects.get(tenant=usage)
    drafts = list(run.invoices.order_by("organisation__name"))
    assert [d.status for d in drafts] == ["draft", "draft"]

    page = owner.get(url("portalinvoice_change", drafts[0].pk)).content.decode()
    assert "Endpoint Protection" in page and "Preview the draft" in page
    preview = owner.get(url("portalinvoice_preview", drafts[0].pk))
    assert preview["Content-Type"] == "application/pdf"
    assert "Draft – not issued" in pdf_text(preview.content)
    assert not Invoice.objects.get(pk=drafts[0].invoice_id).pdf_versions.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = act(owner, "portalinvoice", "issue_selected", [d.pk for d in drafts])
    assert "Issued 2 invoices: INV-000001, INV-000002." in messages(response)
    assert queued == [
        ("billing.invoicing.tasks.render_pdfs", [drafts[0].invoice_id, drafts[1].invoice_id])
    ]
    assert owner.get(url("portalinvoice_preview", drafts[0].pk)).status_code == 302


def test_overlapping_run_is_a_form_error(owner, usage):
    factories.billing_run(usage, period_start=date(2026, 10, 1), period_end=date(2026, 10, 31))
    response = owner.post(
        url("billingrun_add"), {"period_start": "2026-10-15", "period_end": "2026-11-14"}
    )
    assert response.status_code == 200 and "billed twice" in response.content.decode()


def test_export_action_queues_issued_invoices_only(
    owner, personas, queued, django_capture_on_commit_callbacks
):
    issued = factories.portal_invoice(personas.tenant_a)
    draft = factories.portal_invoice(personas.tenant_a, issue=False)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(owner, "portalinvoice", "export_to_halo", [issued.pk, draft.pk])
    assert queued == [("billing.invoicing.tasks.export_to_halo", [issued.pk])]
    assert "1 skipped" in messages(response)[0]


def test_credit_action_issues_a_credit_note(owner, personas, queued):
    issued = factories.portal_invoice(personas.tenant_a)
    response = act(owner, "portalinvoice", "credit", [issued.pk])
    note = PortalInvoice.objects.get(credit_note_of=issued)
    assert response.redirect_chain[-1][0] == url("portalinvoice_change", note.pk)
    assert f"Issued {note} for {issued}." in messages(response)


def test_only_drafts_are_deleted_and_their_charges_become_pending(owner, personas):
    tenant = personas.tenant_a
    charge = factories.one_off_charge(tenant)
    run = factories.billing_run(tenant)
    run.build_drafts()
    draft = run.invoices.get()
    issued = factories.portal_invoice(tenant)
    act(owner, "portalinvoice", "delete_drafts", [draft.pk, issued.pk])
    assert list(PortalInvoice.objects.all()) == [issued]
    assert OneOffCharge.objects.get(pk=charge.pk).invoice is None


def test_a_new_charge_joins_the_open_draft(owner, usage):
    run = factories.billing_run(usage)
    run.build_drafts()
    draft = run.invoices.get(organisation__name="Alpha")
    response = owner.post(
        url("oneoffcharge_add"),
        {
            "organisation": draft.organisation_id,
            "description": "Firewall appliance",
            "quantity": "1",
            "unit_price": "349.00",
        },
        follow=True,
    )
    assert any("rebuilt" in m for m in messages(response))
    assert draft.invoice.lines.filter(description="Firewall appliance").exists()


def test_the_invoice_pdf_page_previews_lists_versions_and_deliveries(owner, personas):
    invoice = halo_invoice(personas.tenant_a)
    resolve_pdf(invoice, "api")
    page = owner.get(url("invoicepdf_change", invoice.pk)).content.decode()
    assert "v1" in page and "PDF API (Halo)" in page and "<iframe" in page
    assert "Regenerate" in page

    pdf = owner.get(url("invoicepdf_pdf", invoice.pk))
    assert pdf["Content-Type"] == "application/pdf" and pdf["X-Invoice-PDF-Source"] == "portal"
    assert pdf["X-Frame-Options"] == "SAMEORIGIN"
    assert PdfServed.objects.filter(channel="admin").exists()
    version = owner.get(url("invoicepdf_version", invoice.pk, 1))
    assert version.content == bytes(invoice.pdf_versions.get().content)
    assert owner.get(url("invoicepdf_version", invoice.pk, 9)).status_code == 404


def test_regenerate_renders_again_and_says_whether_anything_changed(owner, personas, monkeypatch):
    invoice = halo_invoice(personas.tenant_a)
    response = owner.post(url("invoicepdf_regenerate", invoice.pk), follow=True)
    assert "Rendered v1" in messages(response)[0]
    response = owner.post(url("invoicepdf_regenerate", invoice.pk), follow=True)
    assert "identical to v1" in messages(response)[0]

    monkeypatch.setattr(pdfs, "render_invoice_pdf", lambda doc: 1 / 0)
    response = owner.post(url("invoicepdf_regenerate", invoice.pk), follow=True)
    assert "Rendering failed" in messages(response)[0]


def test_viewers_and_other_tenants_cannot_regenerate(viewer, personas):
    invoice = halo_invoice(personas.tenant_a)
    assert viewer.post(url("invoicepdf_regenerate", invoice.pk)).status_code == 403
    assert "Regenerate" not in viewer.get(url("invoicepdf_change", invoice.pk)).content.decode()
    other = personas.client(personas.owner_b)
    assert other.post(url("invoicepdf_regenerate", invoice.pk)).status_code == 404
    assert other.get(url("invoicepdf_pdf", invoice.pk)).status_code == 404
    assert not invoice.pdf_versions.exists()


def test_settings_page_shows_what_to_paste_into_halo(owner, personas, settings):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    response = owner.get(url("invoicingsettings_changelist"), follow=True)
    assert response.status_code == 200
    settings_row = personas.tenant_a.invoicing_settings
    page = owner.get(url("invoicingsettings_change", settings_row.pk)).content.decode()
    assert "https://portal.example.com/api/v1/invoices/$INVOICEID/pdf" in page
    assert "some email filters" in page.lower()


def test_the_served_log_filters_fallbacks(owner, personas):
    invoice = halo_invoice(personas.tenant_a)
    version = resolve_pdf(invoice, "api").version
    PdfServed.record(version, "pay_page", "Portal (rendered): rendering failed (boom)")
    response = owner.get(url("pdfserved_changelist") + "?fallback=yes")
    [row] = response.context["cl"].result_list
    assert row.channel == "pay_page" and "rendering failed (boom)" in response.content.decode()


def health(tenant, label):
    return [row for row in tenant_health(tenant) if row.label == label]


def test_health_rows(personas):
    tenant = personas.tenant_a
    assert health(tenant, "Portal invoices") == []
    [row] = health(tenant, "Invoice PDFs")
    assert row.status == "idle" and "?purpose=pdf" in row.url
    pdf_secret(tenant)
    assert health(tenant, "Invoice PDFs")[0].status == "ok"

    draft = factories.portal_invoice(tenant, issue=False)
    assert health(tenant, "Portal invoices")[0].text == "1 draft to review and issue"
    PortalInvoice.objects.filter(pk=draft.pk).issue()
    assert health(tenant, "Portal invoices")[0].text == "1 issued, 0 in Halo"
    PortalInvoice.objects.filter(pk=draft.pk).update(export_error="No mapping")
    assert health(tenant, "Portal invoices")[0].status == "error"

    version = resolve_pdf(halo_invoice(tenant), "api").version
    PdfServed.record(version, "pay_page", "Portal (rendered): rendering failed (boom)")
    [row] = health(tenant, "Invoice PDFs")
    assert row.status == "warn" and "?fallback=yes" in row.url


def test_demo_bills_last_month_leaves_a_draft_and_prints_a_pdf_secret(db, capsys):
    call_command("demo")
    out = capsys.readouterr().out
    tenant = Tenant.objects.get(slug="acme")
    invoices = PortalInvoice.objects.filter(tenant=tenant)
    assert invoices.drafts().count() == 1 and invoices.issued().count() >= 5
    assert "Invoice PDF API secret (shown once): hpp_pdf_" in out
    call_command("demo")
    assert "Invoice PDF API secret" not in capsys.readouterr().out
    assert PortalInvoice.objects.filter(tenant=tenant).count() == invoices.count()
    assert ApiToken.objects.filter(tenant=tenant, purpose="pdf").count() == 1
    charge = OneOffCharge.objects.get(tenant=tenant)
    assert charge.invoice.portal.number == "INV-000001"  # first organisation alphabetically


def test_list_filters_offer_only_the_tenants_own_runs(owner, personas):
    factories.billing_run(personas.tenant_b, period_start=date(2019, 3, 1))
    ours = factories.billing_run(personas.tenant_a, period_start=date(2026, 1, 1))
    factories.portal_invoice(personas.tenant_a, run=ours)
    page = owner.get(url("portalinvoice_changelist")).content.decode()
    assert "01 Jan 2026" in page and "01 Mar 2019" not in page
