"""The issue's "done means", clicked through from the demo against the simulator."""

from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from integrations.billing_sync.models import BillingSyncRun, UsageCount
from integrations.billing_sync.tasks import execute_run, refresh_halo
from portal.models import ApiToken, Membership, Tenant
from tests.billing_sync.conftest import World, take_queued
from tests.billing_sync.test_admin import TASK, _client
from tests.conftest import make_staff


def test_demo_map_preview_sync_change_through_the_api_and_sync_again(db, sim):
    call_command("demo", halo_url=sim.base_url)
    call_command("demo", halo_url=sim.base_url)  # idempotent
    tenant = Tenant.objects.get(slug="acme")
    counts = UsageCount.objects.filter(tenant=tenant)
    assert counts.count() == 27 and UsageCount.objects.count() == 27
    staff = _client(make_staff("partner", tenant, Membership.Role.OWNER))
    take_queued("integrations.billing_sync.tasks.refresh_halo")

    def worker():
        for task in take_queued(TASK):
            execute_run(*task["args"])

    # Map: refresh the pickers from Halo (on the worker), accept every suggestion.
    staff.post(reverse("admin:billing_sync_refresh"))
    for task in take_queued("integrations.billing_sync.tasks.refresh_halo"):
        refresh_halo(*task["args"])
    for model in ("organisationmapping", "productmapping"):
        url = reverse(f"admin:billing_sync_{model}_suggestions")
        suggestions = staff.get(url).context["suggestions"]
        staff.post(url, {"accept": [f"{s.subject.pk}:{s.record.pk}" for s in suggestions]})
    # Preview, then Sync now, then look at the results.
    staff.post(reverse("admin:billing_sync_billingsyncrun_preview"))
    worker()
    staff.post(reverse("admin:billing_sync_billingsyncrun_sync_now"))
    worker()
    run = BillingSyncRun.objects.filter(tenant=tenant).first()
    assert run.status == BillingSyncRun.Status.SUCCEEDED and run.counts == {"create": 27}
    page = staff.get(reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk]))
    assert "27 create" in page.content.decode()
    # Change a count through the API, sync again.
    _, token = ApiToken.issue(tenant, ApiToken.Purpose.USAGE, "RMM export")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    changed = counts.select_related("organisation", "product").first()
    body = [
        {
            "organisation": changed.organisation.external_ref,
            "product": changed.product.sku,
            "quantity": changed.quantity + 5,
        }
    ]
    assert api.post("/api/v1/usage", body, format="json").status_code == 201
    staff.post(reverse("admin:billing_sync_billingsyncrun_sync_now"))
    worker()
    again = BillingSyncRun.objects.filter(tenant=tenant).first()
    assert again.counts == {"update": 1, "unchanged": 26}
    world = World(tenant, sim)
    assert world.halo_counts() == world.wanted()  # exactly one licence per pair, new count
    assert world.halo_counts()[(changed.organisation.external_ref, changed.product.sku)] == (
        changed.quantity + 5
    )
