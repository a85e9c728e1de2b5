"""The payments job page (processor, pay links, outbox, auto-pay) with Add payment links
through the simulator; the Refund, Export to Halo and Credit buttons on object pages,
each asking first with the amount and the effect."""

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.invoicing.models import PortalInvoice
from billing.models import Invoice
from billing.payments.models import HaloOutbox, Payment, PaymentSettings
from tests import factories
from tests.invoice_sync.conftest import sync
from tests.payments.conftest import connect

PAGE = reverse("admin:job_payments")
ADD_LINKS = reverse("admin:job_payments_add_pay_links")


@pytest.fixture(autouse=True)
def _payments(settings, tasks_inline):
    settings.PAYMENTS_TEST_PROCESSOR = True
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 2


def texts(response):
    return [str(m) for m in response.context["messages"]]


def test_page_shows_processor_outbox_and_autopay(personas):
    tenant = personas.tenant_a
    factories.halo_outbox(tenant)  # a payment waiting for Halo
    failed = factories.halo_outbox(tenant, status=HaloOutbox.Status.FAILED, last_error="No")
    page = personas.client(personas.owner_a).get(PAGE)
    assert page.status_code == 200
    assert (
        page.context["processor"] == "Test processor (no real money)"
        or page.context["processor"] == PaymentSettings.for_tenant(tenant).get_processor_display()
    )
    assert "Test mode" in page.context["processor_status"]
    assert page.context["outbox"]["pending"] == 1 and page.context["outbox"]["failed"] == 1
    text = page.content.decode()
    assert page.context["outbox"]["failed_url"] in text
    assert reverse("admin:payments_paymentsettings_autopay_forecast") in text
    assert reverse("admin:invoicing_pdfserved_changelist") in text
    assert f"/pay/{tenant.slug}/" in page.context["pay_link"]
    assert failed.payment in [p for p, _ in page.context["payments"]]
    # Without a connection taking payments the button says why.
    assert "No active Halo connection" in page.context["no_connection"]
    assert page.context["buttons"][0].disabled == "Needs a Halo connection with Payments on."


@pytest.mark.django_db(transaction=True)
def test_add_payment_links_writes_them_into_halo(personas, sim):
    tenant = personas.tenant_a
    connect(tenant, sim)
    sync(tenant, "initial")
    unpaid = set(Invoice.objects.filter(tenant=tenant).unpaid().values_list("halo_id", flat=True))
    assert unpaid
    owner = personas.client(personas.owner_a)
    page = owner.get(PAGE)
    assert page.context["linked"] == 0 and page.context["unpaid"] == len(unpaid)
    assert not page.context["buttons"][0].disabled
    response = owner.post(ADD_LINKS, follow=True)
    assert response.redirect_chain[-1][0] == PAGE
    assert "Writing pay links into Halo" in texts(response)[0]
    in_halo = {
        i["id"]: i.get("generic_online_invoice_payment_url")
        for i in sim.control.state("Invoice")
        if i["id"] in unpaid
    }
    assert all(url.startswith("https://portal.example.com/pay/") for url in in_halo.values())
    assert owner.get(PAGE).context["linked"] == len(unpaid)


def test_viewer_and_other_tenant(personas):
    factories.halo_outbox(personas.tenant_a)
    viewer = personas.client(personas.viewer_a)
    page = viewer.get(PAGE)
    assert page.status_code == 200 and ADD_LINKS not in page.content.decode()
    assert viewer.post(ADD_LINKS).status_code == 403
    other = personas.client(personas.owner_b).get(PAGE)
    assert other.context["outbox"]["pending"] == 0 and other.context["payments"] == []


# -- Refund on the payment's page ---------------------------------------------------------


def refund_button(page):
    found = re.search(
        r'<form method="post" action="([^"]+)" class="object-action">(.*?)</form>',
        page.content.decode(),
        re.S,
    )
    assert found, "no action button on the page"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)"', found[2]))
    fields.pop("csrfmiddlewaretoken", None)
    return found[1], fields


