"""A Halo invoice's PDF prints the customer's account number (Halo's `accountsid`, else the
client's `ref`) as "Account reference", or no such row: never Halo's internal client id
(issue 15). Clients and invoices come from the Halo simulator over HTTP."""

import pytest

from billing.invoicing.pdfs import resolve_pdf
from billing.models import Customer, Invoice
from integrations.invoice_sync.runner import run_sync
from tests.halo.conftest import make_connection
from tests.invoicing.conftest import pdf_text

LINE = {"item_shortdescription": "Managed endpoints", "qty_order": 3, "unit_price": 4.5}


def synced_pdf(tenant, sim, client_id):
    [record] = sim.control.records("Invoice", [{"client_id": client_id, "lines": [LINE]}])
    run = run_sync(tenant, "initial", "cli")
    assert run.status == "succeeded", run.error
    invoice = Invoice.objects.get(tenant=tenant, halo_id=record["id"])
    return invoice, pdf_text(resolve_pdf(invoice, "admin").content)


@pytest.fixture
def halo_clients(tenant, sim):
    make_connection(sim, tenant)
    return [c for c in sim.control.state("Client") if not c.get("inactive")]


def test_the_account_number_halo_holds_is_the_account_reference(tenant, sim, halo_clients):
    client = halo_clients[0]
    sim.control.records("Client", [{"id": client["id"], "accountsid": "ACC-7781"}])

    invoice, text = synced_pdf(tenant, sim, client["id"])

    assert Customer.objects.get(tenant=tenant, halo_id=client["id"]).account_ref == "ACC-7781"
    assert "Account reference\nACC-7781" in text
    assert f"Account {invoice.customer.halo_id}" not in text
    assert "Account ACC-7781" in text  # the page footer


def test_the_client_reference_when_halo_has_no_account_number(tenant, sim, halo_clients):
    client = halo_clients[1]
    sim.control.records("Client", [{"id": client["id"], "accountsid": "", "ref": "NORTH01"}])

    _, text = synced_pdf(tenant, sim, client["id"])

    assert "Account reference\nNORTH01" in text


def test_no_account_reference_row_without_either(tenant, sim, halo_clients):
    client = halo_clients[2]
    sim.control.records("Client", [{"id": client["id"], "accountsid": "", "ref": ""}])

    invoice, text = synced_pdf(tenant, sim, client["id"])

    assert "Account reference" not in text and "· Account" not in text
    assert f"Invoice {invoice.display_number()}" in text  # the footer still names it
