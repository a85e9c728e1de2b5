"""The durable run ledger: every scheduled job's slots are rows, so no work is ever lost.

Features `register` a `Job`: which tenants it runs for (or the whole fleet), when its
slots fall, and the function that runs one slot. One django-q2 schedule, `tick`, runs
every minute on whichever cluster's scheduler fires it, and:

1. **plans**: for every tenant of every job, the next slot's `ScheduledRun` row exists
   (unique per tenant, job and slot, written with `ignore_conflicts`, so two ticks racing
   write it once). A slot that fell due while everything was down is still a queued row
   when the portal comes back: it runs once, and only the next future slot is planned
   (never one run per missed slot). Planned rows that no longer match the settings (the
   hour changed, the job was switched off) are removed.
2. **sweeps**: a running row whose heartbeat is older than `RUN_STALE_SECONDS` lost its
   worker (SIGKILL, OOM, a machine gone): it is put back to be resumed at once.
3. **dispatches**: due rows are sent to the broker (`work(pk)`). A message the broker loses,
   or a worker prefetched and died with, costs nothing: the row stays due and is sent
   again once the broker's queue has drained (or after `REQUEUE_AFTER` regardless).

A worker claims a due row atomically: `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL,
then a conditional UPDATE (status queued → running), which alone is the claim on SQLite.
While the job runs a thread beats the row's heartbeat (`portal.runs.keep_alive`).

A job that ends on a transient cause raises `RetryLater` and is retried with backoff until
the slot's deadline (the next slot); one that must wait for Halo's rate window raises
`ContinueAt` and is re-queued as a continuation with its checkpoint, not slept on.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.jobs import enqueue
from portal.models import ScheduledRun
from portal.runs import RunStatus, keep_alive

log = logging.getLogger(__name__)

#: A due row sent to the broker this long ago and still unclaimed is sent again, even
#: while the broker's queue is not empty (normally it is re-sent once the queue drains).
REQUEUE_AFTER = timedelta(minutes=15)
#: Retries back off from RETRY_BASE doubling to RETRY_CAP, until the slot's deadline.
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(minutes=30)
#: An unexpected exception (a bug, not a known transient cause) is retried this often, and
#: a slot whose worker died (swept) is resumed this often.
MAX_UNEXPECTED = 3
#: Finished rows of frequent fleet jobs are kept this long, a tenant's for KEEP_TENANT.
KEEP_FLEET = timedelta(days=2)
KEEP_TENANT = timedelta(days=90)
#: At most this many rows are sent to the broker per tick (the rest next minute).
DISPATCH_BATCH = 2000

Subject = Any


def clock() -> datetime:
    """Now. Tests replace it (`monkeypatch.setattr(ledger, "clock", ...)`) to move time."""
    return timezone.now()


class RetryLater(Exception):
    """The slot's work failed for a reason worth retrying (Halo 5xx storm, token, broker)."""

    def __init__(self, reason: str, *, at: datetime | None = None, summary: str = ""):
        super().__init__(reason)
        self.reason, self.at, self.summary = reason, at, summary


class ContinueAt(Exception):
    """The slot's work is not done and continues at `at` (Halo's rate window frees then),
    from `checkpoint`; re-queued as a continuation, not counted as a failed attempt."""

    def __init__(self, at: datetime, checkpoint: dict, summary: str = ""):
        super().__init__(summary)
        self.at, self.checkpoint, self.summary = at, checkpoint, summary


