"""Initial sync, fetch new, fetch unpaid and the CLI, against the Halo simulator over HTTP."""

import math
from datetime import date, timedelta
from decimal import Decimal

import pytest
import requests
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from billing.models import AutoPayRule, Customer, Invoice, InvoiceLine, InvoiceNumberField
from integrations.invoice_sync.models import InvoiceSyncRun, InvoiceSyncSettings, SyncState
from integrations.invoice_sync.runner import run_sync
from portal.models import Tenant
from tests import factories
from tests.halo.conftest import make_connection
from tests.invoice_sync.conftest import sync


def halo(sim, resource):
    """The simulator's live records of a resource, by id."""
    return {r["id"]: r for r in sim.control.state(resource) if not r.get("_deleted")}


def halo_date(record, name):
    return date.fromisoformat(record[name][:10])


def requests_to(sim, endpoint):
    return sim.control.requests()["by_endpoint"].get(endpoint, 0)


def fresh(tenant):
    """The tenant without cached related rows (its settings are read through it)."""
    return Tenant.objects.get(pk=tenant.pk)


def test_initial_sync_reads_every_page_and_stores_each_record_once(sim, tenant, settings):
    settings.HALO_PAGE_SIZE = 10
    # 60 invoices saved in one batch share one last_modified: a group of 6 pages.
    sim.control.generate(invoices=60)
    invoices, clients = halo(sim, "Invoice"), halo(sim, "Client")

    run = sync(tenant, "initial")

    assert sorted(Invoice.objects.values_list("halo_id", flat=True)) == sorted(invoices)
    assert sorted(Customer.objects.values_list("halo_id", flat=True)) == sorted(clients)
    assert Customer.objects.filter(inactive=True).count() == 2
    assert run.invoices_created == 100 and run.pages >= 10
    # One request per page of 10, plus a few re-reads at page boundaries.
    assert requests_to(sim, "GET /Invoice") <= 10 + 3
    assert SyncState.objects.get(tenant=tenant).initial_completed is not None

    for halo_id, record in invoices.items():
        invoice = Invoice.objects.get(tenant=tenant, halo_id=halo_id)
        assert invoice.total == Decimal(str(record["total"]))
        assert invoice.amount_due == Decimal(str(record["amountdue"]))
        assert invoice.lines.count() == len(record["lines"])
        assert invoice.customer.halo_id == record["client_id"]


def test_invoice_fields_map_from_halo(sim, tenant):
    sync(tenant, "initial")
    partly = next(r for r in halo(sim, "Invoice").values() if r["paymentstatus"] == 1)
    invoice = Invoice.objects.get(halo_id=partly["id"])
    assert invoice.payment_status == Invoice.PaymentStatus.PARTLY_PAID
    assert invoice.amount_paid == Decimal(str(partly["amountpaid"]))
    assert invoice.amount_paid + invoice.amount_due == invoice.total
    assert invoice.invoice_number == partly["invoicenumber"]
    assert invoice.third_party_number == partly["thirdpartyinvoicenumber"]
    assert invoice.due_date == halo_date(partly, "duedate")
    # Halo's currency_code is the id of one of its currencies, mapped to ISO through /Currency.
    currencies = {c["id"]: c["code"] for c in halo(sim, "Currency").values()}
    assert isinstance(partly["currency_code"], int)
    assert invoice.currency == currencies[partly["currency_code"]] == "GBP"
    # Every line keeps the Halo item Halo linked (answered as an Item object).
    lines = InvoiceLine.objects.filter(invoice__tenant=tenant).exclude(invoice__halo_id=None)
    assert lines.exists() and not lines.filter(item_halo_id=None).exists()
    stored = set(lines.filter(invoice=invoice).values_list("item_halo_id", flat=True))
    assert stored == {line["_item_id"] for line in partly["lines"]}
    usd = [r for r in halo(sim, "Invoice").values() if currencies[r["currency_code"]] == "USD"]
    assert usd, "the demo seed has dollar invoices"
    assert {i.currency for i in Invoice.objects.filter(halo_id__in=[r["id"] for r in usd])} == {
        "USD"
    }
    assert invoice.customer.name == partly["client_name"]
    line, halo_line = invoice.lines.first(), partly["lines"][0]
    assert (line.code, line.quantity) == (halo_line["item_code"], Decimal(halo_line["qty_order"]))
    assert line.total == Decimal(str(halo_line["total_price"]))

    voided = next(r for r in halo(sim, "Invoice").values() if r["voided"])
    assert Invoice.objects.get(halo_id=voided["id"]).voided
    customer = Customer.objects.get(name="Northwind Traders")
    assert customer.billing_email and customer.billing_contact
    assert customer.custom_field("CFVendorCustomerId") == "NW-1001"


