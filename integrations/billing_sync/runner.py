"""Running a sync: claim the tenant, read Halo, plan, write the difference, record results.

Halo requests per run: one list of clients and of items (drift), the licences in pages of
100, and the writes in arrays of 100. Nothing is remembered between runs except in Halo
itself, so a run killed halfway is completed by the next one, which plans afresh.
"""

import logging
import time
from collections import Counter
from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone

from integrations.billing_sync import engine
from integrations.billing_sync.models import (
    BillingSyncRun,
    BillingSyncSettings,
    HaloClientRecord,
    HaloItemRecord,
    OrganisationMapping,
    ProductMapping,
    SyncResult,
    UsageCount,
)
from integrations.halo import HaloBudgetExhausted, HaloClient, HaloError
from integrations.halo.client import LICENCE_KEY, record_key
from portal.jobs import enqueue
from portal.runs import ClaimLost, keep_alive

log = logging.getLogger(__name__)

BATCH = 100  # licences per POST: Halo's (and public clients') usual array size
# Halo answers these for one bad record in an array (a 404 is an update of a licence deleted
# since it was read); the array is split to find it. Other errors concern every record.
RECORD_ERRORS = (400, 404, 409, 422)
# Splitting costs requests: when Halo refuses many records (a systematic 400), stop
# splitting after this many and fail the remaining arrays whole, inside the rate budget.
MAX_SPLITS = 30
# Arrays hit by transient failures are settled and written again up to this many times in
# one run (each round: one read of Halo, then the arrays that did not land).
RETRY_ROUNDS = 3
Action = SyncResult.Action
Outcome = SyncResult.Outcome
Status = BillingSyncRun.Status


class NotConnected(Exception):
    """The tenant has no Halo connection the sync may use."""


def halo_client_for(tenant):
    from integrations.models import HaloConnection

    connection = HaloConnection.objects.for_feature(tenant, "billing_sync")
    if connection is not None:
        return HaloClient(connection)
    if active := HaloConnection.objects.active(tenant):
        raise NotConnected(
            f"Billing sync is switched off on the Halo connection “{active}”: tick "
            "“Billing sync” there to let the portal write licences."
        )
    raise NotConnected(
        "This tenant has no active Halo connection: add one under Halo connections, "
        "test it, then sync again."
    )


def refresh_from_halo(tenant, client):
    """Re-read Halo's clients and items into the pickers' cache; marks drifted mappings."""
    # Whole lists are read in Halo's large lookup pages: a 10,000-client tenant costs 10
    # requests, not 100, of the 300 its window allows.
    size = settings.HALO_LOOKUP_PAGE_SIZE
    clients = HaloClientRecord.refresh(
        tenant, client.list_clients(includeinactive=True, page_size=size)
    )
    items = HaloItemRecord.refresh(tenant, client.list_items(includeinactive=True, page_size=size))
    BillingSyncSettings.for_tenant(tenant)
    BillingSyncSettings.objects.filter(tenant=tenant).update(halo_refreshed=timezone.now())
    return clients, items


def start(tenant, trigger, *, user=None, dry_run=False, background=False):
    """Claim the tenant and run, here or on the worker: `(run, None)` or `(None, active)`."""
    run, active = BillingSyncRun.objects.claim(
        tenant, trigger=trigger, requested_by=user, dry_run=dry_run
    )
    if run is not None:
        launch(run, background)
    return run, active


def approve(run, result_ids=None, *, user=None, background=True):
    """Approve rows of `run` (every approvable one by default) and start a run writing them.

    The new run plans afresh and writes an approved row only if it is still the same row.
    Answers like `start`; `(None, None)` when there was nothing to approve.
    """
    rows = run.approvable()
    if result_ids is not None:
        rows = rows.filter(pk__in=result_ids)
    if not rows.exists():
        return None, None
    new, active = BillingSyncRun.objects.claim(
        run.tenant, trigger=BillingSyncRun.Trigger.APPROVAL, requested_by=user, approves=run
    )
    if new is not None:
        run.results.update(approved=False)
        rows.update(approved=True)
        launch(new, background)
    return new, active


