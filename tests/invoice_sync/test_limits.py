"""Staff may fetch new data at most hourly and unpaid invoices at most every 12 hours,
per tenant, however many admins and workers there are; time is the test's to move."""

import pytest
from django.test import TestCase
from django.urls import reverse

from integrations.invoice_sync.models import ActionLimit, InvoiceSyncRun, InvoiceSyncSettings
from portal.models import Membership
from tests.conftest import make_staff
from tests.halo.conftest import make_connection

CHANGELIST = "admin:invoice_sync_invoicesyncsettings_changelist"


def act(client, settings_row, action):
    """Run an admin action; what it queues is sent as the request's transaction commits."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            reverse(CHANGELIST),
            {"action": action, "_selected_action": [settings_row.pk]},
            follow=True,
        )
    return [str(message) for message in response.context["messages"]]


def manual_runs(tenant, kind):
    return InvoiceSyncRun.objects.filter(
        tenant=tenant, kind=kind, trigger="manual", status="succeeded"
    ).count()


@pytest.mark.parametrize(
    ("action", "hours"),
    [(ActionLimit.Action.FETCH_NEW, 1), (ActionLimit.Action.FETCH_UNPAID, 12)],
    ids=["fetch-new-hourly", "fetch-unpaid-12-hours"],
)
def test_manual_fetch_is_limited_per_tenant(personas, sim, clock, tasks_inline, action, hours):
    tenant_a, tenant_b = personas.tenant_a, personas.tenant_b
    for tenant in (tenant_a, tenant_b):
        make_connection(sim, tenant)
    settings_a = InvoiceSyncSettings.for_tenant(tenant_a)
    settings_b = InvoiceSyncSettings.for_tenant(tenant_b)
    name = f"fetch_{action}"
    owner_a = personas.client(personas.owner_a)

    [message] = act(owner_a, settings_a, name)
    assert "started in the background" in message
    assert manual_runs(tenant_a, action) == 1

    # Another admin of the same tenant, just before the interval is up, is refused.
    other_admin = personas.client(make_staff("admin-a2", tenant_a, Membership.Role.ADMIN))
    clock.advance(hours=hours, seconds=-60)
    [message] = act(other_admin, settings_a, name)
    assert "ran recently. It can run again from" in message
    assert manual_runs(tenant_a, action) == 1
    assert "Next allowed" in owner_a.get(reverse(CHANGELIST), follow=True).content.decode()

    # The other tenant's limit is its own.
    [message] = act(personas.client(personas.owner_b), settings_b, name)
    assert "started in the background" in message

    clock.advance(seconds=61)
    [message] = act(owner_a, settings_a, name)
    assert "started in the background" in message
    assert manual_runs(tenant_a, action) == 2


def test_a_claim_is_taken_once(personas, clock):
    tenant = personas.tenant_a
    allowed, next_allowed = ActionLimit.claim(tenant, ActionLimit.Action.FETCH_NEW)
    assert allowed
    assert ActionLimit.claim(tenant, ActionLimit.Action.FETCH_NEW) == (False, next_allowed)
    assert ActionLimit.next_allowed(tenant, ActionLimit.Action.FETCH_NEW) == next_allowed
    # The limits of the two actions are separate.
    assert ActionLimit.claim(tenant, ActionLimit.Action.FETCH_UNPAID)[0]
    clock.advance(hours=1)
    assert ActionLimit.claim(tenant, ActionLimit.Action.FETCH_NEW)[0]
    assert ActionLimit.next_allowed(tenant, ActionLimit.Action.FETCH_UNPAID) is not None


def test_secondary_integration_offers_no_manual_fetch(personas):
    InvoiceSyncSettings.objects.create(tenant=personas.tenant_a, halo_role="secondary")
    page = personas.client(personas.owner_a).get(reverse(CHANGELIST), follow=True)
    actions = dict(page.context["singleton_actions"])  # the list's actions, as buttons
    assert "register_webhook" in actions
    assert "fetch_new" not in actions and "fetch_unpaid" not in actions
    assert "Not offered (secondary integration)" in page.content.decode()


def test_viewer_cannot_start_anything(personas):
    settings_row = InvoiceSyncSettings.for_tenant(personas.tenant_a)
    viewer = personas.client(personas.viewer_a)
    page = viewer.get(reverse(CHANGELIST), follow=True)
    assert page.status_code == 200 and page.context["singleton_actions"] == []
    viewer.post(reverse(CHANGELIST), {"action": "fetch_new", "_selected_action": [settings_row.pk]})
    assert not ActionLimit.objects.exists()


def test_a_failed_manual_fetch_can_be_started_again_at_once(personas, sim, tasks_inline):
    tenant = personas.tenant_a
    make_connection(sim, tenant)
    settings_row = InvoiceSyncSettings.for_tenant(tenant)
    owner = personas.client(personas.owner_a)
    sim.control.add_fault("500", path="Invoice", method="GET", times=10_000)

    [message] = act(owner, settings_row, "fetch_new")

    assert "started in the background" in message
    assert InvoiceSyncRun.objects.get(tenant=tenant, trigger="manual").status == "error"
    assert ActionLimit.next_allowed(tenant, ActionLimit.Action.FETCH_NEW) is None
    sim.control.clear_faults()
    [message] = act(owner, settings_row, "fetch_new")
    assert "started in the background" in message
    assert manual_runs(tenant, ActionLimit.Action.FETCH_NEW) == 1
    # This one succeeded: its slot is kept.
    [message] = act(owner, settings_row, "fetch_new")
    assert "ran recently" in message
