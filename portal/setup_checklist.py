"""The admin home's guided setup: for each job, the steps a partner takes, each worked out
from what the portal really holds (a connection test's result, mappings, usage received,
runs, webhook deliveries, secrets Halo has used, payments customers started).

One function per step, `(tenant) -> Step`; `checklist(tenant)` lists the jobs in order.
A step is *done*, *todo* or *broken* (it was done and stopped working, or failed), says why
in a sentence, and links to the page where it is done. Steps never call Halo: the home
page answers from the database only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import cache, cached_property

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.timesince import timesince

from billing.invoicing.models import PdfServed
from billing.models import Invoice
from billing.payments.models import HaloOutbox, Payment, PaymentSettings, ProcessorEvent
from integrations.billing_sync.models import (
    BillingSyncRun,
    BillingSyncSettings,
    HaloClientRecord,
    HaloItemRecord,
    OrganisationMapping,
    ProductMapping,
    UsageCount,
    UsageSubmission,
)
from integrations.invoice_sync.models import (
    InvoiceSyncRun,
    InvoiceSyncSettings,
    SyncState,
    WebhookDelivery,
)
from integrations.models import HaloConnection
from portal.models import ApiToken, Tenant


class State(StrEnum):
    DONE = "done"
    TODO = "todo"
    BROKEN = "broken"


@dataclass(frozen=True)
class Step:
    title: str
    state: State
    detail: str
    url: str
    optional: bool = False

    @property
    def done(self) -> bool:
        return self.state == State.DONE

    @property
    def label(self) -> str:
        """The state in words, for screen readers and tests of what the page says."""
        return {State.DONE: "Done", State.TODO: "To do", State.BROKEN: "Needs attention"}[
            self.state
        ]


@dataclass(frozen=True)
class Job:
    key: str
    title: str
    url: str
    steps: list[Step] = field(default_factory=list)

    @property
    def required(self) -> list[Step]:
        return [step for step in self.steps if not step.optional]

    @property
    def done_count(self) -> int:
        return sum(step.done for step in self.required)

    @property
    def complete(self) -> bool:
        return all(step.done for step in self.required)

    @property
    def broken(self) -> bool:
        return any(step.state == State.BROKEN for step in self.steps)

    @property
    def next_step(self) -> Step | None:
        """What to do next: the first step in order that is not done (optional ones last)."""
        for step in [*self.required, *self.steps]:
            if not step.done:
                return step
        return None

    def after(self, step: Step) -> Step | None:
        """The step that follows `step` and is not done yet (the pointer on its page)."""
        later = self.steps[self.steps.index(step) + 1 :]
        return next((s for s in later if not s.done), None)


def url(name: str, *args, fallback: str = "", query: str = "") -> str:
    """`reverse(name)`, or `fallback`'s URL while that page does not exist yet (the job
    pages), with `query` appended."""
    try:
        found = reverse(name, args=args)
    except NoReverseMatch:
        found = reverse(fallback) if fallback else reverse("admin:index")
    return found + (f"?{query}" if query else "")


def ago(moment) -> str:
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"


def saved_by_staff(row) -> bool:
    """Whether someone saved this settings row in the admin (rows made with defaults on
    first use are not a choice anyone made)."""
    if row is None or row.pk is None:
        return False
    return LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(type(row)),
        object_id=str(row.pk),
        action_flag__in=[ADDITION, CHANGE],
    ).exists()


# -- billing sync ---------------------------------------------------------------------------


def _connection(tenant: Tenant) -> HaloConnection | None:
    return HaloConnection.objects.active(tenant)


def halo_connected(tenant: Tenant, feature: str = "billing_sync") -> Step:
    title = "Connect Halo"
    connection = _connection(tenant)
    if connection is None:
        add = reverse("admin:integrations_haloconnection_add")
        return Step(
            title,
            State.TODO,
            "Add your Halo API application: its address, client ID and secret.",
            add,
        )
    change = reverse("admin:integrations_haloconnection_change", args=[connection.pk])
    if not connection.client_secret_encrypted:
        return Step(title, State.TODO, "The connection has no client secret yet.", change)
    if refusal := connection.secret_refusal():
        return Step(title, State.BROKEN, f"The secret cannot be used: {refusal}", change)
    if not getattr(connection, feature):
        return Step(
            title,
            State.TODO,
            f"Switch {feature.replace('_', ' ')} on for the connection “{connection.name}”.",
            change,
        )
    return Step(title, State.DONE, f"{connection.name}: {connection.resource_url}", change)


def connection_tested(tenant: Tenant) -> Step:
    title = "Test the connection"
    connection = _connection(tenant)
    if connection is None:
        return Step(
            title,
            State.TODO,
            "Connect Halo first.",
            reverse("admin:integrations_haloconnection_add"),
        )
    change = reverse("admin:integrations_haloconnection_change", args=[connection.pk])
    if connection.tested_at is None:
        return Step(
            title,
            State.TODO,
            "Press Test connection: it checks every permission the features you switched on need.",
            change,
        )
    when = ago(connection.tested_at)
    if connection.test_status != HaloConnection.TestStatus.OK:
        summary = Truncator(connection.test_summary).chars(200)
        return Step(title, State.BROKEN, f"Failed {when}: {summary}", change)
    return Step(title, State.DONE, f"Working, tested {when}.", change)


def _mapped(tenant, *, title, subjects, mappings, records, noun, halo_noun, admin_name):
    """Organisations or products: every active one with usage mapped, none broken."""
    changelist = reverse(f"admin:billing_sync_{admin_name}_changelist")
    if not subjects.exists():
        add = reverse(f"admin:portal_{noun}_add")
        return Step(title, State.TODO, f"No {noun}s yet: add them (or send usage).", add)
    if not records.exists() and not mappings.exists():
        return Step(
            title,
            State.TODO,
            f"Refresh from Halo to fetch your Halo {halo_noun}s, then map.",
            changelist,
        )
    broken = [m for m in mappings if m.problem]
    if broken:
        return Step(
            title,
            State.BROKEN,
            f"{len(broken)} mapping(s) point at {halo_noun}s inactive or gone in Halo, "
            f"e.g. {broken[0]}.",
            changelist,
        )
    active = subjects.filter(active=True)
    mapped = active.filter(halo_mapping__isnull=False).count()
    with_usage = active.filter(usage_counts__quantity__gt=0).distinct()
    unmapped = with_usage.filter(halo_mapping__isnull=True).count()
    text = f"{mapped} of {active.count()} active {noun}s mapped"
    if unmapped or not mapped:
        missing = f"; {unmapped} with usage are not" if unmapped else ""
        return Step(
            title, State.TODO, f"{text}{missing}. Accept the suggestions or pick.", changelist
        )
    return Step(title, State.DONE, f"{text}; every one with usage is.", changelist)


def organisations_mapped(tenant: Tenant) -> Step:
    return _mapped(
        tenant,
        title="Map organisations to Halo clients",
        subjects=tenant.organisations.all(),
        mappings=OrganisationMapping.objects.filter(tenant=tenant).select_related("halo_client"),
        records=HaloClientRecord.objects.filter(tenant=tenant),
        noun="organisation",
        halo_noun="client",
        admin_name="organisationmapping",
    )


def products_mapped(tenant: Tenant) -> Step:
    return _mapped(
        tenant,
        title="Map products to Halo items",
        subjects=tenant.products.all(),
        mappings=ProductMapping.objects.filter(tenant=tenant).select_related("halo_item"),
        records=HaloItemRecord.objects.filter(tenant=tenant),
        noun="product",
        halo_noun="item",
        admin_name="productmapping",
    )


def usage_received(tenant: Tenant) -> Step:
    title = "Send usage"
    counts = reverse("admin:billing_sync_usagecount_changelist")
    last = UsageSubmission.objects.filter(tenant=tenant).order_by("-created").first()
    if last is None:
        if UsageCount.objects.filter(tenant=tenant).exists():
            return Step(title, State.DONE, "Usage counts entered.", counts)
        return Step(
            title,
            State.TODO,
            "None received yet: create a Usage API token for your system, or import a CSV.",
            reverse("admin:billing_sync_usagecount_import"),
        )
    detail = f"Last received {ago(last.created)} ({last.get_source_display()}, {last.rows} rows)."
    if last.source == UsageSubmission.Source.API and last.token_id:
        usable = ApiToken.objects.usable().filter(tenant=tenant, purpose=ApiToken.Purpose.USAGE)
        if not usable.exists():
            tokens = reverse("admin:portal_apitoken_changelist")
            return Step(
                title,
                State.BROKEN,
                f"{detail} No usage token works any more (revoked or expired): your system "
                "cannot send more. Create a new one.",
                tokens,
            )
    return Step(title, State.DONE, detail, counts)


def _runs_url():
    return url("admin:job_billing_sync", fallback="admin:billing_sync_billingsyncrun_changelist")


def sync_previewed(tenant: Tenant) -> Step:
    title = "Preview a sync"
    runs = BillingSyncRun.objects.filter(tenant=tenant)
    last = runs.first()
    if last is not None and last.status == BillingSyncRun.Status.ERROR:
        return Step(title, State.BROKEN, f"The last run could not run: {last.error}", _runs_url())
    seen = runs.filter(
        status__in=[
            BillingSyncRun.Status.PREVIEWED,
            BillingSyncRun.Status.SUCCEEDED,
            BillingSyncRun.Status.FAILED,
            BillingSyncRun.Status.AWAITING_APPROVAL,
        ]
    ).first()
    if seen is None:
        text = "Press Preview: it shows exactly what a sync would write to Halo, writing nothing."
        if last is not None and last.status in (
            BillingSyncRun.Status.QUEUED,
            BillingSyncRun.Status.RUNNING,
        ):
            text = f"{last.get_status_display()}: {last.phase or 'waiting for the worker'}."
        return Step(title, State.TODO, text, _runs_url())
    kind = "Previewed" if seen.dry_run else "Synced"
    summary = seen.summary()
    return Step(
        title, State.DONE, f"{kind} {ago(seen.finished or seen.created)}: {summary}.", _runs_url()
    )


def sync_scheduled(tenant: Tenant) -> Step:
    from integrations.billing_sync.schedules import next_slot

    title = "Schedule the sync"
    form = reverse("admin:billing_sync_billingsyncsettings_changelist")
    settings = BillingSyncSettings.objects.filter(tenant=tenant).select_related("tenant").first()
    if settings is None or settings.schedule == BillingSyncSettings.Schedule.OFF:
        return Step(
            title, State.TODO, "Off: choose daily or monthly in the billing sync settings.", form
        )
    last = BillingSyncRun.objects.filter(tenant=tenant, trigger=BillingSyncRun.Trigger.SCHEDULE)
    last = last.exclude(status__in=[BillingSyncRun.Status.QUEUED, BillingSyncRun.Status.RUNNING])
    last = last.first()
    if last is not None and last.status in (
        BillingSyncRun.Status.ERROR,
        BillingSyncRun.Status.FAILED,
    ):
        return Step(
            title,
            State.BROKEN,
            f"The last scheduled sync, {ago(last.created)}, {last.get_status_display().lower()}: "
            f"{last.error or last.summary()}.",
            _runs_url(),
        )
    slot = next_slot(settings, timezone.now())
    when = f"{timezone.localtime(slot, tenant.tz):%d %b %Y %H:%M} ({tenant.time_zone})"
    return Step(title, State.DONE, f"{settings.get_schedule_display()}: next {when}.", form)


# -- invoice sync ---------------------------------------------------------------------------


def invoice_sync_settings(tenant: Tenant) -> Step:
    title = "Choose what to sync"
    form = reverse("admin:invoice_sync_invoicesyncsettings_changelist")
    if HaloConnection.objects.for_feature(tenant, "invoice_sync") is None:
        connection = halo_connected(tenant, "invoice_sync")
        return Step(title, State.TODO, f"First: {connection.detail}", connection.url)
    settings = InvoiceSyncSettings.objects.filter(tenant=tenant).first()
    state = SyncState.objects.filter(tenant=tenant).first()
    if not saved_by_staff(settings) and not (state and state.initial_completed):
        return Step(
            title,
            State.TODO,
            "Check the invoice number customers see, the start date and Halo's role, then save.",
            form,
        )
    settings = settings or InvoiceSyncSettings(tenant=tenant)  # synced with the defaults
    since = f"since {settings.created_since:%d %b %Y}" if settings.created_since else "all dates"
    return Step(
        title, State.DONE, f"{settings.get_number_field_display()}; invoices {since}.", form
    )


def _invoice_job_url():
    return url(
        "admin:job_invoice_sync", fallback="admin:invoice_sync_invoicesyncsettings_changelist"
    )


def initial_sync(tenant: Tenant) -> Step:
    title = "Run the initial sync"
    state = SyncState.objects.filter(tenant=tenant).first()
    if state is not None and state.initial_completed:
        invoices = Invoice.objects.filter(tenant=tenant, source=Invoice.Source.HALO).count()
        return Step(
            title,
            State.DONE,
            f"Completed {ago(state.initial_completed)}; {invoices} invoices from Halo.",
            _invoice_job_url(),
        )
    run = InvoiceSyncRun.objects.filter(tenant=tenant).first()
    if run is not None and run.status == InvoiceSyncRun.Status.ERROR:
        return Step(
            title,
            State.BROKEN,
            f"Stopped {ago(run.finished or run.created)}: {Truncator(run.error).chars(200)} "
            "It resumes where it stopped.",
            _invoice_job_url(),
        )
    if run is not None and run.status in (
        InvoiceSyncRun.Status.QUEUED,
        InvoiceSyncRun.Status.RUNNING,
    ):
        return Step(
            title,
            State.TODO,
            f"Under way: {run.invoices_created} invoices so far.",
            _invoice_job_url(),
        )
    return Step(
        title,
        State.TODO,
        "Starts with the hourly schedule; or fetch new data now.",
        _invoice_job_url(),
    )


def webhook_registered(tenant: Tenant) -> Step:
    title = "Register the webhook in Halo"
    form = reverse("admin:invoice_sync_invoicesyncsettings_changelist")
    settings = InvoiceSyncSettings.objects.filter(tenant=tenant).first()
    if settings is None or settings.webhook_registered is None:
        return Step(
            title,
            State.TODO,
            "Register webhook in Halo: invoices then change here within seconds of Halo.",
            form,
        )
    deliveries = WebhookDelivery.objects.filter(tenant=tenant)
    last = deliveries.first()
    registered = f"Registered {ago(settings.webhook_registered)}"
    if last is None:
        return Step(title, State.DONE, f"{registered}; no delivery yet.", form)
    log = reverse("admin:invoice_sync_webhookdelivery_changelist")
    if last.status == WebhookDelivery.Status.FAILED:
        return Step(
            title,
            State.BROKEN,
            f"The last delivery, {ago(last.received)}, failed: {Truncator(last.error).chars(160)}",
            log,
        )
    return Step(title, State.DONE, f"{registered}; last delivery {ago(last.received)}.", form)


# -- invoice PDFs ---------------------------------------------------------------------------


def _pdf_tokens(tenant):
    return ApiToken.objects.filter(tenant=tenant, purpose=ApiToken.Purpose.PDF)


def pdf_secret(tenant: Tenant) -> Step:
    title = "Create the PDF secret"
    usable = _pdf_tokens(tenant).filter(pk__in=ApiToken.objects.usable()).first()
    if usable is None:
        return Step(
            title,
            State.TODO,
            "Create an API token with purpose Invoice PDF API: Halo sends it to fetch PDFs.",
            reverse("admin:portal_apitoken_add") + "?purpose=pdf&name=Halo+PDF+link",
        )
    return Step(
        title,
        State.DONE,
        f"{usable} created {ago(usable.created)}.",
        reverse("admin:portal_apitoken_change", args=[usable.pk]),
    )


def pdf_secret_in_halo(tenant: Tenant) -> Step:
    title = "Paste the PDF link and secret into Halo"
    form = reverse("admin:invoicing_invoicingsettings_changelist")
    tokens = _pdf_tokens(tenant)
    used = tokens.exclude(last_used=None).order_by("-last_used").first()
    served = PdfServed.objects.filter(invoice__tenant=tenant, channel=PdfServed.Channel.API).first()
    if used is None and served is None:
        return Step(
            title,
            State.TODO,
            "The invoicing settings show the URL and header to paste; this ticks when Halo "
            "first fetches a PDF.",
            form,
        )
    if used is not None and used.state in ("revoked", "expired"):
        newer = tokens.filter(pk__in=ApiToken.objects.usable(), last_used__gt=used.last_used)
        if not newer.exists():
            return Step(
                title,
                State.BROKEN,
                f"Halo last used {used}, which is {used.state}: paste the current secret "
                "into Halo.",
                form,
            )
    moment = max(m for m in (used and used.last_used, served and served.last_served) if m)
    return Step(title, State.DONE, f"Halo last fetched a PDF {ago(moment)}.", form)


# -- payments -------------------------------------------------------------------------------


def _payment_settings_url():
    return reverse("admin:payments_paymentsettings_changelist")


def processor_configured(tenant: Tenant) -> Step:
    title = "Choose the card processor"
    settings = PaymentSettings.objects.filter(tenant=tenant).first()
    if settings is None:
        return Step(
            title,
            State.TODO,
            "Open the payment settings, choose Stripe and enter its keys.",
            _payment_settings_url(),
        )
    processor = settings.processor_impl()
    if reason := processor.unavailable_reason():
        return Step(title, State.BROKEN, reason, _payment_settings_url())
    if not processor.takes_real_money:
        return Step(
            title,
            State.TODO,
            "The test processor takes no real money: choose Stripe and enter its keys.",
            _payment_settings_url(),
        )
    mode = "live" if processor.is_live else "test mode (sk_test_ key)"
    event = ProcessorEvent.objects.filter(tenant=tenant).order_by("-pk").first()
    heard = f"last webhook event {ago(event.received)}" if event else "no webhook event yet"
    if event is not None and event.state == ProcessorEvent.State.FAILED:
        return Step(
            title,
            State.BROKEN,
            f"Stripe ({mode}): the last webhook event failed: {event.outcome}",
            reverse("admin:payments_processorevent_changelist"),
        )
    return Step(title, State.DONE, f"Stripe ({mode}), {heard}.", _payment_settings_url())


def payments_on_connection(tenant: Tenant) -> Step:
    title = "Switch payments on for Halo"
    step = halo_connected(tenant, "payments")
    if step.done:
        text = "Payments are recorded in Halo through the connection."
        return Step(title, State.DONE, text, step.url)
    return Step(title, step.state, step.detail, step.url)


def pay_link_in_email(tenant: Tenant) -> Step:
    title = "Put the pay link in Halo's invoice email"
    started = (
        Payment.objects.filter(tenant=tenant, kind=Payment.Kind.PAY_PAGE)
        .filter(invoice__source=Invoice.Source.HALO)
        .order_by("-created")
        .first()
    )
    if started is None:
        return Step(
            title,
            State.TODO,
            "The payment settings show the link to paste into Halo's invoice email template; "
            "this ticks when a customer first starts a payment from it.",
            _payment_settings_url(),
        )
    return Step(
        title,
        State.DONE,
        f"Customers pay from Halo's invoices: the last payment started {ago(started.created)}.",
        reverse("admin:payments_payment_changelist"),
    )


def pay_buttons(tenant: Tenant) -> Step:
    title = "Add pay buttons to Halo invoices"
    settings = PaymentSettings.objects.filter(tenant=tenant).first()
    job = url("admin:job_payments", fallback="admin:payments_paymentsettings_changelist")
    if settings is None or not settings.halo_pay_buttons:
        return Step(
            title,
            State.TODO,
            "Optional: tick Add pay button to Halo invoices, so Halo's portal shows Pay.",
            _payment_settings_url(),
            optional=True,
        )
    failed = HaloOutbox.objects.filter(
        tenant=tenant, kind=HaloOutbox.Kind.PAY_LINK, status=HaloOutbox.Status.FAILED
    )
    if first := failed.first():
        return Step(
            title,
            State.BROKEN,
            f"{failed.count()} pay link(s) could not be written to Halo: "
            f"{Truncator(first.last_error).chars(160)}",
            reverse("admin:payments_halooutbox_changelist"),
            optional=True,
        )
    unpaid = Invoice.objects.filter(tenant=tenant, source=Invoice.Source.HALO).unpaid()
    total, with_link = unpaid.count(), unpaid.exclude(pay_link_url="").count()
    if with_link < total:
        return Step(
            title,
            State.TODO,
            f"{with_link} of {total} unpaid invoices have a pay button: run Add payment links "
            "to open invoices.",
            job,
            optional=True,
        )
    return Step(
        title,
        State.DONE,
        f"Every unpaid invoice ({total}) has a pay button in Halo.",
        job,
        optional=True,
    )


# -- the jobs -------------------------------------------------------------------------------

JOBS = [
    (
        "billing_sync",
        "Billing sync",
        ("admin:job_billing_sync", "admin:billing_sync_billingsyncsettings_changelist"),
        [
            halo_connected,
            connection_tested,
            organisations_mapped,
            products_mapped,
            usage_received,
            sync_previewed,
            sync_scheduled,
        ],
    ),
    (
        "invoice_sync",
        "Invoice sync",
        ("admin:job_invoice_sync", "admin:invoice_sync_invoicesyncsettings_changelist"),
        [invoice_sync_settings, initial_sync, webhook_registered],
    ),
    (
        "pdfs",
        "Invoice PDFs in Halo",
        ("admin:invoicing_invoicingsettings_changelist", ""),
        [pdf_secret, pdf_secret_in_halo],
    ),
    (
        "payments",
        "Payments",
        ("admin:job_payments", "admin:payments_paymentsettings_changelist"),
        [processor_configured, payments_on_connection, pay_link_in_email, pay_buttons],
    ),
]


def checklist(tenant: Tenant) -> list[Job]:
    return [
        Job(key, title, url(page, fallback=fallback), [step(tenant) for step in steps])
        for key, title, (page, fallback), steps in JOBS
    ]


# -- the pointer on a step's own page -------------------------------------------------------


@cache
def _model_paths():
    """Admin list paths some step links to: only on these (and job pages) is the
    checklist worked out for the pointer."""
    from django.contrib import admin

    apps = {"integrations", "billing_sync", "invoice_sync", "invoicing", "payments", "portal"}
    lists = [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
        if model._meta.app_label in apps
    ]
    return (*lists, "/admin/jobs/")


@dataclass(frozen=True)
class Pointer:
    job: Job
    step: Step
    number: int
    next: Step | None
    #: The page is the step's own (not the list above it): no link to it needed.
    here: bool


class SetupPointer:
    """For the admin page a setup step links to: that step, its job and the next step to
    do, so every setup page says where the partner is and where to go next. Lazy: worked
    out only when the page's template asks, and only on the pages steps link to."""

    def __init__(self, request):
        self.request = request

    @cached_property
    def found(self) -> Pointer | None:
        request = self.request
        access = getattr(request, "access", None)
        if access is None or not request.user.is_authenticated:
            return None
        tenant = access.tenant
        if tenant is None or not request.path.startswith(_model_paths()):
            return None
        for job in checklist(tenant):
            if job.complete:
                continue
            here = [step for step in job.steps if _leads_here(step.url, request.path)]
            if not here:
                continue
            step = next((s for s in here if not s.done), here[-1])
            own = _leads_here(step.url, request.path, lists_above=False)
            return Pointer(job, step, job.steps.index(step) + 1, job.after(step), own)
        return None


def _leads_here(step_url: str, path: str, lists_above: bool = True) -> bool:
    """A step's link leads to `path`: the same page, a row of the list it links to (a
    settings list opens its one form), or (`lists_above`) the list holding the row it
    links to (where Django goes after a save)."""
    target = step_url.split("?")[0]
    if path == target:
        return True
    if target.count("/") == 4 and path.startswith(target):
        return True
    return lists_above and path.count("/") == 4 and target.startswith(path)