def retry_failed(tenant, *, user=None, background=True):
    """Start a run that writes only the pairs whose latest result failed (the rest keep
    their results). Answers like `start`; `(None, None)` when no pair's latest result
    failed."""
    if not SyncResult.objects.failed_pairs(tenant):
        return None, None
    return start(tenant, BillingSyncRun.Trigger.RETRY, user=user, background=background)


def launch(run, background):
    if not background:
        execute(run)
        return
    from integrations.billing_sync import tasks  # tasks import this module

    def could_not_queue(error):
        BillingSyncRun.objects.filter(pk=run.pk).update(
            status=Status.ERROR, finished=timezone.now(), error=f"Could not queue the run: {error}"
        )

    enqueue(
        tasks.execute_run,
        run.pk,
        name=f"billing sync {run.tenant.slug} #{run.pk}",
        group="billing_sync",
        on_error=could_not_queue,
    )
    run.refresh_from_db(fields=["status", "finished", "error"])  # the caller shows it


def execute(run, *, notify=True, resume=None):
    """Run a claimed run to its end, or until Halo's rate window is spent. Halo failures end
    up in the results, never raised; the exception that stopped the run is left on
    `run.failure` for the caller (the ledger retries transient ones), and a paused run's
    `(when to continue, checkpoint)` on `run.paused` (`resume` it then), and on
    `run.failed_transiently` whether some pair failed on a transient Halo error (not one
    Halo refused, nor a broken mapping: another attempt fails those the same). `notify=False`:
    the caller tells the owners (once per incident, not once per attempt)."""
    work = Runner(run, notify=notify, resume=resume)
    work.execute()
    run.paused = work.paused
    run.failed_transiently = any(
        row.outcome == Outcome.FAILED and row.error is not None for row in work.rows
    )
    return run


