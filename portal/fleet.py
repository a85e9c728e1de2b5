"""The fleet at a glance, for the vendor's operators: every tenant's jobs on the durable run
ledger (last and next slot, and what is wrong) and every worker process.

One function, `survey`, feeds the admin's fleet page, `manage.py fleet_status` and the
metrics, so the three always agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from portal import ledger
from portal.models import ScheduledRun, Tenant, WorkerHeartbeat
from portal.runs import RunStatus

#: A due slot nobody has taken for this long is "missed" (no worker, or all of them busy).
MISSED_AFTER = timedelta(minutes=10)

OK, RUNNING, DUE, RETRYING, STALE, MISSED, FAILED = (
    "ok",
    "running",
    "due",
    "retrying",
    "stale",
    "missed",
    "failed",
)
#: States that make `fleet_status` exit non-zero.
PROBLEMS = (STALE, MISSED, FAILED)


@dataclass
class JobState:
    tenant_id: int | None
    tenant: str
    job: str
    label: str
    last: ScheduledRun | None
    next: ScheduledRun | None
    state: str
    detail: str = ""

    @property
    def problem(self) -> bool:
        return self.state in PROBLEMS


@dataclass
class Survey:
    now: datetime
    jobs: list[JobState] = field(default_factory=list)
    workers: list[WorkerHeartbeat] = field(default_factory=list)
    silent_workers: list[WorkerHeartbeat] = field(default_factory=list)

    @property
    def problems(self) -> list[JobState]:
        return [job for job in self.jobs if job.problem]

    @property
    def whole(self) -> bool:
        return not self.problems and not self.silent_workers

    def counts(self) -> Counter:
        return Counter(job.state for job in self.jobs)


def state_of(last: ScheduledRun | None, now: datetime) -> tuple[str, str]:
    """What a (tenant, job)'s latest slot says: its state and a sentence."""
    if last is None:
        return OK, "No slot has come due yet."
    stale_limit = now - timedelta(seconds=settings.RUN_STALE_SECONDS)
    if last.status == RunStatus.RUNNING:
        if last.heartbeat and last.heartbeat < stale_limit:
            return STALE, f"Running on {last.worker}, silent since {last.heartbeat:%H:%M:%S} UTC."
        return RUNNING, f"Running on {last.worker} since {last.started:%H:%M:%S} UTC."
    if last.status == RunStatus.QUEUED:
        if last.attempts:
            return RETRYING, last.error or f"Will retry at {last.not_before:%H:%M} UTC."
        if last.checkpoint.get("paused"):
            return RETRYING, last.summary or "Paused for Halo's rate window."
        if last.not_before < now - MISSED_AFTER:
            return MISSED, f"Due since {last.not_before:%Y-%m-%d %H:%M} UTC, not taken."
        return DUE, f"Due since {last.not_before:%H:%M:%S} UTC."
    if last.status in (RunStatus.ERROR, RunStatus.FAILED):
        return FAILED, last.error or last.summary
    return OK, last.summary


def survey(now: datetime | None = None, *, job: str | None = None) -> Survey:
    """Every (tenant, job) pair the ledger knows: its latest due slot and its next one."""
    now = now or timezone.now()
    rows = ScheduledRun.objects.select_related("tenant")
    if job:
        rows = rows.filter(job=job)
    # Each tenant's latest and next slot of each job, probed from the tenants (one index
    # lookup per tenant and job): not one correlated subquery per row kept, which at 2,000
    # tenants and 90 days of hourly slots (5 million rows) took minutes.
    names = [job] if job else list(ledger.jobs())
    last: dict[tuple[int | None, str], ScheduledRun] = {}
    upcoming: dict[tuple[int | None, str], ScheduledRun] = {}
    for name in names:
        of_tenant = ScheduledRun.objects.filter(tenant=OuterRef("pk"), job=name)
        newest = of_tenant.filter(slot__lte=now).order_by("-slot").values("pk")[:1]
        soonest = of_tenant.filter(slot__gt=now, attempts=0).order_by("slot").values("pk")[:1]
        for found, pick in ((last, newest), (upcoming, soonest)):
            picked = Tenant.objects.annotate(pick=Subquery(pick)).values("pick")
            found.update({(r.tenant_id, r.job): r for r in rows.filter(pk__in=picked)})
        # A fleet-wide job's rows have no tenant.
        fleet_rows = rows.filter(tenant__isnull=True, job=name)
        if (latest := fleet_rows.filter(slot__lte=now).order_by("-slot").first()) is not None:
            last[(None, name)] = latest
        if (soon := fleet_rows.filter(slot__gt=now).order_by("slot").first()) is not None:
            upcoming[(None, name)] = soon
    registered = ledger.jobs()
    result = Survey(now=now)
    for key in sorted(set(last) | set(upcoming), key=lambda k: (k[0] is not None, str(k))):
        tenant_id, name = key
        row = last.get(key) or upcoming[key]
        state, detail = state_of(last.get(key), now)
        result.jobs.append(
            JobState(
                tenant_id=tenant_id,
                tenant=row.tenant.slug if row.tenant else "(fleet)",
                job=name,
                label=registered[name].label if name in registered else name,
                last=last.get(key),
                next=upcoming.get(key),
                state=state,
                detail=detail,
            )
        )
    result.workers = list(WorkerHeartbeat.objects.processes().order_by("host", "pid"))
    result.silent_workers = list(WorkerHeartbeat.objects.silent(now))
    return result
