"""Demo step: billing sync settings, usage counts, and Halo's lists cached by the worker.

Nothing here calls Halo (the simulator may not run yet when `manage.py demo` does): the
refresh of Halo's clients and items is queued for the worker, so the mapping suggestions
are ready to accept when the admin is opened.
"""

from integrations.billing_sync import tasks
from integrations.billing_sync.models import BillingSyncSettings, UsageSubmission
from portal import demo
from portal.demo import register
from portal.jobs import enqueue

DEMO_USAGE_KEY = "demo-usage"


@register
def billing_sync(context):
    tenant = context.tenant
    BillingSyncSettings.objects.get_or_create(
        tenant=tenant,
        defaults={
            "schedule": BillingSyncSettings.Schedule.DAILY,
            "schedule_hour": 2,
            "hold_percent": 100,
            "hold_units": 50,
        },
    )
    refs = [ref for _, ref in demo.ORGANISATIONS]
    skus = [sku for _, sku, _ in demo.PRODUCTS]
    organisations = sorted(
        tenant.organisations.filter(external_ref__in=refs), key=lambda o: refs.index(o.external_ref)
    )
    products = sorted(tenant.products.filter(sku__in=skus), key=lambda p: skus.index(p.sku))
    rows = [
        (organisation, product, 1 + (i * 7 + j * 5) % 20)
        for i, organisation in enumerate(organisations)
        for j, product in enumerate(products)
        if (i + j) % 3  # not every customer uses every product
    ]
    # The key makes this a no-op on later runs, keeping counts changed since.
    UsageSubmission.objects.record(
        tenant, rows, source=UsageSubmission.Source.ADMIN, key=DEMO_USAGE_KEY
    )
    enqueue(tasks.refresh_halo, tenant.pk)
    context.notes.append(
        f"Billing sync: {len(rows)} usage counts; Halo clients and items load on the worker. "
        "Accept mapping suggestions, then Sync runs › Preview / Sync now"
    )
