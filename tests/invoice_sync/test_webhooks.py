"""Halo's webhook: the endpoint, processing deliveries, and registering it in Halo.

The simulator tests register the webhook through the admin action, then let the simulator
deliver to a live portal server over HTTP; the deliveries are then processed in arrival
order, as the worker would.
"""

import base64
import json
from decimal import Decimal

import pytest
from django.test import TestCase
from django.urls import reverse

from billing.models import Invoice
from integrations.halo import HaloClient
from integrations.halo_sim.testing import run_simulator
from integrations.invoice_sync import tasks, webhooks
from integrations.invoice_sync.models import InvoiceSyncSettings, WebhookDelivery
from portal.jobs import task_path
from tests.halo.conftest import make_connection
from tests.invoice_sync.conftest import sync


def credentials(tenant):
    settings = InvoiceSyncSettings.for_tenant(tenant)
    username, password = settings.new_webhook_credentials()
    settings.save()
    return username, password


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def post(client, slug, body, authorization=None):
    """POST a delivery; tasks queued on commit (Redis broker) are queued as in production."""
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    url = reverse("invoice_sync:halo-webhook", args=[slug])
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(url, data, content_type="application/json", **headers)


def invoice_record(halo_id=501, modified="2026-03-02T10:00:00", **fields):
    return {
        "id": halo_id,
        "invoicenumber": str(halo_id),
        "thirdpartyinvoicenumber": f"INV-{halo_id}",
        "client_id": 7,
        "client_name": "Contoso Dental",
        "invoice_date": "2026-03-01T00:00:00",
        "duedate": "2026-03-31T00:00:00",
        "last_modified": modified,
        "paymentstatus": 0,
        "total": 120.0,
        "amountpaid": 0.0,
        "amountdue": 120.0,
        "posted": True,
        "lines": [{"id": 1, "item_code": "EDR-STD", "qty_order": 10.0, "total_price": 120.0}],
    } | fields


def delivery(record, delivery_id="d-1", event="invoice updated"):
    return {
        "id": delivery_id,
        "webhook_id": "5b0c…",
        "notification_id": 1,
        "event": event,
        "message": f"Invoice {record['id']} updated",
        "object_id": record["id"],
        "timestamp": "2026-03-02T10:00:00.1234567Z",
        "invoice": record,
    }


def process_received():
    """What the worker does with the tasks the endpoint queued."""
    received = WebhookDelivery.objects.filter(status="received")
    for tenant_id in set(received.values_list("tenant_id", flat=True)):
        tasks.drain_deliveries(tenant_id)


# -- the endpoint -------------------------------------------------------------------------


def test_every_failed_authentication_gets_the_same_401(personas, client, queued):
    tenant_a, tenant_b = personas.tenant_a, personas.tenant_b
    user_a, password_a = credentials(tenant_a)
    user_b, password_b = credentials(tenant_b)
    body = delivery(invoice_record())
    attempts = [
        (tenant_a.slug, None),
        (tenant_a.slug, basic(user_a, "wrong")),
        (tenant_a.slug, basic("someone", password_a)),
        (tenant_a.slug, "Basic not-base64!"),
        (tenant_a.slug, f"Bearer {password_a}"),
        (tenant_a.slug, basic(user_b, password_b)),  # B's credentials on A's URL
        (tenant_b.slug, basic(user_a, password_a)),  # and the other way round
        ("no-such-tenant", basic(user_a, password_a)),
    ]
    answers = [post(client, slug, body, auth) for slug, auth in attempts]

    assert {a.status_code for a in answers} == {401}
    assert len({a.content for a in answers}) == 1
    assert answers[0]["WWW-Authenticate"].startswith("Basic")
    assert not WebhookDelivery.objects.exists() and not queued


def test_a_tenant_without_registered_credentials_accepts_nothing(personas, client):
    InvoiceSyncSettings.for_tenant(personas.tenant_a)
    assert (
        post(client, personas.tenant_a.slug, delivery(invoice_record()), basic("", "")).status_code
        == 401
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b'"text"',
        b'{"event": "invoice updated"}',
        b'{"id": null}',
        b'{"id": "x", "total": NaN}',
        b'{"id": "x", "name": "nul \\u0000 byte"}',
        b"[" * 100_000,
    ],
    ids=lambda body: body[:20].decode("latin-1"),
)
def test_junk_is_refused_never_a_500(personas, client, queued, body):
    auth = basic(*credentials(personas.tenant_a))
    response = post(client, personas.tenant_a.slug, body, auth)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert not WebhookDelivery.objects.exists()