def test_both_invoice_number_settings(personas, sim):
    tenant = personas.tenant_a
    make_connection(sim, tenant)
    sync(tenant, "initial")
    invoice = Invoice.objects.exclude(third_party_number="").first()
    halo_id, third_party = str(invoice.halo_id), invoice.third_party_number

    assert Invoice.objects.get(pk=invoice.pk).display_number() == halo_id
    assert list(Invoice.objects.for_ref(tenant, halo_id)) == [invoice]
    assert not Invoice.objects.for_ref(tenant, third_party).exists()
    assert not Invoice.objects.for_ref(personas.tenant_b, halo_id).exists()

    InvoiceSyncSettings.objects.filter(tenant=tenant).update(
        number_field=InvoiceNumberField.THIRD_PARTY
    )
    assert Invoice.objects.get(pk=invoice.pk).display_number() == third_party
    assert list(Invoice.objects.for_ref(fresh(tenant), third_party)) == [invoice]
    assert not Invoice.objects.for_ref(fresh(tenant), halo_id).exists()

    # The admin shows the chosen number and finds invoices by either.
    admin = personas.client(personas.owner_a)
    url = reverse("admin:billing_invoice_changelist")
    assert third_party in admin.get(url).content.decode()
    for term in (third_party, halo_id):
        found = admin.get(url, {"q": term}).context["cl"].result_list
        assert invoice in list(found), term


def test_created_since_cuts_off_older_invoices(sim, tenant):
    cutoff = date.fromisoformat(sim.control.state()["now"][:10]) - timedelta(days=40)
    InvoiceSyncSettings.objects.create(tenant=tenant, created_since=cutoff)
    invoices = halo(sim, "Invoice")
    recent = {i for i, r in invoices.items() if halo_date(r, "invoice_date") >= cutoff}
    assert 0 < len(recent) < len(invoices)

    sync(tenant, "initial")
    assert set(Invoice.objects.values_list("halo_id", flat=True)) == recent

    # An old invoice changing in Halo is still not pulled...
    old = next(i for i in invoices if i not in recent)
    sim.control.records("Invoice", {"id": old, "reference": "Touched"})
    assert sync(tenant, "new").invoices_created == 0
    assert not Invoice.objects.filter(halo_id=old).exists()

    # ...until Halo becomes the secondary integration, which needs no cut-off: the next
    # run re-reads Halo from the start.
    InvoiceSyncSettings.objects.filter(tenant=tenant).update(halo_role="secondary")
    sync(tenant, "new")
    assert set(Invoice.objects.values_list("halo_id", flat=True)) == set(invoices)


def test_fetch_new_picks_up_a_changed_invoice_and_a_new_client(sim, tenant):
    sync(tenant, "initial")
    invoice_id = next(i for i, r in halo(sim, "Invoice").items() if r["paymentstatus"] == 0)
    sim.control.records("Invoice", {"id": invoice_id, "reference": "Revised March services"})
    [client] = sim.control.records(
        "Client", {"name": "Brand New Client Ltd", "accountsemailaddress": "ap@brand.example"}
    )
    sim.control.clear_requests()

    run = sync(tenant, "new")

    assert Invoice.objects.get(halo_id=invoice_id).reference == "Revised March services"
    customer = Customer.objects.get(halo_id=client["id"])
    assert (customer.name, customer.billing_email) == ("Brand New Client Ltd", "ap@brand.example")
    assert sim.control.requests()["total"] <= 3
    assert run.invoices_created == 0 and run.invoices_updated >= 1


