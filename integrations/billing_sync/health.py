"""Admin-home rows: the tenant's last billing sync, and mappings needing attention."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from integrations.billing_sync.models import (
    BillingSyncRun,
    OrganisationMapping,
    ProductMapping,
    UsageCount,
)
from portal.health import HealthRow, provider

RUN_STATES = {
    BillingSyncRun.Status.SUCCEEDED: "ok",
    BillingSyncRun.Status.PREVIEWED: "ok",
    BillingSyncRun.Status.QUEUED: "ok",
    BillingSyncRun.Status.RUNNING: "ok",
    BillingSyncRun.Status.AWAITING_APPROVAL: "warn",
    BillingSyncRun.Status.INTERRUPTED: "warn",
    BillingSyncRun.Status.FAILED: "error",
    BillingSyncRun.Status.ERROR: "error",
}


@provider
def billing_sync(tenant):
    return [_last_run(tenant), _mappings(tenant)]


def _last_run(tenant):
    run = BillingSyncRun.objects.filter(tenant=tenant).exclude(dry_run=True).first()
    if run is None:
        return HealthRow(
            "Last billing sync",
            "idle",
            "Never run: map organisations and products, then Preview or Sync now",
            reverse("admin:billing_sync_billingsyncrun_changelist"),
        )
    moment = run.finished or run.created
    recent = timezone.now() - moment < timedelta(minutes=1)
    when = "just now" if recent else f"{timesince(moment)} ago"
    text = {
        BillingSyncRun.Status.QUEUED: "Queued, waiting for the worker",
        BillingSyncRun.Status.RUNNING: f"Running: {run.phase or 'starting'}",
        BillingSyncRun.Status.FAILED: f"{run.failed} pair(s) failed {when}: {run.summary()}",
        BillingSyncRun.Status.AWAITING_APPROVAL: f"{run.held} pair(s) held for approval {when}",
        BillingSyncRun.Status.ERROR: f"Could not run {when}: {run.error}",
    }.get(run.status, f"{run.get_status_display()} {when}: {run.summary()}")
    url = reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk])
    return HealthRow("Last billing sync", RUN_STATES[run.status], text, url)


def _mappings(tenant):
    orgs = OrganisationMapping.objects.filter(tenant=tenant).select_related("halo_client")
    products = ProductMapping.objects.filter(tenant=tenant).select_related("halo_item")
    broken = sum(1 for m in [*orgs, *products] if m.problem)
    counted = UsageCount.objects.filter(tenant=tenant, quantity__gt=0)
    unmapped_orgs = (
        counted.filter(organisation__active=True, organisation__halo_mapping__isnull=True)
        .values("organisation")
        .distinct()
        .count()
    )
    unmapped_products = (
        counted.filter(product__active=True, product__halo_mapping__isnull=True)
        .values("product")
        .distinct()
        .count()
    )
    problems = [
        text
        for text in (
            f"{broken} broken (inactive or gone in Halo)" if broken else "",
            f"{unmapped_orgs} organisation(s) with usage not mapped" if unmapped_orgs else "",
            f"{unmapped_products} product(s) with usage not mapped" if unmapped_products else "",
        )
        if text
    ]
    url = reverse("admin:billing_sync_organisationmapping_changelist")
    if problems:
        return HealthRow(
            "Billing mappings", "warn" if not broken else "error", "; ".join(problems), url
        )
    if not orgs and not products:
        return HealthRow("Billing mappings", "idle", "None yet: refresh from Halo and map", url)
    return HealthRow(
        "Billing mappings", "ok", f"{len(orgs)} organisations, {len(products)} products mapped", url
    )