@dataclass(frozen=True)
class Job:
    """A scheduled job. `subjects()` yields `(tenant_id, subject)` per tenant the job runs
    for (`(None, None)` once for a fleet-wide job); `next_slot(subject, after)` is the
    first slot strictly after `after` (aware) or None; `run(row)` does one slot's work and
    answers a summary, or a `(status, summary)` pair, or raises RetryLater/ContinueAt.
    `on_failure(row, error)` is called once per incident (the first failed attempt); it
    answers False when it had nothing to tell yet, and the next failed attempt tells."""

    name: str
    label: str
    run: Callable[[ScheduledRun], Any]
    next_slot: Callable[[Subject, datetime], datetime | None]
    subjects: Callable[[], Iterable[tuple[int | None, Subject]]] = field(
        default=lambda: [(None, None)]
    )
    retry_for: timedelta = timedelta(hours=12)
    on_failure: Callable[[ScheduledRun, str], bool | None] | None = None

    def deadline(self, subject: Subject, slot: datetime) -> datetime:
        following = self.next_slot(subject, slot)
        limit = slot + self.retry_for
        return min(following, limit) if following else limit


_jobs: dict[str, Job] = {}


def register(job: Job) -> Job:
    _jobs[job.name] = job
    return job


def jobs() -> dict[str, Job]:
    return dict(_jobs)


def every(minutes: int) -> Callable[[Subject, datetime], datetime]:
    """Slots every `minutes`, aligned to the epoch (so every process agrees on them)."""
    step = minutes * 60

    def next_slot(subject: Subject, after: datetime) -> datetime:
        seconds = int(after.timestamp()) // step * step + step
        return datetime.fromtimestamp(seconds, UTC)

    return next_slot


def aware_local(naive: datetime, zone: Any) -> datetime:
    """Local wall time → aware. A time skipped by a spring-forward change means the same
    instant an hour later by the new offset (02:00 → 03:00); a repeated time its first."""
    aware = naive.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC).astimezone(zone)


def daily_at(hour: int, zone: Any, after: datetime) -> datetime:
    """The first `hour`:00 local time in `zone` strictly after `after`, in UTC."""
    day = after.astimezone(zone).date()
    while True:
        slot = aware_local(datetime.combine(day, time(hour)), zone)
        if slot > after:
            return slot.astimezone(UTC)
        day += timedelta(days=1)


_process_tokens: dict[int, str] = {}


def worker_name() -> str:
    """Who claimed a run: host and pid, which people read, and a token of this process's
    own, so two processes never share a name (containers often share both a hostname and
    pid 7): a claim's `worker` is what proves the run is still its claimer's (`_mine`)."""
    pid = os.getpid()
    token = _process_tokens.setdefault(pid, secrets.token_hex(3))  # a forked child: its own
    return f"{socket.gethostname()[:100]}:{pid}:{token}"


def pid_of(worker: str) -> int | None:
    """The process id in a `worker_name` (None for a name of another shape)."""
    parts = worker.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


# -- the tick -------------------------------------------------------------------------------


def tick(now: datetime | None = None) -> dict[str, int]:
    """Plan, sweep, dispatch (see the module's docstring). Idempotent; safe to run twice."""
    now = now or clock()
    planned = sum(_plan_safely(job, now) for job in _jobs.values())
    resumed = sweep(now)
    sent = dispatch(now)
    prune(now)
    return {"planned": planned, "resumed": resumed, "sent": sent}


def _plan_safely(job: Job, now: datetime) -> int:
    """One job's planning failing (a bug in its settings, a bad row) must not stop the
    other jobs' planning, nor the sweep and dispatch, fleet-wide: it is logged instead."""
    try:
        with transaction.atomic():
            return plan(job, now)
    except Exception:
        log.exception("Ledger: planning %s failed; the other jobs go on", job.name)
        return 0


