"""The billing sync page: settings, mappings, schedule, runs, and every pair's state in Halo.

The state table is one row per counted organisation/product pair with what the latest real
run did to it (`UsageCount.objects.with_latest_result`), searchable, filterable by outcome
and paginated, in three queries per page whatever the number of pairs.
"""

from django.core.paginator import Paginator
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from integrations.billing_sync import refresh, schedules
from integrations.billing_sync.models import (
    BillingSyncRun,
    BillingSyncSettings,
    OrganisationMapping,
    ProductMapping,
    SyncResult,
    UsageCount,
)
from portal.job_pages import Button, JobPage, Link, when

PAIRS_PER_PAGE = 50
NEVER = "never"  # the outcome filter's value for pairs no real run wrote yet
OUTCOME_FILTERS = [
    ("", "All pairs"),
    (SyncResult.Outcome.FAILED, "Failed"),
    (SyncResult.Outcome.HELD, "Held for approval"),
    (SyncResult.Outcome.SKIPPED, "Not mapped"),
    (SyncResult.Outcome.DONE, "Done"),
    (NEVER, "Never synced"),
]


def change_text(result):
    """'update 20 → 26', 'create 26', 'unchanged 26': a result's action and count."""
    counts = "" if result.new is None else str(result.new)
    if result.previous is not None and result.previous != result.new:
        counts = f"{result.previous} → {counts or '–'}"
    return f"{result.get_action_display().lower()} {counts}".strip()


def broken(record_field):
    return Q(**{f"{record_field}__inactive": True}) | Q(**{f"{record_field}__missing": True})