def test_fetch_new_at_500_clients_reads_only_the_clients_changed_since(sim, tenant):
    """Halo's clients carry no last_modified: the cursor is when the last complete read
    began by Halo's clock, and the next read asks lastupdatefromdate from just before it."""
    sim.control.generate(clients=500)
    sim.control.move_clock(hours=1)  # they were created well before the first read
    sync(tenant, "initial")
    state = SyncState.objects.get(tenant=tenant)
    assert state.clients_cursor is not None
    assert all("last_modified" not in c for c in sim.session().get(
        f"{sim.api_url}/Client", params={"count": 5}, timeout=10).json()["clients"])  # fmt: skip
    sim.control.move_clock(minutes=30)  # within the token's hour
    [client] = sim.control.records("Client", {"name": "Renamed at Halo", "id": 7})
    sim.control.clear_requests()

    run = sync(tenant, "new")

    assert Customer.objects.get(halo_id=client["id"]).name == "Renamed at Halo"
    assert requests_to(sim, "GET /Client") == 1  # one page of changed clients, not 6
    assert sim.control.requests()["total"] <= 3
    assert run.status == "succeeded"
    moved = SyncState.objects.get(tenant=tenant).clients_cursor
    assert moved >= state.clients_cursor + timedelta(minutes=30)  # by Halo's clock


def test_fetch_new_overlap_catches_a_write_committed_late(sim, tenant):
    """Halo stamps a record with a time just before the newest one already read."""
    sync(tenant, "initial")
    cursor = SyncState.objects.get(tenant=tenant).invoices_cursor
    invoice_id = next(iter(halo(sim, "Invoice")))
    late = (cursor - timedelta(minutes=2)).replace(tzinfo=None).isoformat()
    sim.control.records("Invoice", {"id": invoice_id, "reference": "Late", "last_modified": late})

    sync(tenant, "new")
    assert Invoice.objects.get(halo_id=invoice_id).reference == "Late"


@pytest.mark.parametrize("pages_before", [2, 7], ids=["page-3", "inside-a-same-time-group"])
def test_failure_on_page_three_then_resume_stores_every_invoice_once(
    sim, tenant, settings, pages_before
):
    settings.HALO_PAGE_SIZE = 10
    settings.HALO_RETRY_BUDGET_SECONDS = 0.3
    sim.control.generate(invoices=60)
    sim.control.add_fault("500", path="Invoice", method="GET", after=pages_before, times=10_000)

    failed = run_sync(tenant, "initial", "cli")

    assert failed.status == "error" and "internal error" in failed.error
    stored = Invoice.objects.count()
    assert 10 < stored < 100 and failed.invoices_created == stored
    state = SyncState.objects.get(tenant=tenant)
    assert state.invoices_cursor is not None and state.initial_completed is None

    sim.control.clear_faults()
    sim.control.clear_requests()
    resumed = sync(tenant, "initial")

    assert sorted(Invoice.objects.values_list("halo_id", flat=True)) == sorted(halo(sim, "Invoice"))
    assert resumed.invoices_created == 100 - stored
    # It carried on from page 3 instead of starting again.
    assert requests_to(sim, "GET /Invoice") <= math.ceil((100 - stored) / 10) + 2
    assert SyncState.objects.get(tenant=tenant).initial_completed is not None