def plan(job: Job, now: datetime, *, tenant_id: int | None = None) -> int:
    """Make the next slot's row exist for every subject (or only `tenant_id`'s); drop
    planned rows no longer wanted."""
    wanted: dict[int | None, tuple[datetime, datetime]] = {}
    for subject_tenant, subject in job.subjects():
        if tenant_id is not None and subject_tenant != tenant_id:
            continue
        slot = job.next_slot(subject, now)
        if slot is not None:
            wanted[subject_tenant] = (slot, job.deadline(subject, slot))
    # Only rows planned as slots (not a continuation of its own, `continue_later`, made
    # after this tick's `now` was taken): their not_before is their slot.
    planned = ScheduledRun.objects.filter(
        job=job.name, status=RunStatus.QUEUED, attempts=0, slot__gt=now, not_before=F("slot")
    )
    if tenant_id is not None:
        planned = planned.filter(tenant_id=tenant_id)
    have: set[int | None] = set()
    obsolete: list[int] = []
    for pk, row_tenant, slot in planned.values_list("pk", "tenant_id", "slot"):
        if row_tenant in wanted and wanted[row_tenant][0] == slot:
            have.add(row_tenant)
        else:
            obsolete.append(pk)
    if obsolete:
        ScheduledRun.objects.filter(
            pk__in=obsolete, attempts=0, status=RunStatus.QUEUED, not_before=F("slot")
        ).delete()
    rows = [
        ScheduledRun(
            tenant_id=tenant_id, job=job.name, slot=slot, not_before=slot, deadline=deadline
        )
        for tenant_id, (slot, deadline) in wanted.items()
        if tenant_id not in have
    ]
    ScheduledRun.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return len(rows)


def sweep(now: datetime) -> int:
    """Put back running rows whose worker died, to be resumed now (a slot that took
    `MAX_UNEXPECTED` workers down with it is given up); also release the tenant runs
    (billing, invoice sync) they left running."""
    resumed = 0
    for row in ScheduledRun.objects.stale(now).select_related("tenant"):
        lost = row.checkpoint.get("lost_workers", 0) + 1
        died = (
            f"worker {row.worker or '?'} stopped beating at {row.heartbeat:%H:%M:%S} UTC "
            "(killed or lost)."
        )
        still = ScheduledRun.objects.filter(
            pk=row.pk, status=RunStatus.RUNNING, heartbeat=row.heartbeat
        )
        if lost >= MAX_UNEXPECTED:  # it takes its worker down (out of memory, task timeout)
            note = (
                f"Gave up at {now:%H:%M:%S} UTC: the worker running it stopped {lost} times; "
                f"the last, {died} The next slot runs as usual."
            )
            fields = {"status": RunStatus.ERROR, "finished": now, "worker": "", "error": note}
            if not still.update(**fields):
                continue
            count_finished(row.job, RunStatus.ERROR, row.started, now)
            if (job := _jobs.get(row.job)) is not None:
                row.refresh_from_db()  # `on_failure` sees the slot ended (status error)
                _notify_once(job, row, note)
            continue
        note = f"Resumed at {now:%H:%M:%S} UTC: {died}"
        resumed += still.update(
            status=RunStatus.QUEUED,
            not_before=now,
            queued_at=None,
            worker="",
            error=note,
            checkpoint={**row.checkpoint, "lost_workers": lost},
        )
    for released in _stale_releasers:
        released()
    if resumed:
        log.warning("Ledger: %d run(s) resumed after their worker died", resumed)
    return resumed


_stale_releasers: list[Callable[[], Any]] = []


def release_stale_with_sweep(release: Callable[[], Any]) -> None:
    """Features whose own run rows can be left running by a dead worker register here."""
    _stale_releasers.append(release)


def broker_queue_size() -> int | None:
    try:
        from django_q.brokers import get_broker

        return get_broker().queue_size()
    except Exception:
        log.warning("Ledger: could not read the broker's queue size", exc_info=True)
        return None


def dispatch(now: datetime) -> int:
    """Send due rows nobody has (or whose message was lost) to the broker."""
    waiting = broker_queue_size()
    resend = Q(queued_at__lt=now - REQUEUE_AFTER)
    if waiting == 0:  # nothing waits in the broker: what was sent and is still due was lost
        resend |= Q(queued_at__lt=now - timedelta(seconds=settings.LEDGER_REQUEUE_IDLE_SECONDS))
    due = ScheduledRun.objects.due(now).filter(Q(queued_at__isnull=True) | resend)
    ids = list(due.order_by("not_before", "pk").values_list("pk", flat=True)[:DISPATCH_BATCH])
    if ids:
        ScheduledRun.objects.filter(pk__in=ids).update(queued_at=now)
    for pk in ids:
        enqueue(work, pk, name=f"ledger run {pk}", group="ledger", on_error=_not_sent(pk))
    return len(ids)