class Runner:
    def __init__(self, run, *, notify=True, resume=None):
        self.run = run
        self.run.failure = None
        self.notify = notify
        self.tenant = run.tenant
        self.settings = BillingSyncSettings.for_tenant(self.tenant)
        self.client = self.rules = None
        self.rows = []
        self.splits_left = MAX_SPLITS
        self.unknown = []  # written rows whose licence id Halo did not answer yet
        self.resume = resume  # a paused run's checkpoint: the rows it still had to write
        self.paused = None  # (when to continue, checkpoint) once Halo's window is spent
        self._known = None  # (organisation by Halo client id, product by SKU), see _subjects

    def execute(self):
        if not self.run.start():
            log.info("Billing sync run %s was taken over before it started", self.run.pk)
            return
        error = ""
        try:
            with keep_alive(self.run, status=Status.RUNNING):
                try:
                    status = self._sync()
                except HaloBudgetExhausted as spent:
                    self._pause(spent)  # still beating: recording the done rows takes time
                    return
        except ClaimLost:
            log.warning("Billing sync run %s lost its claim; another run took over", self.run.pk)
            return
        except (HaloError, NotConnected) as exc:
            status, error = Status.ERROR, str(exc)
            self.run.failure = exc
        except Exception as exc:
            log.exception("Billing sync run %s crashed", self.run.pk)
            self.run.failure = exc
            status, error = (
                Status.ERROR,
                (
                    "The run stopped on an unexpected error (details are in the worker log). "
                    "Nothing after the error was written; run it again to complete the work."
                ),
            )
        try:
            self._finish(status, error)
        except ClaimLost:
            log.warning("Billing sync run %s lost its claim while finishing", self.run.pk)

    def _sync(self):
        self.client = halo_client_for(self.tenant)
        self.rules = self._rules()
        if self.resume and self.resume.get("rows") is not None:
            return self._continue(self.resume)
        self.rows = engine.decide(self._plan(), self.rules)
        if self.run.trigger == BillingSyncRun.Trigger.RETRY:
            # Planned from all of Halo like any run (so nothing is written twice), but
            # only the pairs that failed last time are written and recorded.
            failed = SyncResult.objects.failed_pairs(self.tenant)
            self.rows = [row for row in self.rows if self._identity(row) in failed]
        if not self.run.dry_run:
            self._write([row for row in self.rows if row.writes and not row.outcome])
        return self._status()

    # -- planning -----------------------------------------------------------------------

    def _plan(self):
        self.run.beat(phase="Reading Halo clients and items")
        refresh_from_halo(self.tenant, self.client)
        self.run.beat(phase="Reading licences in Halo")
        licences = []
        every = self.client.list_licences(
            includeinactive=True, page_size=settings.HALO_LOOKUP_PAGE_SIZE
        )
        for licences_read, licence in enumerate(every, 1):
            licences.append(licence)
            if licences_read % 1000 == 0:
                self.run.beat(phase=f"Reading licences in Halo ({licences_read})")
        self.run.beat(phase="Planning")
        pairs, protected = self._pairs()
        return engine.plan(
            pairs,
            licences,
            default_policy=self.settings.removal_policy,
            protected=protected,
            remembered_policy=self._remembered_policy,
        )

    def _pairs(self):
        """Every counted pair (active organisation and product), and the keys of licences
        whose mapping is broken (left alone until fixed)."""
        org_maps = {
            m.organisation_id: m
            for m in OrganisationMapping.objects.filter(tenant=self.tenant).select_related(
                "halo_client", "organisation"
            )
        }
        product_maps = {
            m.product_id: m
            for m in ProductMapping.objects.filter(tenant=self.tenant).select_related(
                "halo_item", "product"
            )
        }
        counts = UsageCount.objects.filter(
            tenant=self.tenant, organisation__active=True, product__active=True
        ).select_related("organisation", "product")
        pairs = [self._pair(c, org_maps.get(c.organisation_id), product_maps.get(c.product_id))
                 for c in counts]  # fmt: skip
        broken_clients = {m.halo_client.halo_id for m in org_maps.values() if m.problem}
        broken_skus = {m.product.sku.casefold() for m in product_maps.values() if m.problem}
        # Portal licences on clients this tenant neither maps nor wrote to last time belong
        # to someone else (another tenant on the same Halo): never removed by this one.
        ours = {m.halo_client.halo_id for m in org_maps.values()} | self._clients_last_written()
        return (
            pairs,
            lambda key: key[0] in broken_clients or key[1] in broken_skus or key[0] not in ours,
        )

    def _clients_last_written(self):
        """The Halo clients of the latest real run of this tenant that recorded results (so
        an organisation unmapped since still has its licences removed by policy)."""
        last = (
            BillingSyncRun.objects.filter(tenant=self.tenant, dry_run=False, results__isnull=False)
            .exclude(pk=self.run.pk)
            .exclude(trigger=BillingSyncRun.Trigger.RETRY)  # it records only some pairs
            .order_by("-pk")
            .values_list("pk", flat=True)
            .first()
        )
        if last is None:
            return set()
        return set(
            SyncResult.objects.filter(run_id=last)
            .exclude(halo_client_id=None)
            .values_list("halo_client_id", flat=True)
            .distinct()
        )

    def _pair(self, count, org_map, product_map):
        organisation, product = count.organisation, count.product
        unmapped = " ".join(
            text
            for text in (
                "" if org_map else f"{organisation.name} is not mapped to a Halo client.",
                "" if product_map else f"{product} is not mapped to a Halo item.",
            )
            if text
        )
        client = org_map.halo_client if org_map else None
        return engine.Pair(
            organisation_id=organisation.pk,
            organisation_name=organisation.name,
            product_id=product.pk,
            sku=product.sku,
            client_id=client.halo_id if client else None,
            client_name=client.name if client else "",
            licence_name=product_map.halo_item.name if product_map else product.name,
            quantity=count.quantity,
            policy=(
                (org_map and org_map.removal_policy)
                or (product_map and product_map.removal_policy)
                or self.settings.removal_policy
            ),
            problem=(org_map.problem if org_map else "")
            or (product_map.problem if product_map else ""),
            unmapped=f"{unmapped} Map it under Billing sync to sync it." if unmapped else "",
        )

    def _remembered_policy(self, licence_ids):
        """The removal policy each licence's last result applied (its mapping's own)."""
        policies = {}
        for start in range(0, len(licence_ids), 500):
            rows = (
                SyncResult.objects.filter(
                    run__tenant=self.tenant, licence_id__in=licence_ids[start : start + 500]
                )
                .exclude(removal_policy="")
                .order_by("licence_id", "-pk")
                .values_list("licence_id", "removal_policy")
            )
            for licence_id, policy in rows:
                policies.setdefault(licence_id, policy)
        return policies

    def _rules(self):
        approved = None
        if self.run.approves_id:
            approved = {
                row.pair_key: (row.action, row.new)
                for row in self.run.approves.results.filter(approved=True)
            }
        s = self.settings
        return engine.Rules(
            dry_run=self.run.dry_run,
            hold_all=s.approval_required and self.run.trigger == BillingSyncRun.Trigger.SCHEDULE,
            hold_percent=s.hold_percent,
            hold_units=s.hold_units,
            approved=approved,
        )

    # -- writing ------------------------------------------------------------------------

    def _write(self, rows, again=()):
        """Write in arrays. What Halo saved without saying which ids it gave (an answer
        with the last record only) and arrays hit by transient failures (a lost answer
        may still have created) are settled after all arrays, from one read of Halo: the
        ids are looked up, and the failed arrays are re-planned from it and written again,
        so a create that did land is not made twice. Up to `RETRY_ROUNDS` such rounds."""
        self.run.beat(phase="Writing to Halo", done=0, total=len(rows) + len(again))
        unknown = self.unknown  # kept on the runner: a paused run hands it to its continuation
        again = list(again) + self._write_all(rows, unknown)
        for attempt in range(RETRY_ROUNDS + 1):
            if not (again or unknown):
                return
            if again:
                self._pause_before_looking(again, attempt)
            self.run.beat(phase=f"Checking {len(again) + len(unknown)} licences in Halo")
            licences = self._licences_of({row.pair.client_id for row in again + unknown})
            self._identify(unknown, licences)
            unknown.clear()
            if not again:
                return
            if attempt == RETRY_ROUNDS:
                break
            self.run.beat(phase=f"Retrying {len(again)} licences")
            replanned = self._replan(again, licences)
            again = self._write_all([r for r in replanned if r.writes and not r.outcome], unknown)
        for row in again:
            row.outcome = Outcome.FAILED
            row.message = f"Not written, even after retrying: {row.error}"

    def _pause_before_looking(self, rows, attempt):
        """Back off before reading Halo after failed arrays; a request Halo did not answer
        in time may still be working, so give it as long again (its `settle`)."""
        settle = max((getattr(row.error, "settle", 0.0) or 0.0 for row in rows), default=0.0)
        backoff = min(settings.HALO_BACKOFF_CAP, settings.HALO_BACKOFF_BASE * 2**attempt)
        time.sleep(max(settle, backoff))

    def _write_all(self, rows, unknown):
        """Write `rows` in arrays; answers the rows to retry (transient failures) and adds
        to `unknown` the rows Halo saved without echoing their licence id."""
        again = []
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            again += self._write_batch(batch, unknown)
            self.run.beat(done=min(self.run.done + len(batch), self.run.total))
        return again

    def _licences_of(self, client_ids):
        """The licences Halo holds now for `client_ids`, in one planned read."""
        narrowings = [{"client_id": client_id} for client_id in sorted(client_ids)]
        return list(self.client.read_where("SoftwareLicence", narrowings))

    def _identify(self, rows, licences):
        """Give written rows whose id Halo did not answer the id of their licence."""
        index = {record_key(licence, LICENCE_KEY): licence for licence in licences}
        for row in rows:
            found = index.get(record_key(row.payload, LICENCE_KEY))
            if found is None:
                row.outcome = Outcome.FAILED
                row.message = (
                    "Halo accepted this licence but it cannot be found there afterwards; "
                    "the next sync writes it again if it is missing."
                )
            else:
                row.licence_id = found.get("id")

    def _write_batch(self, batch, unknown):
        """Write one array; answers the rows to retry later (transient failures)."""
        try:
            saved = self.client.upsert_licences([row.payload for row in batch], find_later=True)
        except HaloBudgetExhausted:
            raise  # nothing of this array was sent: the run pauses (see `execute`)
        except HaloError as error:
            if error.transient:
                for row in batch:
                    row.error = error
                return batch
            if error.status not in RECORD_ERRORS and error.status is not None:
                raise  # credentials or permissions: every other write would fail the same
            if error.status in RECORD_ERRORS and len(batch) > 1 and self.splits_left:
                self.splits_left -= 1
                half = len(batch) // 2
                return self._write_batch(batch[:half], unknown) + self._write_batch(
                    batch[half:], unknown
                )
            message = str(error)
            if len(batch) > 1:
                message += (
                    f" Halo refused this array of {len(batch)} licences; after many such "
                    "refusals the portal stops trying them one by one, to stay inside Halo's "
                    "rate limit."
                )
            for row in batch:
                row.outcome, row.message = Outcome.FAILED, message
            return []
        for row, record in zip(batch, saved, strict=True):
            row.outcome = Outcome.DONE
            if record is None and not row.licence_id:
                unknown.append(row)  # created; Halo's answer did not say its id
            else:
                row.licence_id = (record or {}).get("id") or row.licence_id
        return []

    def _replan(self, rows, licences):
        """Plan `rows` again from their clients' `licences` as Halo has them now."""
        policies = {row.licence_id: row.policy for row in rows if row.licence_id}
        fresh = {
            id(row.pair): row
            for row in engine.plan(
                [row.pair for row in rows],
                licences,
                protected=lambda key: True,  # other licences of these clients: not now
                remembered_policy=lambda ids: policies,
            )
        }
        engine.decide(list(fresh.values()), self.rules)
        for row in rows:
            if id(row.pair) not in fresh:  # the licence is gone: nothing left to remove
                row.outcome, row.message = Outcome.DONE, "Nothing left to write in Halo."
        position = {id(row.pair): i for i, row in enumerate(self.rows)}
        for row in rows:
            if replacement := fresh.get(id(row.pair)):
                replacement.error = row.error
                if row.action == Action.CREATE and replacement.action == Action.UNCHANGED:
                    replacement.action = Action.CREATE  # it landed; Halo's answer was lost
                    replacement.message = (
                        "Created. Halo's answer was lost; the licence was found in Halo "
                        "afterwards, so it was not sent again."
                    )
                self.rows[position[id(row.pair)]] = replacement
        return list(fresh.values())

    # -- pausing for Halo's rate window ---------------------------------------------------

    def _pause(self, spent):
        """Halo's rolling window is spent: record what is final, keep what is left to write
        (and what must be looked up before anything is re-sent) as the checkpoint, and hand
        the tenant's claim to a continuation at the time the window frees. Nothing sleeps."""
        at = timezone.now() + timedelta(seconds=max(spent.retry_after or 0.0, 1.0))
        unsettled = {id(row) for row in self.unknown}
        unsettled |= {id(row) for row in self.rows if row.writes and not row.outcome and row.error}
        left = [
            row for row in self.rows if id(row) in unsettled or (row.writes and not row.outcome)
        ]
        # Told apart by identity: rows compare field by field, and a membership test per
        # row made pausing a 50,000-pair run quadratic (over ten minutes, heartbeat silent).
        leaving = {id(row) for row in left}
        final = [row for row in self.rows if id(row) not in leaving]
        self._record(final)
        written = sum(1 for row in final if row.writes and row.outcome == Outcome.DONE)
        phase = (
            f"Paused for Halo's rate limit: {written} licence changes written, {len(left)} left; "
            f"continues at {timezone.localtime(at):%H:%M:%S}."
        )
        checkpoint = {
            "run": self.run.pk,
            "rows": None if not self.rows else [_row_state(r, id(r) in unsettled) for r in left],
            "halo_requests": self._requests(),
        }
        self.run.pause(phase)
        self.paused = (at, checkpoint)
        log.info("Billing sync run %s paused until %s (%d rows left)", self.run.pk, at, len(left))

    def _continue(self, checkpoint):
        """Write what a paused run left: first look up the rows whose fate Halo has not told
        (a lost answer may have created them), then the rest; no re-read of the plan."""
        rows = [_row_from_state(state) for state in checkpoint["rows"]]
        self.rows = rows
        unsettled = [
            row for row, state in zip(rows, checkpoint["rows"], strict=True) if state["unsettled"]
        ]
        created = [row for row in unsettled if row.outcome == Outcome.DONE]
        self.unknown.extend(created)
        again = [row for row in unsettled if row.outcome != Outcome.DONE]
        looked_up = {id(row) for row in unsettled}
        pending = [row for row in rows if id(row) not in looked_up]
        self._write(pending, again=again)
        return self._status()

    # -- results ------------------------------------------------------------------------

    def _status(self):
        outcomes = {row.outcome for row in self.rows}
        if self.run.dry_run:
            return Status.PREVIEWED
        if Outcome.FAILED in outcomes:
            return Status.FAILED
        if Outcome.HELD in outcomes:
            return Status.AWAITING_APPROVAL
        return Status.SUCCEEDED

    def _finish(self, status, error=""):
        written = sum(1 for row in self.rows if row.writes and row.outcome == Outcome.DONE)
        if status == Status.ERROR and written:
            # It did run: say what it wrote, never "Could not run".
            to_write = sum(1 for row in self.rows if row.writes)
            status = Status.FAILED
            error = f"Wrote {written} of {to_write} licence changes, then stopped: {error}"
        for row in self.rows:
            if not row.outcome:  # the run stopped before writing it
                row.outcome, row.message = Outcome.FAILED, f"Not written: {error}"
        self._record()
        # Counted from the results, which a paused run recorded in parts.
        counts = Counter(
            action if outcome in (Outcome.DONE, Outcome.PREVIEW) else outcome
            for action, outcome in self.run.results.values_list("action", "outcome")
        )
        self.run.counts = dict(counts)
        calls = self._requests()
        self.run.halo_requests, self.run.halo_calls = sum(calls.values()), calls
        self.run.finish(status, error=error)
        if self.notify:
            notify_owners(self.run, self.settings)

    def _subjects(self, row):
        """The organisation and product a row's result names: its pair's, or for a licence
        no pair claims, those of its Halo client's mapping and its SKU (None when gone)."""
        if self._known is None:
            self._known = (
                {
                    m.halo_client.halo_id: m.organisation
                    for m in OrganisationMapping.objects.filter(tenant=self.tenant).select_related(
                        "halo_client", "organisation"
                    )
                },
                {p.sku.casefold(): p for p in self.tenant.products.all()},
            )
        orgs, products = self._known
        pair = row.pair
        organisation = orgs.get(pair.client_id) if pair.organisation_id is None else None
        product = products.get(pair.sku.casefold()) if pair.product_id is None else None
        return organisation, product

    def _identity(self, row):
        """`(organisation id, product id)` of the row's result (see `_subjects`)."""
        organisation, product = self._subjects(row)
        return (
            row.pair.organisation_id or getattr(organisation, "pk", None),
            row.pair.product_id or getattr(product, "pk", None),
        )

    def _requests(self):
        """Halo requests by endpoint: this runner's, plus those of the run's earlier parts."""
        calls = Counter((self.resume or {}).get("halo_requests") or {})
        if stats := getattr(self.client, "stats", None):
            calls.update(stats.by_endpoint)
            if stats.token_requests:
                calls["POST /token"] += stats.token_requests
        return dict(calls)

    def _record(self, rows=None):
        results = []
        for row in self.rows if rows is None else rows:
            pair = row.pair
            organisation, _ = self._subjects(row)
            organisation_id, product_id = self._identity(row)
            results.append(
                SyncResult(
                    run=self.run,
                    organisation_id=organisation_id,
                    product_id=product_id,
                    organisation_name=organisation.name if organisation else pair.organisation_name,
                    product_sku=pair.sku,
                    halo_client_id=pair.client_id,
                    halo_client_name=pair.client_name,
                    licence_id=row.licence_id,
                    previous=row.previous,
                    new=row.new,
                    action=row.action,
                    outcome=row.outcome,
                    removal_policy=row.policy,
                    message=row.message,
                    approved=row.approved,
                )
            )
        SyncResult.objects.bulk_create(results, batch_size=500)