class BillingSyncPage(JobPage):
    name = "billing_sync"
    route = "billing-sync/"
    title = "Billing sync"
    template = "admin/jobs/billing_sync.html"
    settings_model = BillingSyncSettings

    def context(self, request, tenant):
        settings = BillingSyncSettings.for_tenant(tenant)
        runs = BillingSyncRun.objects.filter(tenant=tenant).select_related("requested_by")
        active = runs.active().first()
        last = runs.filter(dry_run=False).exclude(status__in=BillingSyncRun.ACTIVE).first()
        to_approve = (
            runs.filter(
                status__in=[
                    BillingSyncRun.Status.PREVIEWED,
                    BillingSyncRun.Status.AWAITING_APPROVAL,
                ]
            )
            .filter(pk__gte=last.pk if last else 0)  # a later real run supersedes it
            .first()
        )
        failed = len(SyncResult.objects.failed_pairs(tenant))
        slot = schedules.next_slot(settings, timezone.now())
        run_admin = self.site._registry[BillingSyncRun]
        busy = f"{active} is {active.get_status_display().lower()}." if active else ""
        return {
            "settings": settings,
            "settings_url": reverse(
                "admin:billing_sync_billingsyncsettings_change", args=[settings.pk]
            ),
            "settings_rows": self._settings_rows(settings),
            "schedule": self.model_admin.schedule_text(settings),
            "next_run": when(slot, tenant, "None: the schedule is off (Sync now only)"),
            "mappings": self._mappings(tenant),
            "refreshed": when(settings.halo_refreshed, tenant, "never"),
            "refresh_state": (found := refresh.status(tenant)) and found.describe(tenant),
            "active": active,
            "last": last,
            "last_took": run_admin.took(last) if last else "",
            "to_approve": to_approve,
            "approvable": to_approve.approvable().count() if to_approve else 0,
            "failed_pairs": failed,
            "buttons": [
                Button(
                    "Preview",
                    reverse("admin:billing_sync_billingsyncrun_preview"),
                    disabled=busy,
                    help="Reads Halo and shows exactly what a sync would write; writes nothing.",
                ),
                Button(
                    "Sync now",
                    reverse("admin:billing_sync_billingsyncrun_sync_now"),
                    disabled=busy,
                    primary=True,
                    help="Writes every pair's count to Halo on the worker.",
                ),
                Button(
                    f"Retry {failed} failed pair{'s' if failed != 1 else ''}",
                    reverse("admin:billing_sync_billingsyncrun_retry_failed"),
                    disabled=busy or ("" if failed else "No pair's latest result failed."),
                    help="Writes only the pairs whose latest result failed.",
                ),
            ],
            "pairs": self._pairs(request, tenant),
            "outcome_filters": OUTCOME_FILTERS,
            "links": [
                Link("Sync runs", reverse("admin:billing_sync_billingsyncrun_changelist")),
                Link("Results of every run", reverse("admin:billing_sync_syncresult_changelist")),
                Link("Usage counts", reverse("admin:billing_sync_usagecount_changelist")),
                Link("Import usage from CSV", reverse("admin:billing_sync_usagecount_import")),
                Link("Usage changes", reverse("admin:billing_sync_usagechange_changelist")),
                Link("Halo clients", reverse("admin:billing_sync_haloclientrecord_changelist")),
                Link("Halo items", reverse("admin:billing_sync_haloitemrecord_changelist")),
            ],
        }

    @staticmethod
    def _settings_rows(s):
        holds = " and ".join(
            text
            for text in (
                f"more than {s.hold_percent}%" if s.hold_percent is not None else "",
                f"more than {s.hold_units} units" if s.hold_units is not None else "",
            )
            if text
        )
        return [
            ("Matching field", s.client_match_field),
            ("Removal policy", s.get_removal_policy_display()),
            (
                "Approval",
                "Scheduled runs wait for approval" if s.approval_required else "Not required",
            ),
            ("Hold changes", f"Moving by {holds}" if holds else "Never held"),
            ("Failure emails", "To the owners" if s.email_owners else "Off"),
        ]

    @staticmethod
    def _mappings(tenant):
        """Mapping counts, and what keeps pairs from syncing, with where to fix each."""
        counted = UsageCount.objects.filter(tenant=tenant, quantity__gt=0)
        orgs = OrganisationMapping.objects.filter(tenant=tenant)
        products = ProductMapping.objects.filter(tenant=tenant)
        org_list = reverse("admin:billing_sync_organisationmapping_changelist")
        product_list = reverse("admin:billing_sync_productmapping_changelist")
        return {
            "organisations": orgs.count(),
            "products": products.count(),
            "org_url": org_list,
            "product_url": product_list,
            "problems": [
                Link(f"{n} organisation(s) with usage not mapped", url)
                for n, url in [
                    (
                        counted.filter(
                            organisation__active=True, organisation__halo_mapping__isnull=True
                        )
                        .values("organisation")
                        .distinct()
                        .count(),
                        reverse("admin:billing_sync_organisationmapping_suggestions"),
                    ),
                    (
                        counted.filter(product__active=True, product__halo_mapping__isnull=True)
                        .values("product")
                        .distinct()
                        .count(),
                        reverse("admin:billing_sync_productmapping_suggestions"),
                    ),
                ]
                if n
            ]
            + [
                Link(
                    f"{n} broken {kind} mapping(s) (inactive or gone in Halo)",
                    f"{url}?status=broken",
                )
                for n, kind, url in [
                    (orgs.filter(broken("halo_client")).count(), "organisation", org_list),
                    (products.filter(broken("halo_item")).count(), "product", product_list),
                ]
                if n
            ],
        }

    @staticmethod
    def _pairs(request, tenant):
        """The page of pairs asked for: search `q`, `outcome` filter, `page`."""
        pairs = (
            UsageCount.objects.filter(tenant=tenant)
            .with_latest_result()
            .select_related(
                "organisation__halo_mapping__halo_client", "product__halo_mapping__halo_item"
            )
            .order_by("organisation__name", "product__sku", "pk")
        )
        search = request.GET.get("q", "").strip()
        if search:
            pairs = pairs.filter(
                Q(organisation__name__icontains=search)
                | Q(organisation__external_ref__icontains=search)
                | Q(product__sku__icontains=search)
                | Q(product__name__icontains=search)
            )
        outcome = request.GET.get("outcome", "")
        if outcome == NEVER:
            pairs = pairs.filter(latest_result_id=None)
        elif outcome in SyncResult.Outcome.values:
            pairs = pairs.filter(latest_outcome=outcome)
        page = Paginator(pairs, PAIRS_PER_PAGE).get_page(request.GET.get("page"))
        latest = SyncResult.objects.select_related("run").in_bulk(
            [count.latest_result_id for count in page if count.latest_result_id]
        )
        for count in page:
            count.latest = result = latest.get(count.latest_result_id)
            if result is not None:
                moment = result.run.finished or result.run.created
                count.when = f"{timezone.localtime(moment, tenant.tz):%d %b %H:%M}"
                count.change = change_text(result)
                # Usage moved since Halo was last written: the next sync writes it.
                written = result.outcome == SyncResult.Outcome.DONE and result.new is not None
                count.behind = written and result.new != count.quantity
        query = request.GET.copy()
        query.pop("page", None)
        return {"page": page, "q": search, "outcome": outcome, "query": query.urlencode()}