def _not_sent(pk: int) -> Callable[[Exception], None]:
    """The broker refused the message (it is down): the next tick sends the row again."""

    def forget(error: Exception) -> None:
        ScheduledRun.objects.filter(pk=pk, status=RunStatus.QUEUED).update(queued_at=None)

    return forget


def prune(now: datetime) -> None:
    fleet = ScheduledRun.objects.finished().filter(tenant__isnull=True, slot__lt=now - KEEP_FLEET)
    fleet.delete()
    ScheduledRun.objects.finished().filter(slot__lt=now - KEEP_TENANT).delete()


# -- the worker -----------------------------------------------------------------------------


def claim(pk: int | None = None, now: datetime | None = None) -> ScheduledRun | None:
    """Take one due row (this one, or the oldest due): running, by this worker."""
    now = now or clock()
    with transaction.atomic():
        candidates = ScheduledRun.objects.due(now)
        if pk is not None:
            candidates = candidates.filter(pk=pk)
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        row = candidates.order_by("not_before", "pk").first()
        if row is None:
            return None
        taken = ScheduledRun.objects.filter(pk=row.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING,
            worker=worker_name(),
            heartbeat=now,
            started=now,
            attempts=F("attempts") + 1,
        )
    if not taken:
        return None
    row.refresh_from_db()
    return row


def work(pk: int | None = None) -> str | None:
    """The broker's task: run row `pk`, or if another worker has it, the oldest due row."""
    row = claim(pk) or claim()
    if row is None:
        return None
    execute(row)
    return row.status


def execute(row: ScheduledRun) -> ScheduledRun:
    job = _jobs.get(row.job)
    if job is None:
        _end(row, RunStatus.ERROR, error=f"No job named {row.job!r} is registered.")
        return row
    try:
        with keep_alive(row, status=RunStatus.RUNNING, worker=row.worker):
            answer = job.run(row)
    except ContinueAt as pause:
        _continue(row, pause)
    except RetryLater as failure:
        _retry(job, row, failure.reason, at=failure.at, summary=failure.summary)
    except Exception as error:
        log.exception("Ledger: %s failed unexpectedly", row)
        reason = f"Unexpected error: {type(error).__name__}: {error}"
        if row.attempts >= MAX_UNEXPECTED:
            _give_up(job, row, reason)
        else:
            _retry(job, row, reason)
    else:
        status, summary = answer if isinstance(answer, tuple) else (RunStatus.SUCCEEDED, answer)
        _end(row, status, summary=str(summary or ""))
        if status in (RunStatus.ERROR, RunStatus.FAILED):  # a permanent cause is an incident
            _notify_once(job, row, "")
    return row


def _mine(row: ScheduledRun):
    """The row while this worker still holds it (a row resumed elsewhere is left alone)."""
    return ScheduledRun.objects.filter(pk=row.pk, status=RunStatus.RUNNING, worker=row.worker)


def _end(row: ScheduledRun, status: str, *, summary: str = "", error: str = "") -> None:
    now = clock()
    fields = {"status": status, "finished": now, "summary": summary, "error": error}
    if _mine(row).update(**fields):
        for name, value in fields.items():
            setattr(row, name, value)
        count_finished(row.job, status, row.started, now)


def count_finished(job: str, status: str, started: datetime | None, finished: datetime) -> None:
    """Count a run that ended, for `/metrics` (`portal.metrics`): fleet-wide counters read
    in one query at scrape time, rather than counting millions of kept rows."""
    from portal import metrics

    metrics.count(metrics.finished_key(job, status))
    if started is not None:
        metrics.count(metrics.timed_key(job))
        millis = max(int((finished - started).total_seconds() * 1000), 0)
        metrics.count(metrics.duration_key(job), millis)


