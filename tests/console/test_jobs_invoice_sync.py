"""The invoice sync job page: its state from real runs, Fetch new / unpaid with their
limits, Register webhook against the simulator, viewers and other tenants."""

import pytest
from django.urls import reverse

from integrations.invoice_sync.models import (
    ActionLimit,
    InvoiceSyncRun,
    InvoiceSyncSettings,
    WebhookDelivery,
)
from tests.halo.conftest import make_connection
from tests.invoice_sync.conftest import Clock, sync

PAGE = reverse("admin:job_invoice_sync")
FETCH_NEW = reverse("admin:job_invoice_sync_fetch_new")
FETCH_UNPAID = reverse("admin:job_invoice_sync_fetch_unpaid")
REGISTER = reverse("admin:job_invoice_sync_register_webhook")


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 2


@pytest.fixture
def connected(personas, sim):
    make_connection(sim, personas.tenant_a)
    return personas.tenant_a


def buttons(page):
    return {b.label: b for b in page.context["buttons"]}


def texts(response):
    return [str(m) for m in response.context["messages"]]


def test_page_shows_settings_position_runs_and_webhook(connected, personas):
    run = sync(connected, "initial")
    InvoiceSyncSettings.objects.filter(tenant=connected).update(
        webhook_halo_id="17", webhook_registered=run.finished
    )
    WebhookDelivery.receive(connected.pk, {"id": "d-1", "event": "invoice updated"})
    failed, _ = WebhookDelivery.receive(connected.pk, {"id": "d-2", "event": "invoice paid"})
    failed.settle(WebhookDelivery.Status.FAILED, "Halo said no")
    page = personas.client(personas.owner_a).get(PAGE)
    assert page.status_code == 200
    assert list(page.context["runs"]) == [run]
    text = page.content.decode()
    assert "Initial sync completed" in text
    assert f"{run.invoices_created}</td>" in text
    webhook = page.context["webhook"]
    assert webhook["day"] == 2 and webhook["failed"] == 1 and webhook["halo_id"] == "17"
    assert f"/api/v1/halo/webhook/{connected.slug}" in webhook["url"]
    assert webhook["failed_url"] in text
    assert set(buttons(page)) == {
        "Fetch new data",
        "Fetch unpaid invoices",
        "Re-register webhook in Halo",
    }
    assert not any(b.disabled for b in page.context["buttons"])
    assert reverse("admin:invoice_sync_webhookdelivery_changelist") in text
    assert reverse("admin:billing_customer_changelist") in text


def test_fetch_new_runs_on_the_worker_then_waits_an_hour(
    connected, personas, sim, monkeypatch, tasks_inline, requests_commit
):
    sync(connected, "initial")
    clock = Clock(monkeypatch)
    owner = personas.client(personas.owner_a)
    response = owner.post(FETCH_NEW, follow=True)
    assert response.redirect_chain[-1][0] == PAGE
    assert "started in the background" in texts(response)[0]
    run = InvoiceSyncRun.objects.filter(tenant=connected).first()
    assert (run.kind, run.trigger, run.status) == ("new", "manual", "succeeded")
    page = owner.get(PAGE)
    fetch = buttons(page)["Fetch new data"]
    allowed = ActionLimit.next_allowed(connected, ActionLimit.Action.FETCH_NEW)
    assert fetch.disabled.startswith("Ran recently: next allowed")
    assert f"{allowed.astimezone(connected.tz):%H:%M}" in fetch.disabled
    assert not buttons(page)["Fetch unpaid invoices"].disabled
    again = owner.post(FETCH_NEW, follow=True)
    assert "ran recently" in texts(again)[0]
    assert InvoiceSyncRun.objects.filter(tenant=connected, kind="new").count() == 1
    clock.advance(hours=1)
    assert not buttons(owner.get(PAGE))["Fetch new data"].disabled