def test_refund_button_asks_with_the_amount_then_refunds(personas):
    payment = factories.payment(
        personas.tenant_a, status="succeeded", amount=Decimal("84.50"), reference="test_ch_1"
    )
    owner = personas.client(personas.owner_a)
    change = reverse("admin:payments_payment_change", args=[payment.pk])
    page = owner.get(change)
    assert "Refund in full" in page.content.decode()
    url, fields = refund_button(page)
    assert fields == {
        "action": "refund",
        "_selected_action": str(payment.pk),
        "_back_to_object": str(payment.pk),
    }
    asked = owner.post(url, fields)
    assert asked.status_code == 200 and "84.50" in asked.content.decode()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED  # asked, not done
    done = owner.post(url, {**fields, "post": "yes"}, follow=True)
    assert any("refunded" in t for t in texts(done))
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REFUNDED


def test_viewer_gets_no_refund_button_and_cannot_refund(personas):
    payment = factories.payment(personas.tenant_a, status="succeeded", reference="test_ch_2")
    viewer = personas.client(personas.viewer_a)
    change = reverse("admin:payments_payment_change", args=[payment.pk])
    assert 'class="object-action"' not in viewer.get(change).content.decode()
    refused = viewer.post(
        reverse("admin:payments_payment_changelist"),
        {"action": "refund", "_selected_action": [payment.pk], "post": "yes"},
    )
    assert refused.status_code == 403
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED


def test_other_tenant_cannot_refund_by_the_button(personas):
    payment = factories.payment(personas.tenant_a, status="succeeded", reference="test_ch_3")
    outsider = personas.client(personas.owner_b)
    assert (
        outsider.get(reverse("admin:payments_payment_change", args=[payment.pk])).status_code == 404
    )
    outsider.post(
        reverse("admin:payments_payment_changelist"),
        {"action": "refund", "_selected_action": [payment.pk], "post": "yes"},
    )
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED


# -- Export to Halo and Credit on a portal invoice's page ------------------------------------


def test_export_button_confirms_with_the_total_then_queues(
    personas, queued, django_capture_on_commit_callbacks
):
    details = factories.portal_invoice(personas.tenant_a)
    owner = personas.client(personas.owner_a)
    change = reverse("admin:invoicing_portalinvoice_change", args=[details.pk])
    page = owner.get(change).content.decode()
    assert "Export to Halo" in page and "Credit in full" in page
    changelist = reverse("admin:invoicing_portalinvoice_changelist")
    data = {
        "action": "export_to_halo",
        "_selected_action": details.pk,
        "_back_to_object": details.pk,
    }
    asked = owner.post(changelist, data)
    assert asked.status_code == 200 and not queued
    facts = dict(asked.context["facts"])
    assert facts["Invoices"] == "1"
    assert facts["Total billed"] == f"£{details.invoice.total:,.2f}"
    assert asked.context["rows"][0][4] == "Creates it in Halo"
    assert "customers see it in Halo" in asked.context["effect"]
    with django_capture_on_commit_callbacks(execute=True):
        done = owner.post(changelist, {**data, "confirm": "yes"})
    assert queued == [("billing.invoicing.tasks.export_to_halo", [details.pk])]
    assert done.url == change  # back on the invoice's page


def test_credit_asks_first_stating_the_amount(personas, queued):
    details = factories.portal_invoice(personas.tenant_a)
    owner = personas.client(personas.owner_a)
    changelist = reverse("admin:invoicing_portalinvoice_changelist")
    data = {"action": "credit", "_selected_action": details.pk}
    asked = owner.post(changelist, data)
    total = f"£{details.invoice.total:,.2f}"
    assert asked.status_code == 200 and total in asked.context["effect"]
    assert not PortalInvoice.objects.filter(credit_note_of=details).exists()
    owner.post(changelist, {**data, "confirm": "yes"})
    assert PortalInvoice.objects.filter(credit_note_of=details).exists()


def test_viewer_cannot_export_or_credit(personas, queued):
    details = factories.portal_invoice(personas.tenant_a)
    viewer = personas.client(personas.viewer_a)
    change = reverse("admin:invoicing_portalinvoice_change", args=[details.pk])
    assert 'class="object-action"' not in viewer.get(change).content.decode()
    changelist = reverse("admin:invoicing_portalinvoice_changelist")
    for action in ("export_to_halo", "credit"):
        data = {"action": action, "_selected_action": details.pk, "confirm": "yes"}
        assert viewer.post(changelist, data).status_code == 403
    assert not queued and not PortalInvoice.objects.filter(credit_note_of=details).exists()
