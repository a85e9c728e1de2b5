"""Pay buttons in Halo: each unpaid invoice's pay link written into its
`generic_online_invoice_payment_url`, batched and idempotent, and kept up for new invoices."""

import math

import pytest
from django.urls import reverse

from billing.models import Invoice
from billing.payments import tasks
from billing.payments.models import HaloOutbox, PayPage
from integrations.halo import HaloClient
from tests.payments.conftest import connect, open_invoice, settings_for
from tests.payments.test_outbox import sync

pytestmark = pytest.mark.django_db(transaction=True)


def links_in_halo(sim):
    return {
        i["id"]: i.get("generic_online_invoice_payment_url")
        for i in sim.control.state("Invoice")
        if not i.get("_deleted")
    }


def posts(sim):
    return sim.control.requests()["by_endpoint"].get("POST /Invoice", 0)


@pytest.fixture
def halo_tenant(personas, sim):
    connect(personas.tenant_a, sim)
    sync(personas.tenant_a)
    return personas.tenant_a


def test_admin_action_adds_pay_links_to_open_invoices(personas, halo_tenant, sim, settings):
    settings.HALO_BATCH_SIZE = 10
    settings_row = settings_for(halo_tenant)
    unpaid = {i.halo_id: i for i in Invoice.objects.filter(tenant=halo_tenant).unpaid()}
    sim.control.clear_requests()
    staff = personas.client(personas.owner_a)
    changelist = reverse("admin:payments_paymentsettings_changelist")

    answer = staff.post(
        changelist, {"action": "add_pay_links", "_selected_action": [settings_row.pk]}, follow=True
    )

    assert "writing pay links into Halo" in answer.content.decode()
    pages = {p.invoice.halo_id: p for p in PayPage.objects.select_related("invoice")}
    for halo_id, url in links_in_halo(sim).items():
        if halo_id in unpaid:
            assert url == f"https://portal.example.com{pages[halo_id].get_absolute_url()}"
        else:
            assert not url  # paid and voided invoices get no button
    assert posts(sim) == math.ceil(len(unpaid) / 10)
    stored = Invoice.objects.filter(tenant=halo_tenant).unpaid().values_list("pay_link_url")
    assert {url for (url,) in stored} == {p.public_url() for p in pages.values()}

    # Idempotent: a second run, and a sync bringing the links back, write nothing.
    sync(halo_tenant, "new")
    sim.control.clear_requests()
    staff.post(changelist, {"action": "add_pay_links", "_selected_action": [settings_row.pk]})
    assert posts(sim) == 0


def test_viewer_cannot_add_pay_links(personas, halo_tenant, sim):
    settings_row = settings_for(halo_tenant)
    viewer = personas.client(personas.viewer_a)
    viewer.post(
        reverse("admin:payments_paymentsettings_changelist"),
        {"action": "add_pay_links", "_selected_action": [settings_row.pk]},
    )
    assert not HaloOutbox.objects.exists()


def test_new_invoices_get_the_link_when_the_setting_is_on(halo_tenant, sim):
    client_id = sim.control.state("Client")[0]["id"]
    [created] = sim.control.records("Invoice", [{"client_id": client_id, "total": 99.0}])
    sync(halo_tenant, "new")
    tasks.add_pay_links_everywhere()
    assert not links_in_halo(sim)[created["id"]]  # setting off: Halo is left alone

    settings_for(halo_tenant, halo_pay_buttons=True)
    tasks.add_pay_links_everywhere()

    page = PayPage.objects.get(invoice__halo_id=created["id"])
    assert links_in_halo(sim)[created["id"]] == page.public_url()


def test_an_invoice_halo_refuses_does_not_hold_back_the_others(halo_tenant, sim):
    unpaid = list(Invoice.objects.filter(tenant=halo_tenant).unpaid())
    gone = unpaid[0]
    HaloClient(halo_tenant.halo_connections.get()).delete("Invoice", gone.halo_id)

    tasks.add_pay_links(halo_tenant.pk)

    failed = HaloOutbox.objects.get(status="failed")
    assert failed.invoice == gone and failed.last_error
    assert HaloOutbox.objects.filter(status="delivered").count() == len(unpaid) - 1


def test_portal_invoices_get_their_pay_link_for_their_pdfs(tenant):
    issued = open_invoice(tenant, source="portal", halo_id=None, posted=True)
    draft = open_invoice(tenant, source="portal", halo_id=None, posted=False)
    settings_for(tenant)

    tasks.add_pay_links_everywhere()

    issued.refresh_from_db()
    assert issued.pay_link_url == PayPage.objects.get(invoice=issued).public_url()
    assert Invoice.objects.get(pk=draft.pk).pay_link_url == ""