def test_a_delivery_is_stored_before_the_answer_and_processed_on_the_worker(
    personas, client, queued
):
    tenant = personas.tenant_a
    response = post(client, tenant.slug, delivery(invoice_record()), basic(*credentials(tenant)))

    assert response.status_code == 202
    stored = WebhookDelivery.objects.get()
    assert (stored.tenant, stored.status, stored.event) == (tenant, "received", "invoice updated")
    assert queued == [(task_path(tasks.drain_deliveries), tenant.pk)]
    assert not Invoice.objects.exists()

    process_received()
    stored.refresh_from_db()
    assert stored.status == "processed" and stored.processed
    invoice = Invoice.objects.get(tenant=tenant, halo_id=501)
    assert invoice.total == Decimal("120.00") and invoice.lines.count() == 1
    assert invoice.customer.name == "Contoso Dental"


def test_a_duplicate_delivery_is_stored_and_applied_once(personas, client, queued):
    tenant = personas.tenant_a
    auth = basic(*credentials(tenant))
    body = delivery(invoice_record())
    first, again = post(client, tenant.slug, body, auth), post(client, tenant.slug, body, auth)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "duplicate"
    assert WebhookDelivery.objects.count() == 1 and len(queued) == 1
    process_received()
    webhooks.process(WebhookDelivery.objects.get().pk)  # a repeated task changes nothing
    assert WebhookDelivery.objects.get().attempts == 1
    assert Invoice.objects.count() == 1


def test_an_older_delivery_never_overwrites_newer_data(personas, client, queued):
    tenant = personas.tenant_a
    auth = basic(*credentials(tenant))
    newer = invoice_record(modified="2026-03-02T10:00:05.5", amountpaid=120.0, amountdue=0.0)
    older = invoice_record(modified="2026-03-02T10:00:01")
    post(client, tenant.slug, delivery(newer | {"paymentstatus": 2}, "d-new"), auth)
    post(client, tenant.slug, delivery(older, "d-old"), auth)

    process_received()

    invoice = Invoice.objects.get(halo_id=501)
    assert invoice.payment_status == "paid" and invoice.amount_due == 0
    old = WebhookDelivery.objects.get(delivery_id="d-old")
    assert old.status == "ignored" and "older" in old.error


def test_the_endpoint_keeps_tenants_apart(personas, client, queued):
    tenant_a, tenant_b = personas.tenant_a, personas.tenant_b
    auth_a, auth_b = basic(*credentials(tenant_a)), basic(*credentials(tenant_b))
    body = delivery(invoice_record())

    assert post(client, tenant_a.slug, body, auth_a).status_code == 202
    # The same delivery id in another tenant is another delivery.
    b_body = delivery(invoice_record(total=99.0, amountdue=99.0))
    assert post(client, tenant_b.slug, b_body, auth_b).status_code == 202
    process_received()

    assert Invoice.objects.get(tenant=tenant_a, halo_id=501).total == Decimal("120.00")
    assert Invoice.objects.get(tenant=tenant_b, halo_id=501).total == Decimal("99.00")
    assert WebhookDelivery.objects.filter(tenant=tenant_a).count() == 1
    # A's deliveries are not in B's admin.
    admin_b = personas.client(personas.owner_b)
    listed = admin_b.get(reverse("admin:invoice_sync_webhookdelivery_changelist")).context["cl"]
    assert [d.tenant for d in listed.result_list] == [tenant_b]


def test_events_invoice_sync_does_not_use_are_ignored(personas, client, queued):
    tenant = personas.tenant_a
    body = delivery(invoice_record(), event="ticket updated")
    post(client, tenant.slug, body, basic(*credentials(tenant)))
    process_received()
    assert WebhookDelivery.objects.get().status == "ignored"
    assert not Invoice.objects.exists()


# -- with the simulator delivering over HTTP ----------------------------------------------


@pytest.fixture
def hooked_sim(transactional_db, live_server):
    """A simulator of its own that delivers to the live portal server; it closes (and so
    drops its keep-alive connections) before the server stops."""
    with run_simulator() as sim:
        yield sim


