"""The three syncs of a tenant's Halo clients and invoices, and the run around them.

Invoices are read as a *feed* in Halo's `last_modified` order from the tenant's cursor (see
`SyncState`), starting `OVERLAP` before it so writes Halo commits late are still seen. After
every page is stored the query starts again from the newest time on it, instead of asking
for page 2: an invoice changed mid-sync moves to the end of Halo's order, which would shift
later pages and skip a record under page numbers, but can never hide one behind a cursor.
Only records sharing one timestamp beyond a page (bulk imports) are paged through.

Clients carry no change time in Halo (halo-api.md §4), so their cursor is when the last
complete read of changed clients began, by Halo's own clock (its `Date` header): the next
read asks for `lastupdatefromdate` `OVERLAP` before it. A client changed during a read is
read again next time; an interrupted read leaves the cursor where it was.

An initial sync is the same walk from no cursor, so a failed one simply carries on from
where its cursor stopped, and "fetch new" is that walk from wherever the last run ended.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from itertools import islice

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import Invoice
from integrations.halo import HaloClient, HaloError, HaloNotFound, HaloUnexpectedResponse
from integrations.invoice_sync.models import InvoiceSyncRun, SyncState
from integrations.invoice_sync.store import Writer, last_modified, to_halo
from integrations.models import HaloConnection
from portal.runs import ClaimLost, keep_alive

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)
#: Halo's `paymentstatuses` of invoices with money still owed: unpaid, overdue, partly paid.
OWED_STATUSES = "0,-1,1"


@dataclass(frozen=True)
class Feed:
    name: str  # a SyncState feed
    read: Callable  # (client, start, cutoff, **paging) -> records in last_modified order
    store: str  # the Writer method storing a page


def _read_invoices(client, start, cutoff, **paging):
    since = {"datesearch": "last_modified", "start_date": to_halo(start)} if start else {}
    if cutoff:
        since["invoicedatestart"] = cutoff.isoformat()
    return client.list_invoices(includelines=True, order="last_modified", **since, **paging)


INVOICES = Feed("invoices", _read_invoices, "invoices")


def _pages(records, size):
    records = iter(records)
    while page := list(islice(records, size)):
        yield page


class InvoiceSync:
    """One tenant's syncs through one HaloClient; counts go to `run`."""

    def __init__(self, tenant, client, run):
        self.tenant, self.client, self.run = tenant, client, run
        self.state = SyncState.for_tenant(tenant)
        self.writer = Writer(tenant, client)
        self.cutoff = self.writer.cutoff
        self.page_size = settings.HALO_PAGE_SIZE

    def initial(self):
        """Everything since the created-since date; resumes an unfinished initial sync."""
        if self.state.initial_completed:
            self.state.restart(self.cutoff)
        self.fetch_new()

    def fetch_new(self):
        """Clients and invoices changed since the last run; until an initial sync has
        completed, this carries it on."""
        if self.state.needs_restart(self.cutoff):
            self.state.restart(self.cutoff)
        first_pass = self.state.initial_completed is None
        if first_pass and self.state.cursor("invoices") is None:
            self._store_all_contracts()
            self.state.synced_from = self.cutoff
            self.state.save(update_fields=["synced_from"])
        cursor = self.state.cursor("clients")
        self._read_clients(cursor and cursor - OVERLAP)
        cursor = self.state.cursor("invoices")
        self._follow(INVOICES, cursor and cursor - OVERLAP)
        if first_pass:
            self.state.complete_initial()

    def fetch_unpaid(self):
        """Re-read what is owed: Halo's list of owed invoices, then each invoice the portal
        holds as owed that the list left out (paid, voided or deleted since); a 404 there
        means deleted in Halo."""
        self._store_all_contracts()
        seen = set()
        cutoff = {"invoicedatestart": self.cutoff.isoformat()} if self.cutoff else {}
        owed = self.client.list_invoices(
            paymentstatuses=OWED_STATUSES, includelines=True, page_size=self.page_size, **cutoff
        )
        for page in _pages(owed, self.page_size):
            self._store("invoices", page)
            seen.update(record.get("id") for record in page)
        held = Invoice.objects.filter(tenant=self.tenant).exclude(halo_id=None).unpaid()
        for halo_id in list(held.values_list("halo_id", flat=True)):
            if halo_id in seen:
                continue
            try:
                record = self.client.get_invoice(halo_id, includedetails=True)
            except HaloNotFound:
                self.writer.mark_deleted([halo_id])
                self._tally()
            else:
                self._store("invoices", [record])

    def _store_all_contracts(self):
        contracts = self.client.list_contracts(includeinactive=True, page_size=self.page_size)
        for page in _pages(contracts, self.page_size):
            self._store("contracts", page)

    def _read_clients(self, start):
        """Store every client Halo changed since `start` (all of them without one), then
        move the clients cursor to when this read began by Halo's clock."""
        since = {"lastupdatefromdate": to_halo(start)} if start else {}
        began = None
        clients = self.client.list_clients(includeinactive=True, page_size=self.page_size, **since)
        for page in _pages(clients, self.page_size):
            began = began or self.client.stats.halo_time or timezone.now()
            self._store("customers", page)
        began = began or self.client.stats.halo_time or timezone.now()
        with transaction.atomic():
            self.state.move("clients", began)

    def _follow(self, feed, start):
        """Store every record of `feed` modified at or after `start`, moving its cursor
        with each page committed."""
        size, skip = self.page_size, 0
        while True:
            # Records at exactly `start` already stored are read again (harmless), except
            # whole pages of them: a bulk import shares one time.
            records = feed.read(self.client, start, self.cutoff, page_size=size, page_no=skip + 1)
            for page in _pages(records, size):
                stamps = [stamp for stamp in map(last_modified, page) if stamp]
                if stamps != sorted(stamps):
                    raise HaloUnexpectedResponse(
                        "records not in last_modified order (order=last_modified ignored?), "
                        "so the sync cannot tell what it has read",
                        attempted=f"list changed {feed.name}",
                    )
                newest = stamps[-1] if stamps else None
                moved = newest is not None and (start is None or newest > start)
                if moved:
                    start, skip = newest, int(all(last_modified(r) == newest for r in page))
                self._store(feed.store, page, then=partial(self.state.move, feed.name, start))
                if len(page) < size:
                    return
                if moved:
                    break  # ask again from the new cursor
            else:
                return

    def _store(self, method, page, then=None):
        """Store a page in one transaction (with `then`, e.g. moving the cursor); what the
        page refers to and the portal lacks is read from Halo first, outside it."""
        self.writer.prepare(page)
        with transaction.atomic():
            getattr(self.writer, method)(page)
            if then:
                then()
        self._tally()

    def _tally(self):
        self.run.pages += 1
        self.run.add(self.writer.counts)
        self.writer.counts.clear()
        self.run.halo_requests = self.client.stats.requests
        self.run.beat(**{name: getattr(self.run, name) for name in InvoiceSyncRun.COUNTERS})