def _continue(row: ScheduledRun, pause: ContinueAt) -> None:
    checkpoint = {**pause.checkpoint, "continuations": row.checkpoint.get("continuations", 0) + 1}
    fields = {
        "status": RunStatus.QUEUED,
        "not_before": pause.at,
        "queued_at": None,
        "worker": "",
        "checkpoint": checkpoint,
        "summary": pause.summary,
        "attempts": F("attempts") - 1,  # waiting for a rate window is not a failed attempt
    }
    if _mine(row).update(**fields):
        row.refresh_from_db()


def retry_at(row: ScheduledRun, now: datetime) -> datetime:
    doublings = min(max(row.attempts - 1, 0), 16)  # past the cap anyway; no overflow
    delay = min(RETRY_CAP, RETRY_BASE * 2**doublings)
    return now + delay


def _retry(
    job: Job, row: ScheduledRun, reason: str, *, at: datetime | None = None, summary: str = ""
) -> None:
    now = clock()
    when = max(at or now, retry_at(row, now))
    if when > row.deadline:
        _give_up(job, row, reason, summary=summary)
        return
    note = f"{reason} Will retry at {timezone.localtime(when):%H:%M}."
    fields = {
        "status": RunStatus.QUEUED,
        "not_before": when,
        "queued_at": None,
        "worker": "",
        "error": note,
        "summary": summary,
    }
    if _mine(row).update(**fields):
        row.refresh_from_db()
        _notify_once(job, row, note)


def _give_up(job: Job, row: ScheduledRun, reason: str, *, summary: str = "") -> None:
    note = f"{reason} Gave up after {row.attempts} attempt(s): the next slot runs as usual."
    _end(row, RunStatus.ERROR, summary=summary, error=note)
    _notify_once(job, row, note)


def _notify_once(job: Job, row: ScheduledRun, text: str) -> None:
    """One email per incident: the first failed attempt of a slot tells the owners."""
    if job.on_failure is None:
        return
    if ScheduledRun.objects.filter(pk=row.pk, notified=False).update(notified=True):
        row.notified = True
        try:
            told = job.on_failure(row, text)
        except Exception:
            log.exception("Ledger: could not tell the owners about %s", row)
        else:
            if told is False:  # e.g. the tenant was busy: no run failed yet, nothing to say
                ScheduledRun.objects.filter(pk=row.pk).update(notified=False)
                row.notified = False


def replan(job_name: str, tenant_id: int) -> None:
    """A tenant's settings changed: plan its next slot now (the tick would within a minute)."""
    plan(_jobs[job_name], clock(), tenant_id=tenant_id)


def continue_later(tenant_id: int | None, job: str, at: datetime, checkpoint: dict) -> ScheduledRun:
    """Work started outside the schedule (Sync now) that must wait for Halo's rate window:
    a ledger row of its own, due at `at`, so it continues even if every worker restarts."""
    now = clock()
    return ScheduledRun.objects.create(
        tenant_id=tenant_id,
        job=job,
        slot=now,
        not_before=at,
        deadline=at + _jobs[job].retry_for,
        checkpoint=checkpoint,
    )


def note(row: ScheduledRun, **facts: Any) -> None:
    """Keep `facts` (e.g. the id of the run this slot started) in the row's checkpoint."""
    row.checkpoint = {**row.checkpoint, **facts}
    ScheduledRun.objects.filter(pk=row.pk).update(checkpoint=row.checkpoint)


# -- reading it -----------------------------------------------------------------------------


def latest(tenant_id: int | None, job: str) -> tuple[ScheduledRun | None, ScheduledRun | None]:
    """(the last run that started or is due, the next planned one) of a tenant's job."""
    now = clock()
    rows = ScheduledRun.objects.filter(job=job)
    rows = (
        rows.filter(tenant__isnull=True) if tenant_id is None else rows.filter(tenant_id=tenant_id)
    )
    last = rows.filter(slot__lte=now).order_by("-slot").first()
    upcoming = rows.filter(slot__gt=now).order_by("slot").first()
    return last, upcoming