def _row_state(row, unsettled):
    """A row a paused run still has to write (or look up), as JSON for its checkpoint."""
    return {
        "pair": asdict(row.pair),
        "action": row.action,
        "previous": row.previous,
        "new": row.new,
        "licence_id": row.licence_id,
        "message": row.message,
        "payload": row.payload,
        "policy": row.policy,
        "outcome": row.outcome,
        "approved": row.approved,
        "unsettled": unsettled,
    }


def _row_from_state(state):
    fields = {k: v for k, v in state.items() if k not in ("pair", "unsettled")}
    return engine.Row(pair=engine.Pair(**state["pair"]), **fields)


def notify_owners(run, sync_settings, *, retrying=""):
    """Email the owners about failed or held pairs of a real run (when the tenant wants it);
    `retrying` says when the scheduled slot is tried again."""
    if run.dry_run or not (run.failed or run.held or run.status == Status.ERROR):
        return False
    recipients = run.tenant.owner_emails() if sync_settings.email_owners else []
    if not recipients:
        return False
    url = settings.PORTAL_BASE_URL + reverse(
        "admin:billing_sync_billingsyncrun_change", args=[run.pk]
    )
    problems = [
        text
        for text in (
            f"{run.failed} pair(s) failed" if run.failed else "",
            f"{run.held} pair(s) are held for approval" if run.held else "",
            run.error,
        )
        if text
    ]
    send_mail(
        f"Billing sync for {run.tenant.name}: {run.get_status_display().lower()}",
        f"{run} finished: {'; '.join(problems)}.\n\n"
        + f"{retrying}\n\n" * bool(retrying)
        + f"See what to do for each pair, and approve held ones, at:\n{url}\n",
        None,
        recipients,
        fail_silently=True,
    )
    return True


def notify_slot_given_up(tenant, sync_settings, run, reason):
    """Email the owners that a scheduled billing sync was given up (`reason`, the ledger's
    note), when its run shows no failure of its own: say, it was interrupted each time its
    worker died. Answers whether an email went out (False when nobody is to be told)."""
    recipients = tenant.owner_emails() if sync_settings.email_owners else []
    if not recipients:
        return False
    page = (
        reverse("admin:billing_sync_billingsyncrun_change", args=[run.pk])
        if run is not None
        else reverse("admin:job_billing_sync")
    )
    where = settings.PORTAL_BASE_URL + page
    send_mail(
        f"Billing sync for {tenant.name}: not completed",
        f"Today's scheduled billing sync did not complete. {reason}\n\n"
        + (f"{run}: {run.get_status_display()}. {run.summary()}\n\n" if run else "")
        + "Licences already written stay in Halo; the next run writes the rest. To run it "
        f"now, use Sync now:\n{where}\n",
        None,
        recipients,
        fail_silently=True,
    )
    return True