def test_void_and_delete_in_halo_are_marked_never_left_open(sim, tenant):
    sync(tenant, "initial")
    unpaid = [i for i, r in halo(sim, "Invoice").items() if r["paymentstatus"] == 0]
    voided, deleted = unpaid[:2]
    sim.control.records("Invoice", {"id": voided, "voided": True})
    reply = requests.delete(
        f"{sim.api_url}/Invoice/{deleted}",
        headers={"Authorization": f"Bearer {sim.token()}"},
        timeout=5,
    )
    assert reply.status_code == 200

    sync(tenant, "new")
    assert Invoice.objects.get(halo_id=voided).voided
    assert Invoice.objects.unpaid().filter(halo_id=deleted).exists()  # Halo lists no deletes

    run = sync(tenant, "unpaid")
    assert run.invoices_deleted == 1
    assert Invoice.objects.get(halo_id=deleted).deleted_in_halo
    assert not Invoice.objects.unpaid().filter(halo_id__in=[voided, deleted]).exists()


def test_fetch_unpaid_picks_up_payments_and_due_dates(sim, tenant):
    sync(tenant, "initial")
    owed = [r for r in halo(sim, "Invoice").values() if r["paymentstatus"] == 0]
    paid, moved = owed[0], owed[1]
    api = sim.session()
    reply = api.post(
        f"{sim.api_url}/InvoicePayment",
        json=[{"invoice_id": paid["id"], "amount": paid["amountdue"], "thirdpartyid": "pi_1"}],
        timeout=5,
    )
    assert reply.status_code == 201, reply.text
    new_due = (halo_date(moved, "duedate") + timedelta(days=14)).isoformat()
    sim.control.records("Invoice", {"id": moved["id"], "duedate": new_due})

    sync(tenant, "unpaid")

    paid_now = Invoice.objects.get(halo_id=paid["id"])
    assert paid_now.payment_status == Invoice.PaymentStatus.PAID and paid_now.amount_due == 0
    assert paid_now.date_paid is not None
    assert Invoice.objects.get(halo_id=moved["id"]).due_date.isoformat() == new_due


def test_an_invoice_the_portal_issued_only_takes_its_payment_state_from_halo(sim, tenant):
    """Portal invoices exported to Halo keep their content; payments made in Halo show."""
    record = next(r for r in halo(sim, "Invoice").values() if r["paymentstatus"] == 0)
    issued = factories.invoice(
        tenant,
        source=Invoice.Source.PORTAL,
        halo_id=record["id"],
        invoice_number="P-0001",
        total=Decimal(str(record["total"])),
        amount_due=Decimal(str(record["total"])),
    )
    line = InvoiceLine.objects.create(invoice=issued, description="Portal line", quantity=3)
    api = sim.session()
    reply = api.post(
        f"{sim.api_url}/InvoicePayment",
        json=[{"invoice_id": record["id"], "amount": record["amountdue"], "thirdpartyid": "p"}],
        timeout=5,
    )
    assert reply.status_code == 201

    sync(tenant, "initial")

    issued.refresh_from_db()
    assert (issued.source, issued.invoice_number) == ("portal", "P-0001")
    assert issued.payment_status == "paid" and issued.amount_due == 0 and issued.date_paid
    assert list(issued.lines.all()) == [line]


def test_agreement_subtypes_flag_auto_pay(sim, tenant):
    managed = AutoPayRule.objects.create(
        tenant=tenant, halo_subtype_id=1, subtype_name="Managed Services"
    )
    sync(tenant, "initial")
    contracts = halo(sim, "ClientContract")
    invoices = halo(sim, "Invoice")

    def expected(subtype):
        return {
            i
            for i, r in invoices.items()
            if r.get("contract_id") and contracts[r["contract_id"]]["subtype"] == subtype
        }

    assert expected(1) and expected(2)
    flagged = Invoice.objects.filter(autopay_rule=managed).values_list("halo_id", flat=True)
    assert set(flagged) == expected(1)
    assert Invoice.objects.get(halo_id=min(expected(1))).contract_subtype_name == "Managed Services"

    managed.enabled = False
    managed.save()
    assert not Invoice.objects.filter(autopay_rule__isnull=False).exists()
    managed.enabled = True
    managed.save()
    assert set(Invoice.objects.filter(autopay_rule=managed).values_list("halo_id", flat=True)) == (
        expected(1)
    )

    # A contract moved to "Managed Services" in Halo re-flags its invoices.
    contract_id = next(c for c, r in contracts.items() if r["subtype"] == 2)
    sim.control.records("ClientContract", {"id": contract_id, "subtype": 1})
    sync(tenant, "unpaid")
    moved = Invoice.objects.filter(contract_halo_id=contract_id)
    assert moved.exists() and all(i.autopay_rule == managed for i in moved)
    assert {i.contract_subtype_name for i in moved} == {"Managed Services"}