@pytest.fixture
def halo_hooked(hooked_sim, live_server, personas, settings, queued):
    """Tenant A connected to the simulator, synced, and its webhook registered through the
    admin action: the simulator now delivers to the live portal."""
    settings.PORTAL_BASE_URL = live_server.url
    make_connection(hooked_sim, personas.tenant_a)
    sync(personas.tenant_a, "initial")
    settings_row = InvoiceSyncSettings.for_tenant(personas.tenant_a)
    admin = personas.client(personas.owner_a)
    response = admin.post(
        reverse("admin:invoice_sync_invoicesyncsettings_changelist"),
        {"action": "register_webhook", "_selected_action": [settings_row.pk]},
        follow=True,
    )
    assert "webhook registered in Halo" in response.content.decode()
    return personas.tenant_a


def all_deliveries(sim, at_least):
    """Every delivery the simulator sends for the changes made so far: at least `at_least`,
    and the simulator has nothing left to send."""
    return sim.control.wait_for_deliveries(at_least, idle=True)


def owed(sim, count):
    invoices = sim.control.state("Invoice")
    return [r for r in invoices if r["amountdue"] > 0][:count]


def test_register_webhook_subscribes_with_basic_credentials(halo_hooked, hooked_sim, live_server):
    [hook] = hooked_sim.control.state("Webhook")
    assert hook["url"] == f"{live_server.url}/api/v1/halo/webhook/{halo_hooked.slug}"
    assert hook["authentication_type"] == 1 and hook["active"]
    assert {e["name"] for e in hook["events"]} == set(webhooks.EVENTS)
    settings_row = InvoiceSyncSettings.objects.get(tenant=halo_hooked)
    assert settings_row.webhook_username == hook["basic_username"]
    assert settings_row.webhook_halo_id == hook["id"]
    assert "webhook_password_digest" not in hook["basic_password"]


def test_registering_again_updates_the_webhook_and_rotates_credentials(
    halo_hooked, hooked_sim, personas
):
    old = InvoiceSyncSettings.objects.get(tenant=halo_hooked).webhook_password_digest
    settings_row = InvoiceSyncSettings.objects.get(tenant=halo_hooked)
    webhooks.register(settings_row, HaloClient(halo_hooked.halo_connections.get()))
    assert len(hooked_sim.control.state("Webhook")) == 1
    assert InvoiceSyncSettings.objects.get(tenant=halo_hooked).webhook_password_digest != old


def test_registering_again_from_the_admin_asks_first(halo_hooked, hooked_sim, personas):
    """It replaces the webhook's credentials: the page says so, and nothing changes until
    the owner confirms."""
    before = InvoiceSyncSettings.objects.get(tenant=halo_hooked)
    [hook] = hooked_sim.control.state("Webhook")
    admin = personas.client(personas.owner_a)
    url = reverse("admin:invoice_sync_invoicesyncsettings_changelist")
    data = {"action": "register_webhook", "_selected_action": [before.pk]}

    asked = admin.post(url, data)

    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Register the webhook in Halo again?" in page and "new credentials" in page
    assert hooked_sim.control.state("Webhook")[0]["basic_username"] == hook["basic_username"]
    after = InvoiceSyncSettings.objects.get(tenant=halo_hooked)
    assert after.webhook_password_digest == before.webhook_password_digest

    done = admin.post(url, data | {"post": "yes"}, follow=True)

    assert "webhook registered in Halo" in done.content.decode()
    rotated = InvoiceSyncSettings.objects.get(tenant=halo_hooked)
    assert rotated.webhook_password_digest != before.webhook_password_digest
    assert len(hooked_sim.control.state("Webhook")) == 1


def test_register_webhook_needs_admin_webhooks(personas, sim):
    app = sim.control.add_application(permissions="read:invoices read:customers")
    make_connection(sim, personas.tenant_a, client_id=app["client_id"], secret=app["client_secret"])
    settings_row = InvoiceSyncSettings.for_tenant(personas.tenant_a)
    response = personas.client(personas.owner_a).post(
        reverse("admin:invoice_sync_invoicesyncsettings_changelist"),
        {"action": "register_webhook", "_selected_action": [settings_row.pk]},
        follow=True,
    )
    assert "admin:webhooks" in response.content.decode()
    assert not sim.control.state("Webhook")
    assert InvoiceSyncSettings.objects.get(pk=settings_row.pk).webhook_registered is None