def run_sync(tenant, kind, trigger):
    """Run one sync of `kind` for `tenant`, claiming the tenant's one active run; the
    InvoiceSyncRun says how it went (skipped while another runs)."""
    run, active = InvoiceSyncRun.objects.claim(tenant, kind=kind, trigger=trigger)
    if run is None:
        since = active.started or active.created if active else timezone.now()
        return InvoiceSyncRun.objects.create(
            tenant=tenant,
            kind=kind,
            trigger=trigger,
            status=InvoiceSyncRun.Status.SKIPPED,
            finished=timezone.now(),
            error=f"Another invoice sync of this tenant is running (since {since:%H:%M}).",
        )
    run.start()
    run.failure = None  # the exception that stopped it, for the caller (the ledger retries)
    connection = HaloConnection.objects.for_feature(tenant, "invoice_sync")
    if connection is None:
        run.finish(
            InvoiceSyncRun.Status.ERROR,
            error="No active Halo connection with invoice sync switched on: add one under Halo "
            "connections.",
        )
        return run
    client = HaloClient(connection)
    sync = InvoiceSync(tenant, client, run)
    status, error = InvoiceSyncRun.Status.SUCCEEDED, ""
    try:
        with keep_alive(run):
            {"initial": sync.initial, "new": sync.fetch_new, "unpaid": sync.fetch_unpaid}[kind]()
    except ClaimLost:
        log.warning("Invoice sync run %s lost its claim; another run took over", run.pk)
        return run
    except HaloError as exc:
        status, error = InvoiceSyncRun.Status.ERROR, str(exc)
        run.failure = exc
    except Exception as exc:
        log.exception("Invoice sync %s of %s failed", kind, tenant.slug)
        run.failure = exc
        status, error = (
            InvoiceSyncRun.Status.ERROR,
            f"Unexpected error: {type(exc).__name__}: {exc}",
        )
    try:
        run.finish(status, error=error, halo_requests=client.stats.requests)
    except ClaimLost:
        log.warning("Invoice sync run %s lost its claim while finishing", run.pk)
    return run