def test_cli_runs_each_sync_and_fails_loudly(sim, tenant, capsys):
    call_command("sync_invoices", tenant.slug, "--initial")
    assert "Initial sync of northwind-msp: succeeded" in capsys.readouterr().out
    call_command("sync_invoices", tenant.slug)
    call_command("sync_invoices", tenant.slug, "--unpaid")
    assert Invoice.objects.count() == len(halo(sim, "Invoice"))

    with pytest.raises(CommandError, match="No tenant"):
        call_command("sync_invoices", "nobody")
    sim.control.add_fault("500", path="Client", method="GET", times=10_000)
    with pytest.raises(CommandError, match="internal error"):
        call_command("sync_invoices", tenant.slug, "--new")


def test_one_run_per_tenant_at_a_time(sim, tenant):
    active, _ = InvoiceSyncRun.objects.claim(tenant, kind="initial", trigger="cli")
    run = run_sync(tenant, "new", "cli")
    assert run.status == "skipped" and "running" in run.error
    assert active.start()
    active.finish(InvoiceSyncRun.Status.SUCCEEDED)
    assert sync(tenant, "new").status == "succeeded"


def test_a_run_whose_worker_died_is_taken_back(sim, tenant, settings):
    """A killed worker leaves its run running; once its heartbeat is stale the next run
    marks it interrupted and goes ahead."""
    dead, _ = InvoiceSyncRun.objects.claim(tenant, kind="new", trigger="schedule")
    dead.start()
    InvoiceSyncRun.objects.filter(pk=dead.pk).update(
        heartbeat=timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS + 1)
    )
    assert sync(tenant, "new").status == "succeeded"
    dead.refresh_from_db()
    assert dead.status == "interrupted" and "killed" in dead.error


def test_a_halo_that_ignores_the_order_fails_the_run_rather_than_skip(sim, tenant, monkeypatch):
    """The cursor logic needs last_modified order; unordered pages stop the run, unstored."""
    from integrations.halo import HaloClient

    listed = HaloClient.list_invoices
    monkeypatch.setattr(
        HaloClient,
        "list_invoices",
        lambda client, **filters: sorted(listed(client, **filters), key=lambda r: -r["id"]),
    )
    run = run_sync(tenant, "initial", "cli")
    assert run.status == "error" and "not in last_modified order" in run.error
    assert not Invoice.objects.exists()
    assert SyncState.objects.get(tenant=tenant).invoices_cursor is None


def test_a_custom_field_reads_the_same_on_every_mirror_of_a_halo_client(sim, tenant):
    """billing.Customer and billing sync's HaloClientRecord both mirror Halo clients: one
    answer for a set field (trimmed text) and for an unset one ('')."""
    from integrations.billing_sync import runner
    from integrations.billing_sync.models import HaloClientRecord

    sync(tenant, "initial")
    runner.refresh_from_halo(tenant, runner.HaloClient(tenant.halo_connections.get()))
    customer = Customer.objects.get(tenant=tenant, name="Northwind Traders")
    record = HaloClientRecord.objects.get(tenant=tenant, halo_id=customer.halo_id)
    for name in ("CFVendorCustomerId", "CFNoSuchField"):
        assert customer.custom_field(name) == record.custom_field(name), name
    assert customer.custom_field("CFNoSuchField") == ""