def test_halo_deliveries_keep_invoices_current(halo_hooked, hooked_sim):
    [invoice] = owed(hooked_sim, 1)
    api = hooked_sim.session()
    reply = api.post(
        f"{hooked_sim.api_url}/InvoicePayment",
        json=[{"invoice_id": invoice["id"], "amount": invoice["amountdue"], "thirdpartyid": "x"}],
        timeout=5,
    )
    assert reply.status_code == 201
    attempts = all_deliveries(hooked_sim, 2)  # invoice updated, invoice paid
    assert {a["status"] for a in attempts} == {202}

    process_received()

    stored = Invoice.objects.get(tenant=halo_hooked, halo_id=invoice["id"])
    assert stored.payment_status == "paid" and stored.amount_due == 0
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) <= {
        "processed",
        "ignored",
    }


def test_halo_repeating_every_delivery_applies_each_once(halo_hooked, hooked_sim):
    hooked_sim.control.config(webhook_duplicates=True)
    invoices = owed(hooked_sim, 3)
    hooked_sim.control.records("Invoice", [{"id": r["id"], "reference": "Dup"} for r in invoices])
    attempts = all_deliveries(hooked_sim, 6)
    by_attempt = sorted((a["attempt"], a["status"]) for a in attempts)
    assert by_attempt == [(1, 202)] * 3 + [(2, 200)] * 3
    assert WebhookDelivery.objects.count() == 3

    process_received()
    assert all(Invoice.objects.get(halo_id=r["id"]).reference == "Dup" for r in invoices)


def test_halo_delivering_out_of_order_leaves_the_newest_data(halo_hooked, hooked_sim):
    hooked_sim.control.config(webhook_out_of_order=True)
    [invoice] = owed(hooked_sim, 1)
    for reference in ("First", "Second", "Third"):
        hooked_sim.control.records("Invoice", {"id": invoice["id"], "reference": reference})
    attempts = all_deliveries(hooked_sim, 3)
    references = [
        WebhookDelivery.objects.get(delivery_id=a["delivery_id"]).payload["invoice"]["reference"]
        for a in attempts
    ]
    assert references == ["Third", "Second", "First"]  # newest first

    process_received()

    assert Invoice.objects.get(halo_id=invoice["id"]).reference == "Third"
    assert WebhookDelivery.objects.filter(status="ignored").count() == 2


def test_a_burst_of_100_deliveries(halo_hooked, hooked_sim, queued):
    """A bulk import in Halo: 100 "invoice created" deliveries at once, nothing synced."""
    before = set(Invoice.objects.values_list("halo_id", flat=True))
    hooked_sim.control.generate(invoices=100)  # about a third paid: "updated" and "paid" too
    attempts = all_deliveries(hooked_sim, at_least=100)
    assert {a["status"] for a in attempts} == {202}
    assert sum(a["event"] == "invoice created" for a in attempts) == 100
    # One task for the whole burst.
    assert queued == [(task_path(tasks.drain_deliveries), halo_hooked.pk)]

    process_received()

    assert WebhookDelivery.objects.filter(status="processed").count() == len(attempts)
    created = {r["id"]: r for r in hooked_sim.control.state("Invoice") if r["id"] not in before}
    assert len(created) == 100
    stored = Invoice.objects.filter(tenant=halo_hooked, halo_id__in=created)
    assert stored.count() == 100
    for invoice in stored:
        record = created[invoice.halo_id]
        assert invoice.total == Decimal(str(record["total"]))
        assert invoice.lines.count() == len(record["lines"])


def test_stuck_deliveries_are_queued_again(personas, client, queued, clock):
    """Stored while the broker was down (or the task was lost): the sweep queues it again."""
    tenant = personas.tenant_a
    post(client, tenant.slug, delivery(invoice_record()), basic(*credentials(tenant)))
    assert len(queued) == 1

    with TestCase.captureOnCommitCallbacks(execute=True):  # sent on commit on Redis
        tasks.requeue_stuck_deliveries()
    assert len(queued) == 1
    clock.advance(minutes=11)
    with TestCase.captureOnCommitCallbacks(execute=True):
        tasks.requeue_stuck_deliveries()
    assert queued == [queued[0]] * 2