def test_fetch_unpaid_reads_halos_unpaid_invoices(
    connected, personas, sim, tasks_inline, requests_commit
):
    sync(connected, "initial")
    response = personas.client(personas.owner_a).post(FETCH_UNPAID, follow=True)
    assert "Fetch unpaid invoices started" in texts(response)[0]
    run = InvoiceSyncRun.objects.filter(tenant=connected).first()
    assert (run.kind, run.status) == ("unpaid", "succeeded") and run.halo_requests > 0


def test_secondary_integration_offers_no_fetch(connected, personas):
    settings = InvoiceSyncSettings.for_tenant(connected)
    settings.halo_role = settings.HaloRole.SECONDARY
    settings.save()
    owner = personas.client(personas.owner_a)
    fetch = buttons(owner.get(PAGE))["Fetch new data"]
    assert fetch.disabled.startswith("Not offered: Halo is a secondary integration")
    response = owner.post(FETCH_NEW, follow=True)
    assert "secondary integration" in texts(response)[0]
    assert not InvoiceSyncRun.objects.exists()


def test_register_webhook_in_halo_from_the_page(connected, personas, sim):
    owner = personas.client(personas.owner_a)
    assert buttons(owner.get(PAGE))["Register webhook in Halo"]
    response = owner.post(REGISTER, follow=True)
    assert "webhook registered in Halo" in texts(response)[0]
    [hook] = sim.control.state("Webhook")
    settings = InvoiceSyncSettings.objects.get(tenant=connected)
    assert settings.webhook_halo_id == str(hook["id"])
    assert hook["basic_username"] == settings.webhook_username
    page = owner.get(PAGE)
    assert page.context["webhook"]["registered"]
    assert "Re-register webhook in Halo" in buttons(page)


def test_without_a_connection_the_buttons_say_why(personas):
    owner = personas.client(personas.owner_a)
    page = owner.get(PAGE)
    assert "No active Halo connection" in page.context["no_connection"]
    assert all(b.disabled for b in page.context["buttons"])
    response = owner.post(REGISTER, follow=True)
    assert "no active Halo connection" in texts(response)[0]


def test_viewer_is_refused_every_button(connected, personas, sim):
    viewer = personas.client(personas.viewer_a)
    page = viewer.get(PAGE)
    assert page.status_code == 200 and not page.context["can_edit"]
    assert FETCH_NEW not in page.content.decode()
    for url in (FETCH_NEW, FETCH_UNPAID, REGISTER):
        assert viewer.post(url).status_code == 403
    assert not ActionLimit.objects.exists() and not sim.control.state("Webhook")


def test_another_tenant_sees_its_own_job_only(connected, personas, sim):
    sync(connected, "initial")
    page = personas.client(personas.owner_b).get(PAGE)
    assert page.status_code == 200 and list(page.context["runs"]) == []
    assert connected.slug not in page.content.decode()
    # B's buttons act for B: no connection there, nothing of A's is touched.
    response = personas.client(personas.owner_b).post(FETCH_NEW, follow=True)
    assert "no active Halo connection" in texts(response)[0]
    assert not ActionLimit.objects.filter(tenant=connected).exists()


def test_the_page_only_answers_get(personas):
    assert personas.client(personas.owner_a).post(PAGE).status_code == 405
    assert personas.client(personas.owner_a).get(FETCH_NEW).status_code == 405


def test_all_tenants_asks_to_pick_one_and_acts_for_none(personas, sim):
    from django.contrib.auth.models import User

    from portal.access import ALL_TENANTS, SESSION_KEY

    root = User.objects.create_superuser("root", "root@example.com", "x")
    client = personas.client(root)
    session = client.session
    session[SESSION_KEY] = ALL_TENANTS
    session.save()
    for name in ("job_billing_sync", "job_invoice_sync", "job_payments"):
        page = client.get(reverse(f"admin:{name}"))
        assert page.status_code == 200
        assert "Choose a tenant in the switcher" in page.content.decode()
    assert client.post(FETCH_NEW).status_code == 403
    assert client.post(REGISTER).status_code == 403
