"""Billing sync's worker entry points, and its job on the durable run ledger."""

import logging
from datetime import timedelta

from django.utils import timezone

from integrations.billing_sync import refresh, runner, schedules
from integrations.billing_sync.models import BillingSyncRun, BillingSyncSettings
from integrations.halo import HaloError
from portal import ledger

log = logging.getLogger(__name__)

#: A slot that finds another run of the tenant going (Sync now, an approval) waits this long.
BUSY_RETRY = timedelta(minutes=2)


def execute_run(run_id):
    """A run claimed by Sync now, Preview or an approval, executed on the worker. One that
    spends Halo's rate window continues on the ledger when the window frees."""
    run = BillingSyncRun.objects.select_related("tenant").get(pk=run_id)
    runner.execute(run)
    if run.paused:
        at, checkpoint = run.paused
        ledger.continue_later(run.tenant_id, schedules.JOB, at, {**checkpoint, "paused": True})
    return run.status


def run_slot(row):
    """One scheduled billing sync (the ledger's job): succeeded, or retried while the cause
    is transient (Halo 5xx, network, token, rate budget) until the slot's deadline."""
    run = resume = None
    if row.checkpoint.get("paused"):  # a continuation: the paused run goes on where it stopped
        run = BillingSyncRun.objects.filter(
            pk=row.checkpoint["run"], status=BillingSyncRun.Status.QUEUED
        ).first()
        resume = row.checkpoint if run else None
    if run is None:
        run, active = BillingSyncRun.objects.claim(
            row.tenant, trigger=BillingSyncRun.Trigger.SCHEDULE
        )
        if run is None and active is not None and active.pk == row.checkpoint.get("run"):
            # This slot's own run, left by the attempt whose worker died (the ledger gave
            # the slot to this worker): release it now rather than wait for its heartbeat.
            BillingSyncRun.objects.filter(pk=active.pk, status__in=BillingSyncRun.ACTIVE).update(
                status=BillingSyncRun.Status.INTERRUPTED,
                finished=timezone.now(),
                error=BillingSyncRun.STOPPED,
            )
            run, active = BillingSyncRun.objects.claim(
                row.tenant, trigger=BillingSyncRun.Trigger.SCHEDULE
            )
        if run is None:
            raise ledger.RetryLater(f"{active} was still going.", at=timezone.now() + BUSY_RETRY)
    ledger.note(row, run=run.pk)
    runner.execute(run, notify=False, resume=resume)
    if run.paused:
        at, checkpoint = run.paused
        raise ledger.ContinueAt(at, {**checkpoint, "paused": True}, summary=run.phase)
    if resume:
        ledger.note(row, rows=None, paused=False)  # done: the checkpoint's rows are spent
    run.refresh_from_db()
    summary = f"{run}: {run.get_status_display()}. {run.summary()}".strip()
    if run.status == BillingSyncRun.Status.AWAITING_APPROVAL:
        runner.notify_owners(run, BillingSyncSettings.for_tenant(row.tenant))
    if run.status in (BillingSyncRun.Status.SUCCEEDED, BillingSyncRun.Status.AWAITING_APPROVAL):
        return BillingSyncRun.Status.SUCCEEDED, summary
    if _transient(run):
        raise ledger.RetryLater(run.error or summary, summary=summary)
    # A permanent cause (credentials, permissions, no connection): not retried; the ledger
    # tells the owners once (`tell_owners`).
    return run.status, f"{summary} {run.error}".strip()


def _transient(run):
    """Worth trying again: the run stopped on a transient Halo error, or pairs failed after
    the run's own retry rounds (a 5xx storm); the next attempt plans afresh from Halo.
    Pairs Halo refused (400, 422) or whose mapping is broken fail the same next time."""
    failure = getattr(run, "failure", None)
    if isinstance(failure, HaloError):
        return failure.transient
    return (
        run.status == BillingSyncRun.Status.FAILED
        and failure is None
        and getattr(run, "failed_transiently", True)
    )


def tell_owners(row, text):
    """The first failed attempt of a slot emails the owners (one email per incident). An
    attempt with nothing to tell yet (it found the tenant busy, or its run failed nothing)
    answers False and the next failure tells, unless the slot has ended: a slot the ledger
    gave up (say, its worker died three times) always tells, whatever its run shows."""
    sync_settings = BillingSyncSettings.for_tenant(row.tenant)
    run = BillingSyncRun.objects.filter(pk=row.checkpoint.get("run")).first()
    if run is not None and runner.notify_owners(run, sync_settings, retrying=text):
        return True
    if row.status != ledger.RunStatus.ERROR:
        return False
    return runner.notify_slot_given_up(row.tenant, sync_settings, run, text)


def refresh_halo(tenant_id):
    """Fill the mapping pickers from Halo ("Refresh from Halo", and the demo); the lists
    show how it went."""
    return refresh.run(tenant_id)


# A run left running by a worker that died is released by the sweeper, not the next claim.
ledger.release_stale_with_sweep(BillingSyncRun.objects.release_stale)
ledger.register(
    ledger.Job(
        name=schedules.JOB,
        label="Billing sync",
        run=run_slot,
        next_slot=schedules.next_slot,
        subjects=schedules.subjects,
        on_failure=tell_owners,
    )
)
